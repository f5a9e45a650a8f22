package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/iothub"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/twin"
)

// errTokenExpired closes a connection whose SAS token expired.
var errTokenExpired = errors.New("SAS token expired; connect again with a new one")

// errRevoked closes a connection whose credentials no longer hold.
var errRevoked = errors.New("credentials revoked")

// expiryCheck bounds how long the expiry timer trusts one clock reading
// (a clock stepped by NTP is noticed within it), and how long revoked
// credentials go unnoticed when nobody calls Revalidate.
const expiryCheck = time.Minute

// session is one authenticated connection.
type session struct {
	e   *Endpoint
	cl  *mqtt.Client
	id  hub.Identity
	log *slog.Logger

	ctx    context.Context // ends when the connection does
	cancel context.CancelFunc

	expiry time.Time  // of the token; zero for a certificate
	cred   credential // what it authenticated with
	timer  *time.Timer

	// Telemetry goes to the hub from one goroutine (sender), in order
	// and in batches, so a publisher with many messages in flight shares
	// store commits between them. The sender starts a batch's commit and
	// goes on to the next batch; another goroutine (acker) waits for the
	// commits in order and writes the PUBACKs.
	sendq      chan outgoing
	started    chan started    // batches handed to the hub, for the acker
	slots      chan struct{}   // one token per batch in started or being waited for
	spare      chan []outgoing // batches the acker is done with, for the sender to reuse
	ackFailed  chan struct{}   // closed when the hub refused a message
	budget     budget          // bytes of telemetry read and not acknowledged
	senderDone chan struct{}

	mu          sync.Mutex
	closed      bool
	subs        subs
	filters     []string // the filters subs was made from, sorted
	stopMethods func()
	stopDesired func() // stops the desired watcher and waits for it
	pump        *pump
	calls       map[string]chan hub.MethodResponse // method calls awaiting an answer, by $rid
	rid         uint64
}

// outgoing is a PUBLISH on its way to the hub, or (m nil) one that only
// waits for its turn to be acknowledged.
type outgoing struct {
	m   *message.Message
	pid uint16
	qos byte
}

// started is a batch the sender handed to the hub: the PUBACKs to write
// once it is committed.
type started struct {
	batch []outgoing
	pend  *hub.PendingSend // nil when the batch has no telemetry
	bytes int              // of bodies, to give back to the budget
}

// sendBatch is the most messages handed to the hub at once. sendDepth is
// how many batches of a connection may be on their way to a commit: the
// next ones join the commits that follow, instead of waiting a round
// trip to the client. sendBudget bounds the message bodies a connection
// has read and not acknowledged (at least one is always let in), so a
// fast publisher of large messages holds a megabyte, not sendDepth full
// batches of 256 KiB packets.
const (
	sendBatch  = 64
	sendDepth  = 8
	sendBudget = 1 << 20
)

// subs is what a session subscribed to, as far as the hub cares.
type subs struct {
	allInputs bool
	inputs    map[string]bool
	inputQoS  byte
	twinRes   bool
	desired   bool
	methods   bool
}

func (s subs) anyInputs() bool { return s.allInputs || len(s.inputs) > 0 }

func newSession(e *Endpoint, cl *mqtt.Client, id hub.Identity, expiry time.Time, cred credential) *session {
	ctx, cancel := context.WithCancel(e.ctx)
	return &session{
		e:      e,
		cl:     cl,
		id:     id,
		log:    e.log.With("identity", id.String(), "remote", cl.Net.Remote),
		ctx:    ctx,
		cancel: cancel,
		expiry: expiry, cred: cred,
		calls: map[string]chan hub.MethodResponse{},

		sendq:      make(chan outgoing, sendBatch),
		started:    make(chan started, sendDepth),
		slots:      make(chan struct{}, sendDepth),
		spare:      make(chan []outgoing, sendDepth),
		ackFailed:  make(chan struct{}),
		budget:     budget{limit: sendBudget, room: make(chan struct{}, 1)},
		senderDone: make(chan struct{}),
	}
}

