package hub_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/route"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// idle is a module that registers nothing and waits to be stopped.
var idle = hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
	<-ctx.Done()
	return nil
})

// sink is a module that records what arrives on the given inputs.
type sink struct {
	inputs []string
	mu     sync.Mutex
	got    []*message.Message
}

func (s *sink) Run(ctx context.Context, c *hub.Client) error {
	for _, in := range s.inputs {
		c.OnInput(in, func(_ context.Context, m *message.Message) error {
			s.mu.Lock()
			s.got = append(s.got, m)
			s.mu.Unlock()
			return nil
		})
	}
	<-ctx.Done()
	return nil
}

func (s *sink) messages() []*message.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*message.Message(nil), s.got...)
}

func newHub(t *testing.T, up hub.Endpoint, opts ...func(*hub.Options)) *hub.Hub {
	t.Helper()
	o := hub.Options{DeviceID: "gw1", Upstream: up, Backoff: hub.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond}}
	for _, f := range opts {
		f(&o)
	}
	h := hub.New(o)
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func TestSendStampsIdentity(t *testing.T) {
	up := &hubtest.Recorder{}
	h := newHub(t, up)
	if err := h.Deploy(hub.Deployment{
		Modules: []hub.ModuleSpec{{Name: "sensor", Module: idle}},
		Routes:  []*route.Route{hubtest.MustRoute(t, "all", "FROM /messages/* INTO $upstream")},
	}); err != nil {
		t.Fatal(err)
	}
	m := message.New([]byte(`{"t":1}`))
	// A sender's claims about who it is are overwritten.
	m.System.ConnectionDeviceID = "someone-else"
	m.System.ConnectionModuleID = "forged"
	m.System.OutputName = "forged"
	m.System.InputName = "forged"
	before := time.Now()
	if err := h.Send(context.Background(), "sensor", "out1", m); err != nil {
		t.Fatal(err)
	}
	m2 := message.New(nil)
	m2.System.MessageID = "mine"
	if err := h.Send(context.Background(), "sensor", "out1", m2); err != nil {
		t.Fatal(err)
	}
	got := up.Messages()
	if len(got) != 2 {
		t.Fatalf("upstream got %d messages, want 2", len(got))
	}
	s := got[0].System
	if s.ConnectionDeviceID != "gw1" || s.ConnectionModuleID != "sensor" || s.OutputName != "out1" || s.InputName != "" {
		t.Errorf("identity = %q/%q out %q in %q, want gw1/sensor out out1 in \"\"", s.ConnectionDeviceID, s.ConnectionModuleID, s.OutputName, s.InputName)
	}
	if len(s.MessageID) != 36 || strings.Count(s.MessageID, "-") != 4 {
		t.Errorf("generated messageId %q is not UUID-shaped", s.MessageID)
	}
	if s.EnqueuedTime.Before(before) {
		t.Errorf("enqueuedTime %v before send at %v", s.EnqueuedTime, before)
	}
	if got[1].System.MessageID != "mine" {
		t.Errorf("messageId = %q, want the sender's %q", got[1].System.MessageID, "mine")
	}
	if got[0].System.MessageID == got[1].System.MessageID || got[1].Seq <= got[0].Seq {
		t.Errorf("ids %q %q, seqs %d %d: want distinct ids and growing sequence numbers", got[0].System.MessageID, got[1].System.MessageID, got[0].Seq, got[1].Seq)
	}
	if src := got[0].Source(); src != "/messages/modules/sensor/outputs/out1" {
		t.Errorf("source = %q", src)
	}
}

