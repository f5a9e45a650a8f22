package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/iothub"
)

// twinAnswer is IoT Hub's answer to a twin request.
type twinAnswer struct {
	status  int
	version int64
	body    []byte
}

// twinSync is the twin and method traffic of one module or leaf device
// identity's connection: requests by $rid, desired notifications in
// order, method calls handed to the hub.
type twinSync struct {
	l     *Link
	id    *identity
	s     *session
	who   hub.Identity // whose twin and methods, in the hub
	cloud Cloud

	mu      sync.Mutex
	rid     uint64
	waiting map[string]chan twinAnswer
	desired [][]byte      // notifications not yet applied, in order
	poke    chan struct{} // a notification arrived; capacity 1
	refetch chan struct{} // the twin is to be fetched again; capacity 1
}

// twinReady is the ready hook of a module or leaf device identity (who):
// subscribe to twin answers, desired notifications and methods, then sync
// the twin in a goroutine the session owns.
func (l *Link) twinReady(who hub.Identity, id *identity) func(ctx context.Context, s *session) error {
	return func(ctx context.Context, s *session) error {
		cloud := l.cloud
		if cloud == nil {
			return nil
		}
		t := &twinSync{l: l, id: id, s: s, who: who, cloud: cloud,
			waiting: map[string]chan twinAnswer{}, poke: make(chan struct{}, 1), refetch: make(chan struct{}, 1)}
		subs := map[string]paho.MessageHandler{
			iothub.FilterTwinResponses: t.onResponse,
			iothub.FilterTwinDesired:   t.onDesired,
			iothub.FilterMethods:       t.onMethod,
		}
		for f, h := range subs {
			tok := s.cli.Subscribe(f, 0, h)
			if !tok.WaitTimeout(l.opts.ConnectTimeout) {
				return fmt.Errorf("subscribe %s: no SUBACK within %s", f, l.opts.ConnectTimeout)
			}
			if err := tok.Error(); err != nil {
				return fmt.Errorf("subscribe %s: %w", f, err)
			}
		}
		id.mu.Lock()
		id.twin = t
		id.mu.Unlock()
		s.goTask(t.run)
		return nil
	}
}

// fetchTwin has the identity's twin sync, if it has one running, fetch
// the twin again: a leaf device opened a new session locally.
func (id *identity) fetchTwin() {
	id.mu.Lock()
	t := id.twin
	id.mu.Unlock()
	if t != nil {
		select {
		case t.refetch <- struct{}{}:
		default:
		}
	}
}

// onResponse hands a twin answer to the request waiting for its $rid.
// paho calls the handlers in order on one goroutine: they must not block.
func (t *twinSync) onResponse(_ paho.Client, m paho.Message) {
	tp, err := iothub.ParseTopic(m.Topic())
	if err != nil || tp.Kind != iothub.TwinResponse {
		t.id.log.Warn("unexpected twin answer", "topic", m.Topic(), "err", err)
		return
	}
	t.mu.Lock()
	ch := t.waiting[tp.RID]
	delete(t.waiting, tp.RID)
	t.mu.Unlock()
	if ch != nil {
		ch <- twinAnswer{status: tp.Status, version: tp.Version, body: m.Payload()}
	}
}

func (t *twinSync) onDesired(_ paho.Client, m paho.Message) {
	t.mu.Lock()
	t.desired = append(t.desired, m.Payload())
	t.mu.Unlock()
	select {
	case t.poke <- struct{}{}:
	default:
	}
}

// onMethod runs a direct method call in a goroutine of the session and
// answers on the request's $rid.
func (t *twinSync) onMethod(_ paho.Client, m paho.Message) {
	tp, err := iothub.ParseTopic(m.Topic())
	if err != nil || tp.Kind != iothub.MethodRequest {
		t.id.log.Warn("unexpected method request", "topic", m.Topic(), "err", err)
		return
	}
	payload := m.Payload()
	t.s.goTask(func(ctx context.Context) {
		// IoT Hub does not tell the device the caller's timeout; it
		// enforces it itself, so the module or leaf gets the longest it
		// allows.
		resp, err := t.cloud.InvokeMethod(ctx, t.who.DeviceID, t.who.ModuleID, hub.MethodRequest{Name: tp.Method, Payload: payload}, hub.MaxMethodTimeout)
		if err != nil {
			status := 500
			if errors.Is(err, hub.ErrMethodTimeout) {
				status = 504
			}
			b, _ := json.Marshal(map[string]string{"message": err.Error()})
			resp = hub.MethodResponse{Status: status, Payload: b}
		}
		t.s.cli.Publish(iothub.MethodResponseTopic(resp.Status, tp.RID), 0, false, []byte(resp.Payload))
	})
}