func (s *session) start() {
	s.log.Info("connected", "tokenExpiry", s.expiry)
	go func() {
		defer close(s.senderDone)
		ackerDone := make(chan struct{})
		go func() {
			defer close(ackerDone)
			s.acker()
		}()
		s.sender()
		close(s.started)
		<-ackerDone
	}()
	s.e.opts.Hub.SetConnected(s.id, true)
	s.mu.Lock()
	s.timer = time.AfterFunc(s.untilExpiryCheck(), s.checkExpiry)
	s.mu.Unlock()
	// A session taken over with clean session false inherits the
	// subscriptions of the one before.
	s.subscriptionsChanged()
}

func (s *session) untilExpiryCheck() time.Duration {
	if s.expiry.IsZero() {
		return expiryCheck // a certificate: only revocation is checked
	}
	return max(min(s.expiry.Sub(s.e.now()), expiryCheck), 0)
}

func (s *session) checkExpiry() {
	if s.revoked() {
		return
	}
	// Nothing expires on an untrusted clock (see DESIGN.md, Time): a
	// gateway that booted without an RTC keeps its modules until NTP
	// has set the clock, and checks again then.
	if now := s.e.now(); !s.expiry.IsZero() && s.e.opts.Trusted(now) && !now.Before(s.expiry) {
		s.log.Info("closing the connection: its SAS token expired", "expiry", s.expiry)
		s.cl.Stop(errTokenExpired)
		return
	}
	s.mu.Lock()
	if !s.closed {
		s.timer.Reset(s.untilExpiryCheck())
	}
	s.mu.Unlock()
}

// revoked closes the connection if its credentials no longer hold
// (credentialHolds) and says so.
func (s *session) revoked() bool {
	err := s.e.credentialHolds(s.id, s.cred)
	if err == nil {
		return false
	}
	revoke(s.cl, s.log, err)
	return true
}

// revoke closes a connection whose credentials no longer hold, for err.
func revoke(cl *mqtt.Client, log *slog.Logger, err error) {
	log.Warn("closing the connection: its credentials no longer hold", "err", err)
	cl.Stop(fmt.Errorf("%w: %v", errRevoked, err))
}

// close ends what the session started: input delivery (rewinding what
// was not acknowledged), method serving, desired notifications.
func (s *session) close(err error) {
	s.mu.Lock()
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
	}
	stopMethods, stopDesired, p := s.stopMethods, s.stopDesired, s.pump
	s.stopMethods, s.stopDesired, s.pump = nil, nil, nil
	s.mu.Unlock()
	s.cancel()
	<-s.senderDone
	if stopMethods != nil {
		stopMethods()
	}
	if stopDesired != nil {
		stopDesired()
	}
	if p != nil {
		p.stop()
	}
	s.e.opts.Hub.SetConnected(s.id, false)
	s.log.Info("disconnected", "err", err)
}

