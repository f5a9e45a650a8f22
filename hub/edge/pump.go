package edge

import (
	"bytes"
	"context"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/iothub"
)

// reader is the one user of an external module's input queues: read
// positions are shared, so two sessions of one module (a takeover) must
// not read at once. The session that subscribes last owns it.
type reader struct {
	mu    sync.Mutex // serializes changes of owner
	in    *hub.Inputs
	owner *pump
}

// startPump makes s the reader of its module's inputs, stopping the
// pump of an earlier session of the same module first.
func (e *Endpoint) startPump(s *session, sub subs) (*pump, error) {
	e.mu.Lock()
	r := e.readers[s.id.ModuleID]
	if r == nil {
		r = &reader{}
		e.readers[s.id.ModuleID] = r
	}
	e.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.owner != nil {
		r.owner.stopLocked()
	}
	if r.in == nil {
		in, err := e.opts.Hub.ExternalInputs(s.id.ModuleID)
		if err != nil {
			return nil, err
		}
		r.in = in
	}
	p := newPump(s, r, sub)
	r.owner = p
	return p, nil
}

// deliverRead is the most messages read from the queues at a time, and
// deliverBudget the bytes of bodies a pump keeps unacknowledged: it reads
// no more once that much is in flight (one read may overshoot it). A
// module that is slow to acknowledge then holds a megabyte of the
// gateway's memory, not Window packets of 256 KiB.
const (
	deliverRead   = 32
	deliverBudget = 1 << 20
)

// pump delivers a module's inputs to one session, at most Window
// messages and about deliverBudget bytes unacknowledged at a time; each
// PUBACK acknowledges its message in the queue. When it stops, what was
// acknowledged is committed and the rest rewound for the next session.
type pump struct {
	s *session
	r *reader

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	window chan struct{} // one token per message that may be in flight
	bytes  budget        // bodies in flight

	mu       sync.Mutex
	subs     subs
	inflight map[uint16]hub.Input
	nextID   uint16
	acked    []hub.Input
	stopped  bool

	ackWake chan struct{} // capacity 1
	subWake chan struct{} // capacity 1: the subscriptions changed
}

func newPump(s *session, r *reader, sub subs) *pump {
	ctx, cancel := context.WithCancel(s.ctx)
	p := &pump{
		s: s, r: r, ctx: ctx, cancel: cancel, subs: sub,
		window:   make(chan struct{}, s.e.opts.Window),
		bytes:    budget{limit: deliverBudget, room: make(chan struct{}, 1)},
		inflight: map[uint16]hub.Input{},
		ackWake:  make(chan struct{}, 1),
		subWake:  make(chan struct{}, 1),
	}
	for range s.e.opts.Window {
		p.window <- struct{}{}
	}
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		p.run()
	}()
	go func() {
		defer p.wg.Done()
		p.acker()
	}()
	return p
}

func (p *pump) setSubs(s subs) {
	p.mu.Lock()
	p.subs = s
	p.mu.Unlock()
	wake(p.subWake)
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// stop ends the pump and rewinds the queues.
func (p *pump) stop() {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	p.stopLocked()
}

// stopLocked is stop with p.r.mu held.
func (p *pump) stopLocked() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	if p.r.owner == p {
		p.r.owner = nil
	}
	// What the module acknowledged is committed (the acker's last
	// round); what it did not is delivered again, in order, next time.
	if err := p.r.in.Rewind(); err != nil {
		p.s.log.Error("rewind inputs; they will be delivered after a restart", "err", err)
	}
}

func (p *pump) want(input string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.subs.allInputs || p.subs.inputs[input]
}

