package upstream_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/route"
	"github.com/tinyedge/tinyedge/hub/upstream"
	"github.com/tinyedge/tinyedge/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fast reconnects, for tests.
var fast = upstream.Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// gateway is a hub with a store whose $upstream goes to link.
type gateway struct {
	h    *hub.Hub
	st   *store.Store
	link *upstream.Link
}

func newGateway(t testing.TB, link *upstream.Link, st *store.Store) *gateway {
	t.Helper()
	if st == nil {
		var err error
		st, err = store.Open(filepath.Join(t.TempDir(), "store.db"), &store.Options{SweepInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
	}
	h := hub.New(hub.Options{DeviceID: "gw1", Upstream: link, Store: st, Logger: testLogger(t)})
	hi := hubtest.MustRoute(t, "hi", "FROM /messages/* WHERE stream = 's0' INTO $upstream")
	hi.Priority = 0
	lo := hubtest.MustRoute(t, "lo", "FROM /messages/* WHERE stream <> 's0' INTO $upstream")
	lo.Priority = 5
	h.SetRoutes([]*route.Route{hi, lo})
	link.Start(nil)
	g := &gateway{h: h, st: st, link: link}
	t.Cleanup(g.close)
	return g
}

func (g *gateway) close() {
	_ = g.h.Close()
	_ = g.link.Close()
	_ = g.st.Close()
}

func (g *gateway) queued(t testing.TB) int64 {
	es, err := g.st.EndpointStats(hub.UpstreamQueue)
	if err != nil {
		t.Fatal(err)
	}
	return es.Queued
}

// send sends n numbered messages on each of streams s0..s{streams-1}
// concurrently (s0 at priority 0, the others at 5), body "sK:i".
func (g *gateway) send(t testing.TB, streams, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				m := message.New(fmt.Appendf(nil, "s%d:%d", s, i))
				m.Properties["stream"] = fmt.Sprintf("s%d", s)
				if err := g.h.SendDevice(context.Background(), m); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// checkStreams checks that every message of every stream arrived, and
// that their first arrivals are in order; it returns the duplicates.
func checkStreams(t testing.TB, got []paho.Message, streams, n int) int {
	t.Helper()
	bodies := make([]string, len(got))
	for i, m := range got {
		bodies[i] = string(m.Payload())
	}
	return checkBodies(t, bodies, streams, n)
}

func mqttLink(t testing.TB, b *broker, cfg upstream.MQTTConfig, opts *upstream.Options) *upstream.Link {
	t.Helper()
	cfg.Broker = b.url()
	cfg.DeviceID = "gw1"
	if cfg.Topic == "" {
		cfg.Topic = "t/{deviceId}/{priority}/{property:stream}"
	}
	if opts == nil {
		opts = &upstream.Options{}
	}
	if opts.Backoff == (upstream.Backoff{}) {
		opts.Backoff = fast
	}
	opts.Logger = testLogger(t)
	l, err := upstream.NewMQTT(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestBrokerRestarts stops and restarts mosquitto 20 times during a
// stream of 20,000 numbered messages: every message arrives, in order
// within a priority, with duplicates only around the restarts.
func TestBrokerRestarts(t *testing.T) {
	b := startBroker(t, "")
	sub := subscribe(t, b, "t/#")
	streams, n, restarts := 4, 5000, 20
	if testing.Short() {
		n, restarts = 1000, 5
	}
	g := newGateway(t, mqttLink(t, b, upstream.MQTTConfig{}, nil), nil)

	sent := make(chan struct{})
	go func() {
		defer close(sent)
		g.send(t, streams, n)
	}()
	total := streams * n
	for r := 1; r <= restarts; r++ {
		// Restart once the subscriber has seen the next share of the
		// stream, and wait for the link to come back, so every restart
		// cuts a connection while messages flow.
		waitSubscriber(t, g, b, sub, r*total/(restarts+1), streams, n)
		before := g.link.Status().Identities[0].Connects
		b.stop()
		b.start()
		hubtest.WaitFor(t, "the link to reconnect", func() bool { return g.link.Status().Identities[0].Connects > before })
	}
	<-sent
	hubtest.WaitFor(t, "the queue to drain", func() bool { return g.queued(t) == 0 })
	waitSubscriber(t, g, b, sub, total, streams, n)
	dups := checkStreams(t, sub.messages(), streams, n)
	st := g.link.Status()
	t.Logf("%d messages, %d restarts, %d duplicates, %d connects", total, restarts, dups, st.Identities[0].Connects)
	if got := st.Identities[0].Connects; got < uint64(restarts+1) {
		t.Errorf("%d connects, want at least %d (one per restart)", got, restarts+1)
	}
	if limit := restarts * 16 * 2; dups > limit {
		t.Errorf("%d duplicates, want at most %d (the window per restart, on both legs)", dups, limit)
	}
}

// waitSubscriber waits until the subscriber has want distinct messages
// (duplicates do not count); on
// timeout it says what is missing and what the link and broker said.
func waitSubscriber(t testing.TB, g *gateway, b *broker, sub *subscriber, want, streams, n int) {
	t.Helper()
	deadline := time.Now().Add(hubtest.Patience)
	for sub.distinct() < want {
		if time.Now().After(deadline) {
			missing(t, sub.messages(), streams, n)
			log, _ := os.ReadFile(filepath.Join(b.dir, "mosquitto.log"))
			t.Fatalf("subscriber has %d distinct messages, want %d; $upstream holds %d; link %+v\nmosquitto log:\n%s",
				sub.distinct(), want, g.queued(t), g.link.Status(), log)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// missing logs the messages that did not arrive.
func missing(t testing.TB, got []paho.Message, streams, n int) {
	t.Helper()
	seen := map[string]bool{}
	for _, m := range got {
		seen[string(m.Payload())] = true
	}
	for s := range streams {
		var miss []int
		for i := range n {
			if !seen[fmt.Sprintf("s%d:%d", s, i)] {
				miss = append(miss, i)
			}
		}
		if len(miss) > 0 {
			t.Logf("stream s%d: %d missing, first %v", s, len(miss), miss[:min(len(miss), 40)])
		}
	}
}

// TestDeliverWithoutStore: a hub without a store sends through the link
// synchronously; Send returns once the broker has the message.
func TestDeliverWithoutStore(t *testing.T) {
	b := startBroker(t, "")
	sub := subscribe(t, b, "t/#")
	link := mqttLink(t, b, upstream.MQTTConfig{}, nil)
	defer link.Close()
	h := hub.New(hub.Options{DeviceID: "gw1", Upstream: link, Logger: testLogger(t)})
	defer h.Close()
	h.SetRoutes([]*route.Route{hubtest.MustRoute(t, "all", "FROM /* INTO $upstream")})
	link.Start(nil)
	m := message.New([]byte("s0:0"))
	m.Properties["stream"] = "s0"
	ctx, cancel := context.WithTimeout(context.Background(), hubtest.Patience)
	defer cancel()
	if err := h.SendDevice(ctx, m); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitFor(t, "the message", func() bool { return sub.len() == 1 })
	if got := sub.messages()[0].Topic(); got != "t/gw1/10/s0" {
		t.Errorf("topic %q, want t/gw1/10/s0 (no route priority: the lowest)", got)
	}
}