func TestMessageSizeLimit(t *testing.T) {
	up := &hubtest.Recorder{}
	h := newHub(t, up)
	h.SetRoutes([]*route.Route{hubtest.MustRoute(t, "all", "FROM /* INTO $upstream")})
	// The hub adds the device id, the message id and the output name, so
	// leave room for them in the message that must pass.
	ok := message.New(make([]byte, message.MaxSize-200))
	if err := h.Send(context.Background(), "m", "o", ok); err != nil {
		t.Fatalf("message under the limit refused: %v", err)
	}
	big := message.New(make([]byte, message.MaxSize))
	big.Properties["k"] = "v"
	err := h.Send(context.Background(), "m", "o", big)
	if !errors.Is(err, message.ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	for _, want := range []string{"262144 bytes", fmt.Sprint(message.MaxSize)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if up.Len() != 1 {
		t.Errorf("upstream got %d messages, want only the one under the limit", up.Len())
	}
	if d := h.Stats().Dropped["too_large"]; d != 1 {
		t.Errorf("dropped too_large = %d, want 1", d)
	}
}

func TestRouterOneDeliveryPerSinkHighestPriority(t *testing.T) {
	up := &hubtest.Recorder{}
	h := newHub(t, up)
	in := &sink{inputs: []string{"in1"}}
	r1 := hubtest.MustRoute(t, "low", "FROM /messages/* INTO $upstream")
	r1.Priority, r1.TimeToLive = 7, time.Hour
	r2 := hubtest.MustRoute(t, "high", "FROM /messages/modules/a/* WHERE kind = 'alert' INTO $upstream")
	r2.Priority, r2.TimeToLive = 1, time.Minute
	r3 := hubtest.MustRoute(t, "none", "FROM /messages/modules/b/* INTO $upstream")
	r3.Priority = 0
	r4 := hubtest.MustRoute(t, "toB", `FROM /messages/modules/a/outputs/o INTO BrokeredEndpoint("/modules/b/inputs/in1")`)
	r5 := hubtest.MustRoute(t, "toB2", `FROM /messages/modules/a/* INTO BrokeredEndpoint("/modules/b/inputs/in1")`)
	if err := h.Deploy(hub.Deployment{
		Modules: []hub.ModuleSpec{{Name: "a", Module: idle}, {Name: "b", Module: in}},
		Routes:  []*route.Route{r1, r2, r3, r4, r5},
	}); err != nil {
		t.Fatal(err)
	}
	m := message.New([]byte("x"))
	m.Properties["kind"] = "alert"
	if err := h.Send(context.Background(), "a", "o", m); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "module b's delivery", func() bool { return len(in.messages()) == 1 })
	got, dels := up.Messages(), up.Deliveries()
	if len(got) != 1 {
		t.Fatalf("upstream got %d deliveries, want 1 however many routes hit it", len(got))
	}
	if dels[0].Priority != 1 || dels[0].TimeToLive != time.Minute {
		t.Errorf("delivery = %+v, want the priority and TTL of route \"high\" (1, 1m)", dels[0])
	}
	if got[0].System.InputName != "" {
		t.Errorf("upstream copy has $inputName %q", got[0].System.InputName)
	}
	if in := in.messages()[0].System.InputName; in != "in1" {
		t.Errorf("module input got $inputName %q, want in1", in)
	}
	time.Sleep(20 * time.Millisecond) // a duplicate would arrive by now
	if n := len(in.messages()); n != 1 {
		t.Errorf("module b got %d deliveries, want 1", n)
	}
	if st := h.Stats(); st.Received != 1 || st.Sent != 2 {
		t.Errorf("stats = %+v, want 1 received, 2 sent", st)
	}
}

func TestUnroutedMessageCounted(t *testing.T) {
	up := &hubtest.Recorder{}
	h := newHub(t, up)
	h.SetRoutes([]*route.Route{hubtest.MustRoute(t, "r", "FROM /messages/modules/x/* INTO $upstream")})
	if err := h.Send(context.Background(), "y", "o", message.New(nil)); err != nil {
		t.Fatal(err)
	}
	if d := h.Stats().Dropped["no_route"]; d != 1 {
		t.Errorf("dropped no_route = %d, want 1", d)
	}
}

func TestFanOutEachInputSeesItsName(t *testing.T) {
	up := &hubtest.Recorder{}
	h := newHub(t, up)
	b := &sink{inputs: []string{"x"}}
	c := &sink{inputs: []string{"y"}}
	if err := h.Deploy(hub.Deployment{
		Modules: []hub.ModuleSpec{{Name: "a", Module: idle}, {Name: "b", Module: b}, {Name: "c", Module: c}},
		Routes: []*route.Route{
			hubtest.MustRoute(t, "1", `FROM /messages/modules/a/* INTO BrokeredEndpoint("/modules/b/inputs/x")`),
			hubtest.MustRoute(t, "2", `FROM /messages/modules/a/* INTO BrokeredEndpoint("/modules/c/inputs/y")`),
			hubtest.MustRoute(t, "3", `FROM /messages/modules/a/* INTO $upstream`),
		},
	}); err != nil {
		t.Fatal(err)
	}
	if err := h.Send(context.Background(), "a", "o", message.New([]byte("hi"))); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "both inputs", func() bool { return len(b.messages()) == 1 && len(c.messages()) == 1 })
	if n := b.messages()[0].System.InputName; n != "x" {
		t.Errorf("b got input %q, want x", n)
	}
	if n := c.messages()[0].System.InputName; n != "y" {
		t.Errorf("c got input %q, want y", n)
	}
	up1 := up.Messages()
	if len(up1) != 1 || up1[0].System.InputName != "" {
		t.Errorf("upstream got %d messages, input name %q; want 1 without input name", len(up1), up1[0].System.InputName)
	}
}