// subscriptionsChanged reads the client's subscriptions and starts or
// stops what depends on them.
func (s *session) subscriptionsChanged() {
	next := subs{inputs: map[string]bool{}}
	all := s.cl.State.Subscriptions.GetAll()
	filters := make([]string, 0, len(all))
	for filter := range all {
		filters = append(filters, filter)
	}
	slices.Sort(filters)
	for filter, sub := range all {
		switch filter {
		case iothub.FilterTwinResponses:
			next.twinRes = true
			continue
		case iothub.FilterTwinDesired:
			next.desired = true
			continue
		case iothub.FilterMethods:
			next.methods = true
			continue
		}
		if s.id.ModuleID == "" {
			continue // a leaf device's devicebound filter: no cloud-to-device messages here
		}
		prefix := "devices/" + s.id.DeviceID + "/modules/" + s.id.ModuleID + "/"
		rest, ok := strings.CutPrefix(filter, prefix)
		if !ok {
			continue
		}
		switch {
		case rest == "#" || rest == "inputs/#":
			next.allInputs = true
		default:
			in, _ := strings.CutPrefix(rest, "inputs/")
			next.inputs[strings.TrimSuffix(in, "/#")] = true
		}
		next.inputQoS = max(next.inputQoS, min(sub.Qos, 1))
	}

	// What stops goroutines runs after the unlock: holding s.mu while
	// waiting for them would hold up this connection's other users.
	var after []func()
	defer func() {
		for _, f := range after {
			f()
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.log.Debug("subscriptions", "inputs", next.allInputs || len(next.inputs) > 0, "twinResponses", next.twinRes, "desired", next.desired, "methods", next.methods)
	s.subs, s.filters = next, filters
	if next.methods && s.stopMethods == nil {
		s.stopMethods = s.e.opts.Hub.ServeMethods(s.id, s.callMethod)
	} else if !next.methods && s.stopMethods != nil {
		after = append(after, s.stopMethods)
		s.stopMethods = nil
	}
	if next.desired && s.stopDesired == nil {
		s.stopDesired = s.watchDesired()
	} else if !next.desired && s.stopDesired != nil {
		after = append(after, s.stopDesired)
		s.stopDesired = nil
	}
	if s.id.ModuleID == "" {
		return
	}
	switch {
	case next.anyInputs() && s.pump == nil:
		// Started under s.mu, so close cannot miss it.
		p, err := s.e.startPump(s, next)
		if err != nil {
			s.log.Error("cannot deliver inputs", "err", err)
			return
		}
		s.pump = p
	case next.anyInputs():
		s.pump.setSubs(next)
	case s.pump != nil:
		after = append(after, s.pump.stop)
		s.pump = nil
	}
}

// publish handles a PUBLISH the ACL let through. It runs on the
// connection's read goroutine: telemetry is queued for the sender (which
// blocks the reading when sendBatch messages wait), the rest is answered
// here, its PUBACK queued behind the telemetry before it.
func (s *session) publish(pk packets.Packet) {
	t, err := iothub.ParseTopic(pk.TopicName)
	if err != nil {
		s.log.Warn("publish refused; closing the connection", "topic", pk.TopicName, "err", err)
		s.cl.Stop(err)
		return
	}
	out := outgoing{pid: pk.PacketID, qos: pk.FixedHeader.Qos}
	switch t.Kind {
	case iothub.Events:
		m, err := s.message(t, pk.Payload)
		if err != nil {
			s.log.Warn("message refused; closing the connection", "err", err)
			s.cl.Stop(err)
			return
		}
		out.m = m
	case iothub.TwinGet:
		s.twinGet(t.RID)
	case iothub.TwinPatchReported:
		s.twinReported(t.RID, pk.Payload)
	case iothub.MethodResponse:
		s.methodResponse(t, pk.Payload)
	}
	if out.m == nil && out.qos == 0 {
		return
	}
	if out.m != nil {
		if !s.budget.take(s.ctx, len(out.m.Body)) {
			return
		}
	}
	select {
	case s.sendq <- out:
	case <-s.ctx.Done():
	}
}

// message decodes telemetry.
func (s *session) message(t iothub.Topic, body []byte) (*message.Message, error) {
	bag, err := iothub.ParseBag(t.Bag)
	if err != nil {
		return nil, fmt.Errorf("property bag of %s: %w", s.id, err)
	}
	m := message.New(body)
	if err := iothub.MessageFromBag(bag, m); err != nil {
		return nil, fmt.Errorf("property bag of %s: %w", s.id, err)
	}
	return m, nil
}

// sender hands queued telemetry to the hub, as much as is waiting at a
// time, and passes each batch on to the acker without waiting for its
// commit, so the next batch can join the next commit.
func (s *session) sender() {
	for {
		var batch []outgoing
		select {
		case o := <-s.sendq:
			select {
			case batch = <-s.spare:
			default:
				batch = make([]outgoing, 0, sendBatch)
			}
			batch = append(batch, o)
		case <-s.ctx.Done():
			return
		case <-s.ackFailed:
			return
		}
		// Wait for room in the pipeline; the batch grows meanwhile.
	room:
		for {
			more := s.sendq
			if len(batch) == sendBatch {
				more = nil
			}
			select {
			case s.slots <- struct{}{}:
				break room
			case o := <-more:
				batch = append(batch, o)
			case <-s.ctx.Done():
				return
			case <-s.ackFailed:
				return
			}
		}
	more:
		for len(batch) < sendBatch {
			select {
			case o := <-s.sendq:
				batch = append(batch, o)
			default:
				break more
			}
		}
		st := started{batch: batch}
		msgs := make([]*message.Message, 0, len(batch))
		for _, o := range batch {
			if o.m != nil {
				msgs = append(msgs, o.m)
				st.bytes += len(o.m.Body)
			}
		}
		if len(msgs) > 0 {
			st.pend = s.e.opts.Hub.StartSendBatch(s.ctx, s.id, msgs)
		}
		s.started <- st // never blocks: it has room for every slot
	}
}

// acker waits for the batches the sender started, in order, and
// acknowledges what the hub took. If the hub refuses a message, that one
// and those after it get no PUBACK and the connection is closed: the
// client sends them again after reconnecting. Every started batch is
// waited for, even then, so the readers of its queues hear of what was
// committed.
func (s *session) acker() {
	acks := make([]packets.Packet, 0, sendBatch)
	var buf bytes.Buffer
	failed := false
	for st := range s.started {
		taken, err := len(st.batch), error(nil)
		if st.pend != nil {
			taken, err = st.pend.Wait()
		}
		s.budget.give(st.bytes)
		<-s.slots
		if !failed {
			failed = s.acknowledge(st, taken, err, acks[:0], &buf)
		}
		clear(st.batch)
		select {
		case s.spare <- st.batch[:0]:
		default:
		}
	}
}

// acknowledge writes the PUBACKs of the messages the hub took from a
// started batch, and if it refused one closes the connection and returns
// true.
func (s *session) acknowledge(st started, taken int, err error, acks []packets.Packet, buf *bytes.Buffer) bool {
	n := 0
	for _, o := range st.batch {
		if o.m != nil {
			if n == taken {
				break
			}
			n++
		}
		if o.qos > 0 {
			acks = append(acks, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: o.pid})
		}
	}
	if werr := s.writeAll(buf, acks); werr != nil {
		s.log.Debug("write PUBACKs", "err", werr)
	}
	if err == nil {
		return false
	}
	if s.ctx.Err() == nil {
		s.log.Warn("message not taken; closing the connection so the client sends it again", "err", err)
	}
	close(s.ackFailed)
	s.cl.Stop(err)
	return true
}

// budget bounds the bytes a connection has read and not acknowledged.
type budget struct {
	limit int
	mu    sync.Mutex
	used  int
	room  chan struct{} // capacity 1: something was given back
}

// take waits until n bytes fit (or nothing is held) and takes them; it
// returns false if ctx ended first.
func (b *budget) take(ctx context.Context, n int) bool {
	for {
		b.mu.Lock()
		if b.used == 0 || b.used+n <= b.limit {
			b.used += n
			b.mu.Unlock()
			return true
		}
		b.mu.Unlock()
		select {
		case <-b.room:
		case <-ctx.Done():
			return false
		}
	}
}

func (b *budget) give(n int) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	select {
	case b.room <- struct{}{}:
	default:
	}
}