func (p *pump) run() {
	s, in := p.s, p.r.in
	dev, mod := s.id.DeviceID, s.id.ModuleID
	var (
		pks   []packets.Packet
		buf   bytes.Buffer
		topic []byte
	)
	for {
		// Wait for room in the window, then take all there is.
		select {
		case <-p.window:
		case <-p.ctx.Done():
			return
		}
		n, batch := 1, max(1, min(deliverRead, cap(p.window)/4))
		for n < min(cap(p.window), deliverRead) {
			select {
			case <-p.window:
				n++
				continue
			default:
			}
			// While the module has a batch or more still to acknowledge,
			// wait for a batch's worth of room: a busy module then gets
			// its inputs a batch per read and write, not one per PUBACK.
			if n < batch && cap(p.window)-n >= batch {
				select {
				case <-p.window:
					n++
					continue
				case <-p.ctx.Done():
					return
				}
			}
			break
		}
		items, err := in.Read(n, p.want)
		if err != nil {
			s.log.Error("read inputs", "err", err)
		}
		for range n - len(items) {
			p.window <- struct{}{}
		}
		if len(items) == 0 {
			select {
			case <-in.Ready():
			case <-p.subWake:
			case <-p.ctx.Done():
				return
			}
			continue
		}
		size := 0
		for _, it := range items {
			size += len(it.Message.Body)
		}
		if !p.bytes.take(p.ctx, size) {
			return
		}
		p.mu.Lock()
		qos := p.subs.inputQoS
		pks = pks[:0]
		for _, it := range items {
			m := it.Message
			topic = iothub.AppendInputTopic(topic[:0], dev, mod, m.System.InputName)
			topic = iothub.AppendBag(topic, m, iothub.BagOptions{Identity: true})
			pk := packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
				TopicName:   string(topic),
				Payload:     m.Body,
			}
			if qos > 0 {
				pk.PacketID = p.allocID()
				p.inflight[pk.PacketID] = it
			}
			pks = append(pks, pk)
		}
		p.mu.Unlock()
		if err := s.writeAll(&buf, pks); err != nil {
			return // the connection is going; stop rewinds
		}
		if qos == 0 {
			// At most once, as the module asked: done when written.
			p.mu.Lock()
			p.acked = append(p.acked, items...)
			p.mu.Unlock()
			wake(p.ackWake)
			p.bytes.give(size)
			for range items {
				p.window <- struct{}{}
			}
		}
	}
}

// allocID returns a packet id not in flight. p.mu is held; the window
// (far below 65535) guarantees one is free.
func (p *pump) allocID() uint16 {
	for {
		p.nextID++
		if p.nextID == 0 {
			p.nextID = 1
		}
		if _, used := p.inflight[p.nextID]; !used {
			return p.nextID
		}
	}
}

func (p *pump) puback(id uint16) {
	p.mu.Lock()
	it, ok := p.inflight[id]
	if ok {
		delete(p.inflight, id)
		p.acked = append(p.acked, it)
	}
	p.mu.Unlock()
	if !ok {
		return
	}
	wake(p.ackWake)
	p.bytes.give(len(it.Message.Body))
	p.window <- struct{}{}
}

// ackDelay is how long the acker collects PUBACKs before committing
// them. An acknowledgement is not urgent — losing it in a crash means a
// duplicate, not a loss — and every commit is an fsync that the
// senders' appends wait behind: under load, acks then cost a few
// commits per second instead of one per window.
const ackDelay = 5 * time.Millisecond

// acker acknowledges in the queues what the module acknowledged, as
// many at a time as came in during ackDelay.
func (p *pump) acker() {
	t := time.NewTimer(0)
	<-t.C
	for {
		var done bool
		select {
		case <-p.ackWake:
			t.Reset(ackDelay)
			select {
			case <-t.C:
			case <-p.ctx.Done():
				t.Stop()
				done = true
			}
		case <-p.ctx.Done():
			done = true
		}
		p.mu.Lock()
		batch := p.acked
		p.acked = nil
		p.mu.Unlock()
		if len(batch) > 0 {
			if err := p.r.in.Ack(batch...); err != nil {
				p.s.log.Error("acknowledge delivered inputs; they will be delivered again", "err", err)
			}
		}
		if done {
			return
		}
	}
}