// request publishes a twin request and waits for its answer.
func (t *twinSync) request(ctx context.Context, topic func(rid string) string, body []byte) (twinAnswer, error) {
	t.mu.Lock()
	t.rid++
	rid := strconv.FormatUint(t.rid, 10)
	ch := make(chan twinAnswer, 1)
	t.waiting[rid] = ch
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.waiting, rid)
		t.mu.Unlock()
	}()
	if body == nil {
		body = []byte{}
	}
	tok := t.s.cli.Publish(topic(rid), 0, false, body)
	<-tok.Done()
	if err := tok.Error(); err != nil {
		return twinAnswer{}, err
	}
	timer := time.NewTimer(requestTimeout)
	defer timer.Stop()
	select {
	case a := <-ch:
		return a, nil
	case <-timer.C:
		return twinAnswer{}, fmt.Errorf("no answer within %s", requestTimeout)
	case <-ctx.Done():
		return twinAnswer{}, ctx.Err()
	}
}

// run gets the twin, then applies desired notifications and sends the
// queued reported patches, in order, until the connection ends. It gets
// the twin again when asked (refetch).
func (t *twinSync) run(ctx context.Context) {
	log := t.id.log
	r := retry{b: t.l.opts.Backoff}
	for !t.get(ctx) {
		if !sleepCtx(ctx, r.next()) {
			return
		}
	}
	r.reset()
	refetch := false
	for ctx.Err() == nil {
		changed := t.cloud.ReportedChanged()
		ok := true
		if refetch {
			ok = t.get(ctx)
			refetch = !ok
		}
		t.applyDesired()
		ok = t.sendReported(ctx) && ok
		wait := time.Duration(-1)
		if !ok {
			wait = r.next()
		} else {
			r.reset()
		}
		var retryC <-chan time.Time
		var tm *time.Timer
		if wait >= 0 {
			tm = time.NewTimer(wait)
			retryC = tm.C
		}
		select {
		case <-changed:
		case <-t.poke:
		case <-t.refetch:
			refetch = true
		case <-retryC:
		case <-ctx.Done():
			log.Debug("twin sync stops with the connection")
		}
		if tm != nil {
			tm.Stop()
		}
	}
}

// get fetches the twin and hands the desired document to the hub.
func (t *twinSync) get(ctx context.Context) bool {
	a, err := t.request(ctx, iothub.TwinGetTopic, nil)
	if err != nil {
		if ctx.Err() == nil {
			t.id.log.Warn("twin GET failed; retrying", "err", err)
		}
		return false
	}
	if a.status != 200 {
		t.id.log.Warn("twin GET refused; retrying", "status", a.status, "body", string(a.body))
		return false
	}
	var doc struct {
		Desired map[string]any `json:"desired"`
	}
	if err := json.Unmarshal(a.body, &doc); err != nil {
		t.id.log.Warn("twin GET answer is not a twin; retrying", "err", err)
		return false
	}
	v := version(doc.Desired)
	if _, err := t.cloud.ApplyCloudDesired(t.who, doc.Desired, v); err != nil {
		if errors.Is(err, hub.ErrUnknownModule) {
			// Not deployed (yet): fetch again later.
			t.id.log.Warn("twin fetched for a module that is not deployed; retrying", "err", err)
			return false
		}
		t.id.log.Error("cloud desired properties not applied", "err", err)
		return true // not retried: the same document would fail again
	}
	t.id.log.Info("twin synced from the cloud", "desiredVersion", v)
	return true
}

// applyDesired applies the desired notifications received so far.
func (t *twinSync) applyDesired() {
	t.mu.Lock()
	notes := t.desired
	t.desired = nil
	t.mu.Unlock()
	for _, b := range notes {
		var patch map[string]any
		if err := json.Unmarshal(b, &patch); err != nil {
			t.id.log.Warn("desired notification is not JSON; ignored", "err", err)
			continue
		}
		if _, err := t.cloud.ApplyCloudDesiredPatch(t.who, patch, version(patch)); err != nil {
			t.id.log.Error("desired notification not applied", "err", err)
		}
	}
}

// sendReported sends the queued reported patches in order and reports
// whether it got through them all.
func (t *twinSync) sendReported(ctx context.Context) bool {
	ps, err := t.cloud.PendingReported(t.who)
	if err != nil {
		t.id.log.Error("read queued reported patches", "err", err)
		return false
	}
	for _, p := range ps {
		a, err := t.request(ctx, iothub.TwinReportedTopic, p.Patch)
		if err != nil {
			if ctx.Err() == nil {
				t.id.log.Warn("reported patch not sent; retrying", "err", err)
			}
			return false
		}
		switch {
		case a.status >= 200 && a.status < 300:
		case a.status == 400 || a.status == 413:
			// IoT Hub will never take this patch; keeping it would hold
			// back every patch after it.
			t.id.log.Error("IoT Hub refused a reported patch; dropped", "status", a.status, "patch", string(p.Patch), "answer", string(a.body))
		default:
			t.id.log.Warn("reported patch not accepted; retrying", "status", a.status)
			return false
		}
		if err := t.cloud.AckReported(t.who, p.Seq); err != nil {
			t.id.log.Error("forget a sent reported patch", "err", err)
			return false
		}
	}
	return true
}

// version reads a twin section's $version; 0 when absent.
func version(doc map[string]any) int64 {
	switch v := doc["$version"].(type) {
	case float64:
		return int64(v)
	case json.Number:
		n, _ := v.Int64()
		return n
	}
	return 0
}