// writeAll writes packets to the client in one write, where mochi's
// WritePacket makes a system call for each: under load the PUBACKs of a
// batch, and the inputs of a window, cost one. It serializes with
// WritePacket through the client's lock, as WritePacket itself does
// (mochi v2.7.9), and writes straight to the connection, as WritePacket
// does whenever mochi's own outbound queue is empty — always here,
// since the hub never has mochi forward anything. buf is the caller's,
// to encode into; it is kept for the next call unless it grew large.
func (s *session) writeAll(buf *bytes.Buffer, pks []packets.Packet) error {
	if len(pks) == 0 {
		return nil
	}
	buf.Reset()
	defer func() {
		if buf.Cap() > maxWriteBuffer {
			*buf = bytes.Buffer{}
		}
	}()
	for i := range pks {
		pk := &pks[i]
		pk.ProtocolVersion = s.cl.Properties.ProtocolVersion
		var err error
		switch pk.FixedHeader.Type {
		case packets.Publish:
			err = pk.PublishEncode(buf)
		case packets.Puback:
			err = pk.PubackEncode(buf)
		default:
			err = fmt.Errorf("writeAll: packet type %d", pk.FixedHeader.Type)
		}
		if err != nil {
			return err
		}
	}
	if s.cl.Closed() {
		return mqtt.ErrConnectionClosed
	}
	s.cl.Lock()
	defer s.cl.Unlock()
	_, err := buf.WriteTo(s.cl.Net.Conn)
	return err
}

