package pins

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// deadline bounds every wait in these tests; it is generous so they pass
// on a loaded CI box and under qemu-user.
const deadline = 5 * time.Second

// countingPin is a gpiotest.Pin that counts Reads, so a test can tell
// when the watcher has settled a burst without sleeping.
type countingPin struct {
	*gpiotest.Pin
	reads atomic.Int64
}

func (p *countingPin) Read() gpio.Level {
	p.reads.Add(1)
	return p.Pin.Read()
}

func newPin() *countingPin {
	// Unbuffered: each injected edge is taken by the watcher before the
	// next one is sent, as a real edge would be seen in order.
	return &countingPin{Pin: &gpiotest.Pin{N: "GPIO17", Num: 17, EdgesChan: make(chan gpio.Level)}}
}

// edges drives the pin through levels, each change with its edge.
func edges(t *testing.T, p *countingPin, levels ...gpio.Level) {
	t.Helper()
	for _, l := range levels {
		select {
		case p.EdgesChan <- l:
		case <-time.After(deadline):
			t.Fatalf("the watcher did not take edge %s within %s", l, deadline)
		}
	}
}

func nextEvent(t *testing.T, in *Input) Event {
	t.Helper()
	select {
	case ev, ok := <-in.Events():
		if !ok {
			t.Fatal("Events closed before an event came")
		}
		return ev
	case <-time.After(deadline):
		t.Fatalf("no event within %s", deadline)
	}
	panic("unreachable")
}