// TestBackpressure checks that a full module input blocks the sender
// instead of dropping, and that everything arrives once the module reads.
func TestBackpressure(t *testing.T) {
	h := newHub(t, &hubtest.Recorder{}, func(o *hub.Options) { o.InputCapacity = 2 })
	release := make(chan struct{})
	var mu sync.Mutex
	var got []string
	slow := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		c.OnInput("in", func(ctx context.Context, m *message.Message) error {
			select {
			case <-release:
			case <-ctx.Done():
			}
			mu.Lock()
			got = append(got, string(m.Body))
			mu.Unlock()
			return nil
		})
		<-ctx.Done()
		return nil
	})
	if err := h.Deploy(hub.Deployment{
		Modules: []hub.ModuleSpec{{Name: "slow", Module: slow}},
		Routes:  []*route.Route{hubtest.MustRoute(t, "r", `FROM /messages/modules/p/* INTO BrokeredEndpoint("/modules/slow/inputs/in")`)},
	}); err != nil {
		t.Fatal(err)
	}
	// The handler holds the first message; the dispatcher's batch and the
	// inbox hold at most two capacities more. Then senders block, and
	// are told when they give up.
	sent := 0
	for ; sent < 10; sent++ {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		err := h.Send(ctx, "p", "o", message.New(fmt.Appendf(nil, "%d", sent)))
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if sent < 3 || sent > 5 {
		t.Fatalf("%d sends went through before one blocked, want between capacity+1 (3) and 2×capacity+1 (5)", sent)
	}
	if d := h.Stats().Dropped; len(d) != 0 {
		t.Errorf("dropped = %v, want nothing dropped", d)
	}
	close(release)
	if err := h.Send(context.Background(), "p", "o", message.New([]byte("last"))); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "all messages handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0 && got[len(got)-1] == "last"
	})
	mu.Lock()
	defer mu.Unlock()
	var want []string
	for i := range sent {
		want = append(want, fmt.Sprint(i))
	}
	want = append(want, "last")
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("handled %v, want %v", got, want)
	}
}

func TestMessageWaitsForLateHandler(t *testing.T) {
	h := newHub(t, &hubtest.Recorder{})
	registered := make(chan struct{})
	got := make(chan string, 1)
	late := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
		<-registered
		c.OnInput("in", func(_ context.Context, m *message.Message) error {
			got <- string(m.Body)
			return nil
		})
		<-ctx.Done()
		return nil
	})
	if err := h.Deploy(hub.Deployment{
		Modules: []hub.ModuleSpec{{Name: "late", Module: late}},
		Routes:  []*route.Route{hubtest.MustRoute(t, "r", `FROM /* INTO BrokeredEndpoint("/modules/late/inputs/in")`)},
	}); err != nil {
		t.Fatal(err)
	}
	if err := h.SendDevice(context.Background(), message.New([]byte("early"))); err != nil {
		t.Fatal(err)
	}
	close(registered)
	select {
	case b := <-got:
		if b != "early" {
			t.Errorf("got %q", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a message sent before the handler was registered never arrived")
	}
}

// TestUnhandledInputDoesNotStallOthers sends to an input the module never
// handles, then to one it does: the first is dropped and counted after
// HandlerWait, the second arrives.
func TestUnhandledInputDoesNotStallOthers(t *testing.T) {
	h := newHub(t, &hubtest.Recorder{}, func(o *hub.Options) { o.HandlerWait = 20 * time.Millisecond })
	s := &sink{inputs: []string{"used"}}
	if err := h.Deploy(hub.Deployment{
		Modules: []hub.ModuleSpec{{Name: "s", Module: s}},
		Routes: []*route.Route{
			hubtest.MustRoute(t, "a", `FROM /messages/* WHERE kind = 'a' INTO BrokeredEndpoint("/modules/s/inputs/unused")`),
			hubtest.MustRoute(t, "b", `FROM /messages/* WHERE kind = 'b' INTO BrokeredEndpoint("/modules/s/inputs/used")`),
		},
	}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b"} {
		m := message.New(nil)
		m.Properties["kind"] = k
		if err := h.SendDevice(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	hubtest.WaitFor(t, "the handled input's message", func() bool { return len(s.messages()) == 1 })
	if d := h.Stats().Dropped["no_handler"]; d != 1 {
		t.Errorf("dropped no_handler = %d, want 1", d)
	}
}

func TestMessageIDsAreUniqueUUIDShaped(t *testing.T) {
	up := &hubtest.Recorder{}
	h := newHub(t, up)
	h.SetRoutes([]*route.Route{hubtest.MustRoute(t, "all", "FROM /* INTO $upstream")})
	seen := map[string]bool{}
	for range 300 { // several id blocks
		if err := h.SendDevice(context.Background(), message.New(nil)); err != nil {
			t.Fatal(err)
		}
	}
	msgs := up.Messages()
	for _, m := range msgs {
		id := m.System.MessageID
		if len(id) != 36 || id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' || strings.Count(id, "-") != 4 {
			t.Fatalf("message id %q is not shaped 8-4-4-4-12", id)
		}
		if seen[id] {
			t.Fatalf("message id %q given twice", id)
		}
		seen[id] = true
	}
}
