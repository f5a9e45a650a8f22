package hub

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/twin"
	"github.com/tinyedge/tinyedge/store"
)

// UpstreamQueue is the store queue that holds what routes send to
// $upstream while it waits for the upstream endpoint.
const UpstreamQueue = "$upstream"

// Durable delivery. With Options.Store set, a message routed to $upstream
// is appended to the store (once, however many durable sinks it has)
// before Send returns, so a send's success means "on disk". A pump owned
// by the hub reads the queue in priority order, hands each message to
// Options.Upstream and acknowledges it in the store only after that
// endpoint took it (for an Uplink: after its ack, see uplink.go); what was
// not acknowledged when the process died is delivered again after a
// restart.

// durable reports whether $upstream goes through the store.
func (h *Hub) durable() bool { return h.opts.Store != nil }

// appendDurable commits m for the durable targets.
func (h *Hub) appendDurable(ctx context.Context, m *message.Message, targets []store.Target) error {
	if _, err := h.opts.Store.Append(ctx, targets, message.Marshal(m), store.Meta{Enqueued: m.System.EnqueuedTime}); err != nil {
		if errors.Is(err, store.ErrFull) {
			h.drop("store_full")
		}
		return err
	}
	select {
	case h.pumpWake <- struct{}{}:
	default:
	}
	return nil
}

// ttlFor is the time to live a route gives the store: the route's own,
// else the deployment's storeAndForwardConfiguration (0 leaves it to the
// store's default).
func (h *Hub) ttlFor(route time.Duration) time.Duration {
	if route != 0 {
		return route
	}
	return time.Duration(h.defaultTTL.Load())
}

// pumpBatch is how many messages the pump reads from the store at a time.
const pumpBatch = 64

// pump delivers the $upstream queue to Options.Upstream until ctx ends:
// with a window of messages in flight when it is an Uplink, else one
// message at a time.
func (h *Hub) pump(ctx context.Context) {
	if up, ok := h.opts.Upstream.(Uplink); ok {
		h.pumpUplink(ctx, up)
		return
	}
	st, sink := h.opts.Store, h.opts.Upstream
	log := h.log.With("queue", UpstreamQueue, "endpoint", sink.Name())
	backoff := time.Duration(0)
	poll := time.NewTimer(time.Second)
	defer poll.Stop()
	for ctx.Err() == nil {
		if backoff > 0 {
			if !sleepCtx(ctx, backoff) {
				return
			}
		}
		items, err := st.Read(UpstreamQueue, pumpBatch)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("read the store", "err", err)
			}
			backoff = nextBackoff(backoff)
			continue
		}
		if len(items) == 0 {
			if !h.waitAppend(ctx, poll) {
				return
			}
			continue
		}
		acked := make([]uint64, 0, len(items))
		failed := false
		for _, it := range items {
			m, err := message.Unmarshal(it.Payload)
			if err != nil {
				// A record this binary cannot read is not retried forever.
				log.Error("dropping a stored message that cannot be decoded", "seq", it.Seq, "err", err)
				h.drop("undecodable")
				acked = append(acked, it.Seq)
				continue
			}
			if err := sink.Deliver(ctx, m, Delivery{Priority: it.Priority, TimeToLive: it.Meta.TTL}); err != nil {
				if ctx.Err() == nil {
					log.Warn("upstream did not take a message; will retry", "messageId", m.System.MessageID, "err", err)
				}
				failed = true
				break
			}
			acked = append(acked, it.Seq)
		}
		if err := st.Ack(UpstreamQueue, acked...); err != nil && ctx.Err() == nil {
			log.Error("acknowledge delivered messages", "err", err)
		}
		if failed {
			// Whatever was read after the failure goes back in line.
			if err := st.Rewind(UpstreamQueue); err != nil && ctx.Err() == nil {
				log.Error("rewind", "err", err)
			}
			backoff = nextBackoff(backoff)
			continue
		}
		backoff = 0
	}
}

func nextBackoff(d time.Duration) time.Duration {
	if d == 0 {
		return 100 * time.Millisecond
	}
	return min(2*d, 30*time.Second)
}

// waitAppend waits while the $upstream queue is empty: until an append
// wakes the pump, or a second has passed, so that messages that wait on
// a clock to become trusted, or on a sweep, are seen. It reports false
// when ctx ended.
func (h *Hub) waitAppend(ctx context.Context, poll *time.Timer) bool {
	poll.Reset(time.Second)
	select {
	case <-h.pumpWake:
		return true
	case <-poll.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// twinBlob is how a module twin's desired properties are kept in the
// store: the document, and the desired properties of the deployment that
// last set it, so a restart keeps changes made since (by patches) and
// applies only what the manifest changed.
type twinBlob struct {
	Doc      map[string]any `json:"doc"`
	Deployed map[string]any `json:"deployed"`
	// Cloud is the cloud's desired document as last fetched or patched,
	// and CloudVersion its $version (see cloud.go).
	Cloud        map[string]any `json:"cloud,omitempty"`
	CloudVersion int64          `json:"cloudVersion,omitempty"`
}

// loadTwin returns the module's cached twin and the desired properties of
// the deployment that last set it; ok is false when the store has none.
func (h *Hub) loadTwin(module string) (tw *twin.Twin, deployed map[string]any, ok bool) {
	if !h.durable() {
		return nil, nil, false
	}
	rec, found, err := h.opts.Store.Twin(module)
	if err != nil {
		h.log.Error("read cached twin; starting from the manifest", "module", module, "err", err)
		return nil, nil, false
	}
	if !found {
		return nil, nil, false
	}
	var d twinBlob
	var rep map[string]any
	if err := json.Unmarshal(rec.Desired, &d); err != nil {
		h.log.Error("cached twin unreadable; starting from the manifest", "module", module, "err", err)
		return nil, nil, false
	}
	if len(rec.Reported) > 0 {
		if err := json.Unmarshal(rec.Reported, &rep); err != nil {
			h.log.Error("cached reported properties unreadable; starting empty", "module", module, "err", err)
			rep = nil
		}
	}
	tw = &twin.Twin{
		Desired:  twin.Properties{Version: rec.DesiredVersion, Doc: twin.Clone(d.Doc)},
		Reported: twin.Properties{Version: rec.ReportedVersion, Doc: twin.Clone(rep)},
	}
	if tw.Desired.Doc == nil {
		tw.Desired.Doc = map[string]any{}
	}
	if tw.Reported.Doc == nil {
		tw.Reported.Doc = map[string]any{}
	}
	return tw, twin.Clone(d.Deployed), true
}

// saveTwin writes the module's twin to the store; md.twinMu must be held.
func (h *Hub) saveTwin(md *module) {
	if !h.durable() {
		return
	}
	d, err := json.Marshal(twinBlob{Doc: md.tw.Desired.Doc, Deployed: md.deployed, Cloud: md.cloud, CloudVersion: md.cloudVersion})
	if err == nil {
		var r []byte
		r, err = json.Marshal(md.tw.Reported.Doc)
		if err == nil {
			err = h.opts.Store.PutTwin(md.id, d, r, md.tw.Desired.Version, md.tw.Reported.Version)
		}
	}
	if err != nil {
		h.log.Error("cache twin; it will start from the manifest after a restart", "module", md.id, "err", err)
	}
}