// haltAndDrain halts in and returns the events still queued; after Halt
// no more can come, so a test can check there were no extra ones.
func haltAndDrain(t *testing.T, in *Input) []Event {
	t.Helper()
	if err := in.Halt(); err != nil {
		t.Fatalf("Halt: %v", err)
	}
	var rest []Event
	for ev := range in.Events() {
		rest = append(rest, ev)
	}
	return rest
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %s", what, deadline)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestBounceBurstGivesOneEvent(t *testing.T) {
	p := newPin()
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	// A long debounce so a slow scheduler cannot split the burst.
	in, err := NewInput(p, &InputOpts{Pull: gpio.PullDown, Debounce: 100 * time.Millisecond, Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	if got := in.Level(); got != gpio.Low {
		t.Fatalf("initial Level() = %s, want Low (pull-down)", got)
	}
	edges(t, p, gpio.High, gpio.Low, gpio.High, gpio.Low, gpio.High)
	ev := nextEvent(t, in)
	want := Event{Pin: "GPIO17", Level: gpio.High, Time: t0}
	if ev != want {
		t.Fatalf("event after press burst = %+v, want %+v", ev, want)
	}
	if got := in.Level(); got != gpio.High {
		t.Errorf("Level() after press = %s, want High", got)
	}
	edges(t, p, gpio.Low, gpio.High, gpio.Low)
	if ev := nextEvent(t, in); ev.Level != gpio.Low {
		t.Fatalf("event after release burst = %s, want Low", ev.Level)
	}
	if rest := haltAndDrain(t, in); len(rest) != 0 {
		t.Errorf("extra events after the two bursts: %+v; want one event per burst", rest)
	}
}

func TestSeparatedChangesGiveOneEventEach(t *testing.T) {
	p := newPin()
	in, err := NewInput(p, &InputOpts{Pull: gpio.PullDown, Debounce: 30 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var got []gpio.Level
	for range 2 {
		edges(t, p, gpio.High, gpio.Low, gpio.High) // press, bouncing
		got = append(got, nextEvent(t, in).Level)
		edges(t, p, gpio.Low, gpio.High, gpio.Low) // release, bouncing
		got = append(got, nextEvent(t, in).Level)
	}
	for _, ev := range haltAndDrain(t, in) {
		got = append(got, ev.Level)
	}
	want := []gpio.Level{gpio.High, gpio.Low, gpio.High, gpio.Low}
	if !equal(got, want) {
		t.Errorf("two presses gave events %v, want %v", got, want)
	}
}

func TestShortGlitchIsIgnored(t *testing.T) {
	p := newPin()
	in, err := NewInput(p, &InputOpts{Pull: gpio.PullDown, Debounce: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	before := p.reads.Load()
	edges(t, p, gpio.High, gpio.Low) // a spike that ends where it started
	waitFor(t, "watcher settles after the spike", func() bool { return p.reads.Load() > before })
	select {
	case ev := <-in.Events():
		t.Fatalf("a spike shorter than the debounce time gave event %+v", ev)
	default:
	}
	if got := in.Level(); got != gpio.Low {
		t.Errorf("Level() after spike = %s, want Low", got)
	}
	edges(t, p, gpio.High)
	if ev := nextEvent(t, in); ev.Level != gpio.High {
		t.Fatalf("event after a real press = %s, want High", ev.Level)
	}
	if rest := haltAndDrain(t, in); len(rest) != 0 {
		t.Errorf("extra events: %+v", rest)
	}
}

func TestSlowReaderKeepsLatestLevel(t *testing.T) {
	p := newPin()
	in, err := NewInput(p, &InputOpts{Pull: gpio.PullDown, Debounce: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const changes = EventBuffer + 5
	level := gpio.Low
	for range changes {
		level = !level
		edges(t, p, level)
		waitFor(t, "debounced level "+level.String(), func() bool { return in.Level() == level })
	}
	// Nobody read Events: the watcher must have kept going (it did, the
	// levels above were all reported) and kept the newest events.
	if got, want := in.Dropped(), uint64(changes-EventBuffer); got != want {
		t.Errorf("Dropped() = %d, want %d", got, want)
	}
	queued := haltAndDrain(t, in)
	if len(queued) != EventBuffer {
		t.Fatalf("%d events queued, want %d (the channel's capacity)", len(queued), EventBuffer)
	}
	if last := queued[len(queued)-1].Level; last != level {
		t.Errorf("last queued event = %s, want the current level %s", last, level)
	}
	for i := 1; i < len(queued); i++ {
		if queued[i].Level == queued[i-1].Level {
			t.Fatalf("queued events %d and %d are both %s: events were lost from the middle, not the oldest end", i-1, i, queued[i].Level)
		}
	}
}

func TestHaltStopsWatcherAndClosesEvents(t *testing.T) {
	p := newPin()
	in, err := NewInput(p, &InputOpts{Debounce: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	edges(t, p, gpio.High) // leave a debounce pending
	start := time.Now()
	if err := in.Halt(); err != nil {
		t.Fatalf("Halt: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Halt took %s; it should take about %s at most", took, haltPoll)
	}
	for range in.Events() {
		// A pending edge may or may not have settled before Halt.
	}
	if err := in.Halt(); err != nil {
		t.Errorf("second Halt: %v", err)
	}
	goleak.VerifyNone(t)
}

func TestInputPullAndInitialLevel(t *testing.T) {
	p := newPin()
	in, err := NewInput(p, &InputOpts{Pull: gpio.PullUp})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Pull(); got != gpio.PullUp {
		t.Errorf("pin pull = %s, want PullUp", got)
	}
	if got := in.Level(); got != gpio.High {
		t.Errorf("Level() with pull-up = %s, want High", got)
	}
	if rest := haltAndDrain(t, in); len(rest) != 0 {
		t.Errorf("the initial level was reported as events %+v; want none", rest)
	}
}

func TestNewInputRefusals(t *testing.T) {
	if _, err := NewInput(nil, nil); !errors.Is(err, ErrNilPin) {
		t.Errorf("NewInput(nil) error = %v, want ErrNilPin", err)
	}
	noEdges := &gpiotest.Pin{N: "GPIO4", Num: 4} // gpiotest refuses edges without EdgesChan
	_, err := NewInput(noEdges, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "pins: ") || !strings.Contains(err.Error(), "GPIO4") {
		t.Errorf("NewInput on a pin without edge detection: error = %v, want one starting with pins: and naming GPIO4", err)
	}
	_, err = NewInput(newPin(), &InputOpts{Debounce: -time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "negative") {
		t.Errorf("negative debounce: error = %v, want one saying it is negative", err)
	}
}

// deafPin is a pin whose WaitForEdge fails at once, as a driver does when
// edge detection was lost.
type deafPin struct {
	*gpiotest.Pin
	waits atomic.Int64
}

func (p *deafPin) WaitForEdge(time.Duration) bool {
	p.waits.Add(1)
	return false
}

func TestWatcherDoesNotSpinWhenWaitFails(t *testing.T) {
	p := &deafPin{Pin: &gpiotest.Pin{N: "GPIO5", EdgesChan: make(chan gpio.Level)}}
	start := time.Now()
	in, err := NewInput(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two waits", func() bool { return p.waits.Load() >= 2 })
	if err := in.Halt(); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if got, max := p.waits.Load(), int64(elapsed/haltPoll)+2; got > max {
		t.Errorf("watcher called WaitForEdge %d times in %s; want at most %d: it spins", got, elapsed, max)
	}
}

// recordingPin logs the calls made on it, to check their order.
type recordingPin struct {
	*gpiotest.Pin
	mu     sync.Mutex
	calls  []string
	outErr error
}

func (p *recordingPin) log(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, s)
}

func (p *recordingPin) Out(l gpio.Level) error {
	p.log("Out(" + l.String() + ")")
	if p.outErr != nil {
		return p.outErr
	}
	return p.Pin.Out(l)
}

func (p *recordingPin) In(pull gpio.Pull, e gpio.Edge) error {
	p.log("In")
	return p.Pin.In(pull, e)
}

func (p *recordingPin) Read() gpio.Level {
	p.log("Read")
	return p.Pin.Read()
}

func TestOutputSafeLevel(t *testing.T) {
	p := &recordingPin{Pin: &gpiotest.Pin{N: "GPIO27", Num: 27}}
	o, err := NewOutput(p, gpio.High)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.calls) != 1 || p.calls[0] != "Out(High)" {
		t.Errorf("calls on the pin by NewOutput = %v, want just [Out(High)] (the safe level first)", p.calls)
	}
	if got := p.Read(); got != gpio.High {
		t.Errorf("pin after NewOutput = %s, want the safe level High", got)
	}
	if got := o.Level(); got != gpio.High {
		t.Errorf("Level() after NewOutput = %s, want High", got)
	}
	if err := o.Set(gpio.Low); err != nil {
		t.Fatal(err)
	}
	if got := p.Pin.Read(); got != gpio.Low {
		t.Errorf("pin after Set(Low) = %s, want Low", got)
	}
	if got := o.Level(); got != gpio.Low {
		t.Errorf("Level() after Set(Low) = %s, want Low", got)
	}
	if err := o.Halt(); err != nil {
		t.Fatal(err)
	}
	if got := p.Pin.Read(); got != gpio.High {
		t.Errorf("pin after Halt = %s, want the safe level High", got)
	}
	if got := o.Level(); got != gpio.High {
		t.Errorf("Level() after Halt = %s, want High", got)
	}
	if o.Safe() != gpio.High || o.Name() != "GPIO27" {
		t.Errorf("Safe(), Name() = %s, %s; want High, GPIO27", o.Safe(), o.Name())
	}
}

func TestOutputRefusals(t *testing.T) {
	if _, err := NewOutput(nil, gpio.Low); !errors.Is(err, ErrNilPin) {
		t.Errorf("NewOutput(nil) error = %v, want ErrNilPin", err)
	}
	broken := errors.New("line busy")
	p := &recordingPin{Pin: &gpiotest.Pin{N: "GPIO22"}, outErr: broken}
	_, err := NewOutput(p, gpio.Low)
	if !errors.Is(err, broken) || !strings.HasPrefix(err.Error(), "pins: ") || !strings.Contains(err.Error(), "GPIO22") {
		t.Errorf("NewOutput on a refusing pin: error = %v, want a pins: error naming GPIO22 and wrapping %v", err, broken)
	}

	p.outErr = nil
	o, err := NewOutput(p, gpio.Low)
	if err != nil {
		t.Fatal(err)
	}
	p.outErr = broken
	if err := o.Set(gpio.High); !errors.Is(err, broken) {
		t.Errorf("Set on a refusing pin: error = %v, want it to wrap %v", err, broken)
	}
	if got := o.Level(); got != gpio.Low {
		t.Errorf("Level() after a failed Set = %s, want the last level set, Low", got)
	}
}

func equal(a, b []gpio.Level) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