// maxWriteBuffer is the largest encoding buffer writeAll keeps between
// calls.
const maxWriteBuffer = 64 << 10

// publishQoS0 sends a hub-originated message (twin responses,
// notifications, method calls) the way IoT Hub does: at QoS 0.
func (s *session) publishQoS0(topic string, payload []byte) error {
	return s.cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   topic,
		Payload:     payload,
	})
}

func (s *session) twinRespond(status int, rid string, version int64, body []byte) {
	s.mu.Lock()
	ok := s.subs.twinRes
	s.mu.Unlock()
	if !ok {
		s.log.Warn("twin request without a subscription to "+iothub.FilterTwinResponses+"; the answer has nowhere to go", "rid", rid)
		return
	}
	if err := s.publishQoS0(iothub.TwinResponseTopic(status, rid, version), body); err != nil {
		s.log.Debug("twin response", "err", err)
	}
}

// cloudTwinWait bounds how long a leaf device's twin GET waits for the
// upstream link to bring its twin from the cloud (hub.SyncedTwin) before
// it is answered from the cache: about what an IoT Hub round trip takes
// on a slow link. Only the first GET of a session can wait; the
// connection's other packets wait behind it.
const cloudTwinWait = 3 * time.Second

func (s *session) twinGet(rid string) {
	ctx, cancel := context.WithTimeout(s.ctx, cloudTwinWait)
	tw, err := s.e.opts.Hub.SyncedTwin(ctx, s.id)
	cancel()
	if err != nil {
		s.log.Warn("twin GET", "err", err)
		s.twinRespond(404, rid, 0, errorBody(err.Error()))
		return
	}
	b, err := json.Marshal(tw)
	if err != nil {
		s.twinRespond(500, rid, 0, errorBody(err.Error()))
		return
	}
	s.twinRespond(200, rid, 0, b)
}

func (s *session) twinReported(rid string, body []byte) {
	patch, err := twin.ParsePatch(body)
	if err != nil {
		s.twinRespond(400, rid, 0, errorBody(err.Error()))
		return
	}
	v, err := s.e.opts.Hub.PatchReported(s.id, patch)
	switch {
	case errors.Is(err, twin.ErrTooLarge), errors.Is(err, twin.ErrTooDeep), errors.Is(err, twin.ErrBadPatch):
		s.twinRespond(400, rid, 0, errorBody(err.Error()))
	case err != nil:
		s.log.Warn("reported properties", "err", err)
		s.twinRespond(500, rid, 0, errorBody(err.Error()))
	default:
		s.twinRespond(204, rid, v, nil)
	}
}

