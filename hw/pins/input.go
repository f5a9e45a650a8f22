package pins

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"periph.io/x/conn/v3/gpio"
)

// DefaultDebounce is how long a level must hold before an Input reports
// it, when InputOpts.Debounce is zero. It is long enough for the bounce of
// common push buttons and reed contacts and short enough that a person
// does not notice the delay.
const DefaultDebounce = 20 * time.Millisecond

// EventBuffer is the capacity of an Input's event channel.
const EventBuffer = 16

// haltPoll bounds how long the watcher waits for an edge before it looks
// at its stop channel again, so it bounds how long Halt takes.
const haltPoll = 100 * time.Millisecond

// ErrNilPin is returned when NewInput or NewOutput is given no pin.
var ErrNilPin = errors.New("pins: nil pin")

// Event is one debounced change of an input's level.
type Event struct {
	// Pin is the pin's name, as gpio.PinIO.Name reports it.
	Pin string
	// Level is the level the pin settled at.
	Level gpio.Level
	// Time is when the pin's last edge before it settled happened, read
	// from InputOpts.Now.
	Time time.Time
}

// InputOpts configures an Input. A nil *InputOpts means defaults.
type InputOpts struct {
	// Pull is the internal resistor to apply; the zero value,
	// gpio.PullNoChange, keeps what the board or device tree set up.
	Pull gpio.Pull
	// Debounce is how long a level must hold before it is reported; zero
	// means DefaultDebounce.
	Debounce time.Duration
	// Now stamps events; nil means time.Now. Tests set it to get
	// predictable Event.Time values.
	Now func() time.Time
}

// Input is a GPIO input that reports debounced edges on a channel. Its
// methods are safe for concurrent use.
type Input struct {
	p        gpio.PinIO
	debounce time.Duration
	now      func() time.Time

	events  chan Event
	stop    chan struct{}
	done    sync.WaitGroup
	level   atomic.Bool
	dropped atomic.Uint64

	halt    sync.Once
	haltErr error
}

// NewInput sets p up as an input with the pull resistor opts.Pull and
// edge detection on both edges, reads its level as the initial debounced
// level (which is not reported as an event), and starts a goroutine that
// watches it until Halt.
func NewInput(p gpio.PinIO, opts *InputOpts) (*Input, error) {
	if p == nil {
		return nil, ErrNilPin
	}
	var o InputOpts
	if opts != nil {
		o = *opts
	}
	if o.Debounce < 0 {
		return nil, fmt.Errorf("pins: input %s: debounce %s is negative", p.Name(), o.Debounce)
	}
	if o.Debounce == 0 {
		o.Debounce = DefaultDebounce
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if err := p.In(o.Pull, gpio.BothEdges); err != nil {
		return nil, fmt.Errorf("pins: set up %s as input (%s, both edges): %w", p.Name(), o.Pull, err)
	}
	in := &Input{
		p:        p,
		debounce: o.Debounce,
		now:      o.Now,
		events:   make(chan Event, EventBuffer),
		stop:     make(chan struct{}),
	}
	in.level.Store(bool(p.Read()))
	in.done.Add(1)
	go in.watch()
	return in, nil
}

// Events returns the channel debounced edges arrive on. It is closed by
// Halt. When the reader is slow and the channel is full, the oldest event
// is dropped to make room, so the newest level is never lost.
func (in *Input) Events() <-chan Event { return in.events }

// Level returns the debounced level: the last level reported, or the
// initial level if none was.
func (in *Input) Level() gpio.Level { return gpio.Level(in.level.Load()) }

// Dropped returns how many events were dropped because the reader of
// Events fell behind.
func (in *Input) Dropped() uint64 { return in.dropped.Load() }

// Name returns the pin's name.
func (in *Input) Name() string { return in.p.Name() }

// Halt stops the watcher, waits for it to end, closes the Events channel
// and turns edge detection off on the pin (which stays an input). Calling
// it again returns the first call's result.
func (in *Input) Halt() error {
	in.halt.Do(func() {
		close(in.stop)
		in.done.Wait()
		if err := in.p.In(gpio.PullNoChange, gpio.NoEdge); err != nil {
			in.haltErr = fmt.Errorf("pins: turn edge detection off on %s: %w", in.p.Name(), err)
		}
	})
	return in.haltErr
}

// watch is the goroutine NewInput starts and Halt stops. After an edge it
// waits until no further edge came for the debounce time, then reads the
// level and reports it if it differs from the last one reported.
func (in *Input) watch() {
	defer in.done.Done()
	defer close(in.events)
	var (
		pending  bool      // an edge came and the level has not settled yet
		lastEdge time.Time // monotonic, for the debounce interval
		stamp    time.Time // from in.now, for the event
	)
	for {
		select {
		case <-in.stop:
			return
		default:
		}
		wait := haltPoll
		if pending {
			left := in.debounce - time.Since(lastEdge)
			if left <= 0 {
				pending = false
				in.settle(stamp)
				continue
			}
			wait = min(left, haltPoll)
		}
		start := time.Now()
		if in.p.WaitForEdge(wait) {
			pending = true
			lastEdge = time.Now()
			stamp = in.now()
			continue
		}
		// A driver that cannot wait (edge detection lost, pin taken by
		// another process) returns false at once; sleep the rest of the
		// wait so the watcher does not spin.
		if rest := wait - time.Since(start); rest > wait/2 {
			t := time.NewTimer(rest)
			select {
			case <-in.stop:
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// settle reads the pin once it has been quiet for the debounce time and
// reports the level if it changed.
func (in *Input) settle(stamp time.Time) {
	l := in.p.Read()
	if bool(l) == in.level.Load() {
		return
	}
	in.level.Store(bool(l))
	in.send(Event{Pin: in.p.Name(), Level: l, Time: stamp})
}

// send queues ev without blocking, dropping the oldest queued event when
// the channel is full. Only the watcher sends, so after one event is
// taken out there is room.
func (in *Input) send(ev Event) {
	for {
		select {
		case in.events <- ev:
			return
		default:
		}
		select {
		case <-in.events:
			in.dropped.Add(1)
		default:
		}
	}
}
