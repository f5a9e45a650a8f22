package hub

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/twin"
)

// module is what the hub keeps of an in-process module across restarts: its
// twin and the buffer of its inputs. The Client of each run comes and goes.
type module struct {
	id    string
	hub   *Hub
	inbox *inbox

	twinMu   sync.Mutex
	tw       *twin.Twin
	deployed map[string]any // the desired properties the last deployment gave
	// cloud is the cloud's desired document as last seen, cloudVersion
	// its $version (see cloud.go).
	cloud        map[string]any
	cloudVersion int64
	// cloudFresh, for a cloud-synced leaf device, is closed by the next
	// twin fetched from the cloud; nil when none is awaited (SyncedTwin).
	cloudFresh chan struct{}

	active atomic.Pointer[Client] // the running client, nil between runs

	// guarded by hub.mu
	spec ModuleSpec
	sup  *supervisor
}

func (md *module) twinSnapshot() twin.Twin {
	md.twinMu.Lock()
	defer md.twinMu.Unlock()
	return md.tw.Clone()
}

func (md *module) patchDesired(patch map[string]any) (int64, error) {
	md.twinMu.Lock()
	v, err := md.tw.Desired.Apply(patch)
	if err == nil {
		md.hub.saveTwin(md)
	}
	md.twinMu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("patch desired properties of %s: %w", md.id, err)
	}
	if c := md.active.Load(); c != nil {
		c.queuePatch()
	}
	md.hub.desiredChanged(md)
	return v, nil
}

// applyDeployment takes the desired properties of a new deployment: what
// changed since the deployment before is applied as a patch, so changes
// made since by patches (from the cloud) stay, and the running module is
// told what changed.
func (md *module) applyDeployment(doc map[string]any) error {
	md.twinMu.Lock()
	patch := twin.Diff(md.deployed, twin.Clone(doc))
	md.deployed = twin.Clone(doc)
	if len(patch) == 0 {
		md.hub.saveTwin(md)
	}
	md.twinMu.Unlock()
	if len(patch) == 0 {
		return nil
	}
	_, err := md.patchDesired(patch)
	return err
}

func (md *module) patchReported(patch map[string]any) (int64, error) {
	md.twinMu.Lock()
	defer md.twinMu.Unlock()
	v, err := md.tw.Reported.Apply(patch)
	if err != nil {
		return 0, fmt.Errorf("patch reported properties of %s: %w", md.id, err)
	}
	md.hub.saveTwin(md)
	if err := md.queueReported(patch); err != nil {
		return v, fmt.Errorf("reported properties of %s applied here but not queued for the cloud: %w", md.id, err)
	}
	return v, nil
}

// inbox is the in-process input endpoint of one module: a bounded FIFO
// shared by all its inputs. A full inbox blocks the sender
// (backpressure); nothing is dropped.
//
// It is a mutex-guarded slice rather than a channel so the module's
// dispatcher takes everything waiting in one step (take) and hands it to
// the handlers without touching the lock again: under load, sender and
// receiver meet once per batch instead of once per message. So a module
// holds at most twice the capacity in memory: one batch being handled and
// a full inbox behind it.
type inbox struct {
	name     string
	capacity int
	done     chan struct{} // closed when the module leaves the deployment

	mu      sync.Mutex
	q       []*message.Message
	waiting bool          // the dispatcher is parked on ready
	ready   chan struct{} // wakes the dispatcher; capacity 1
	nfull   int           // senders parked on space
	space   chan struct{} // closed (and replaced) when a take makes room

	// pending are messages the dispatcher took but did not hand to a
	// handler before its run ended; the next run gets them first. Only the
	// dispatcher of the current run touches it.
	pending []*message.Message
}

var _ Endpoint = (*inbox)(nil)

func newInbox(moduleID string, capacity int) *inbox {
	return &inbox{
		name:     "module/" + moduleID,
		capacity: capacity,
		done:     make(chan struct{}),
		q:        make([]*message.Message, 0, capacity),
		ready:    make(chan struct{}, 1),
		space:    make(chan struct{}),
	}
}

func (b *inbox) Name() string { return b.name }

func (b *inbox) Deliver(ctx context.Context, m *message.Message, _ Delivery) error {
	for {
		b.mu.Lock()
		if len(b.q) < b.capacity {
			b.q = append(b.q, m)
			wake := b.waiting
			b.waiting = false
			b.mu.Unlock()
			if wake {
				select {
				case b.ready <- struct{}{}:
				default:
				}
			}
			return nil
		}
		space := b.space
		b.nfull++
		b.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return fmt.Errorf("%s is full: %w", b.name, ctx.Err())
		case <-b.done:
			return fmt.Errorf("%s: %w", b.name, ErrModuleNotActive)
		}
	}
}

// take swaps the queue for spare (emptied) and returns what was queued,
// in order. When the queue is empty it marks the dispatcher as waiting,
// so the next Deliver signals ready.
func (b *inbox) take(spare []*message.Message) []*message.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.q) == 0 {
		b.waiting = true
		return spare[:0]
	}
	out := b.q
	b.q = spare[:0]
	if b.nfull > 0 {
		close(b.space)
		b.space = make(chan struct{})
		b.nfull = 0
	}
	return out
}