// watchDesired starts the goroutine that sends desired-property patches
// and returns what stops it. s.mu is held.
func (s *session) watchDesired() func() {
	changed, unwatch, err := s.e.opts.Hub.WatchDesired(s.id)
	if err != nil {
		s.log.Error("desired-property notifications", "err", err)
		return func() {}
	}
	tw, _ := s.e.opts.Hub.IdentityTwin(s.id)
	seen := tw.Desired.Doc
	ctx, cancel := context.WithCancel(s.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-changed:
			case <-ctx.Done():
				return
			}
			tw, err := s.e.opts.Hub.IdentityTwin(s.id)
			if err != nil {
				continue
			}
			// Patches that came faster than they were sent fold into one.
			patch := twin.Diff(seen, tw.Desired.Doc)
			seen = tw.Desired.Doc
			if len(patch) == 0 {
				continue
			}
			patch["$version"] = tw.Desired.Version
			b, err := json.Marshal(patch)
			if err != nil {
				s.log.Error("encode desired patch", "err", err)
				continue
			}
			if err := s.publishQoS0(iothub.TwinDesiredTopic(tw.Desired.Version), b); err != nil {
				return
			}
			s.log.Debug("desired properties patch sent", "version", tw.Desired.Version)
		}
	}()
	return func() {
		cancel()
		unwatch()
		<-done
	}
}

// callMethod sends a direct-method request to the client and waits for
// its answer until ctx ends.
func (s *session) callMethod(ctx context.Context, req hub.MethodRequest) (hub.MethodResponse, error) {
	ch := make(chan hub.MethodResponse, 1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return hub.MethodResponse{Status: 404, Payload: errorBody(s.id.String() + " disconnected")}, nil
	}
	s.rid++
	rid := strconv.FormatUint(s.rid, 16)
	s.calls[rid] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.calls, rid)
		s.mu.Unlock()
	}()
	payload := []byte(req.Payload)
	if len(payload) == 0 {
		payload = []byte("null")
	}
	if err := s.publishQoS0(iothub.MethodRequestTopic(req.Name, rid), payload); err != nil {
		return hub.MethodResponse{Status: 404, Payload: errorBody(s.id.String() + " disconnected")}, nil
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return hub.MethodResponse{}, hub.ErrMethodTimeout
	case <-s.ctx.Done():
		return hub.MethodResponse{Status: 404, Payload: errorBody(s.id.String() + " disconnected before answering")}, nil
	}
}

func (s *session) methodResponse(t iothub.Topic, body []byte) {
	s.mu.Lock()
	ch := s.calls[t.RID]
	s.mu.Unlock()
	if ch == nil {
		s.log.Debug("answer to a method call nobody waits for (timed out?)", "rid", t.RID, "status", t.Status)
		return
	}
	r := hub.MethodResponse{Status: t.Status}
	if len(body) > 0 {
		if !json.Valid(body) {
			r = hub.MethodResponse{Status: 500, Payload: errorBody(s.id.String() + " answered with a payload that is not JSON")}
		} else {
			r.Payload = append(json.RawMessage(nil), body...)
		}
	}
	select {
	case ch <- r:
	default:
	}
}

func (s *session) puback(id uint16) {
	s.mu.Lock()
	p := s.pump
	s.mu.Unlock()
	if p != nil {
		p.puback(id)
	}
}

func errorBody(msg string) []byte {
	b, _ := json.Marshal(map[string]string{"message": msg})
	return b
}

// publishAllowed says whether identity id may publish on topic: its own
// telemetry, its twin requests and its method answers.
func publishAllowed(topic string, id hub.Identity) error {
	t, err := iothub.ParseTopic(topic)
	if err != nil {
		return err
	}
	switch t.Kind {
	case iothub.Events:
		if t.DeviceID != id.DeviceID || t.ModuleID != id.ModuleID {
			return fmt.Errorf("%s may not publish as %s", id, hub.Identity{DeviceID: t.DeviceID, ModuleID: t.ModuleID})
		}
		return nil
	case iothub.TwinGet, iothub.TwinPatchReported, iothub.MethodResponse:
		return nil
	}
	return fmt.Errorf("clients do not publish %s topics", t.Kind)
}
