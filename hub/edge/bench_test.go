package edge_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tinyedge/tinyedge/hub/iothub"
	"github.com/tinyedge/tinyedge/store"
)

// Benchmarks: external module → route → external module at QoS 1, paho
// clients on loopback (plain listener, so TLS does not count), beside
// the same publish/subscribe flow through mosquitto, and through mochi
// alone (the MQTT library the endpoint is built on, with its own
// forwarding and nothing of the hub's), in the same run.
//
//	go test -run '^$' -bench BenchmarkExternalRoute -benchtime 20000x ./hub/edge/
//
// The brokers run as processes of their own (tinyedge and mochi as this
// test binary running TestBenchServer), the clients in this one, so
// each competes with the same clients for the same two cores. pairs=1 is one
// publisher and one receiver, pairs=4 four independent ones at once
// (the hub routes all four). Each publisher keeps up to window
// publishes unacknowledged: 16 is IoT Hub's in-flight limit per
// connection; 256 and 1024 are clients that pipeline more (paho and
// mqtt.js set no limit of their own). Each payload carries its send
// time; the receiver records the latency, which includes any backlog at
// the receiver. Reported: msg/s, p50 and p99 latency, the broker's CPU
// time per message (srv_us/msg, from /proc) and the clients'
// (cli_us/msg), for tinyedge messages per journal commit and per bbolt
// commit and the time of each, and for tinyedge and mochi the
// throughput as a multiple of mosquitto's (x_mosquitto).
//
// What is compared: tinyedge authenticates, parses the property bag,
// routes, makes every message and the receiver's acknowledgement durable
// in its store's journal with an fdatasync (group commit; the PUBACK
// waits for it), and commits to bbolt, every 500 ms, what was not
// acknowledged by then. mosquitto with persistence off and no in-flight
// limit does none of that: no routing, no fsync; nor does mochi alone.
//
// TINYEDGE_BENCH_CPUPROFILE=file writes a CPU profile of the tinyedge
// or mochi broker process; each sub-benchmark starts its own, so select
// one:
//
//	TINYEDGE_BENCH_CPUPROFILE=/tmp/srv.prof go test -run '^$' \
//	    -bench 'ExternalRoute/pairs=1/window=16/tinyedge' ./hub/edge/
//
// TINYEDGE_BENCH_GOMAXPROCS=n runs the tinyedge and mochi broker processes with
// GOMAXPROCS=n (the clients keep theirs).
//
// TINYEDGE_BENCH_NOSYNC=1 runs the broker's store without fsync (its
// journal and bbolt): what the rest costs, for comparison only — a
// gateway never runs so.

const benchPayload = 256

func BenchmarkExternalRoute(b *testing.B) {
	for _, c := range []struct{ pairs, window int }{{1, 16}, {4, 16}, {1, 256}, {1, 1024}} {
		pairs, window := c.pairs, c.window
		name := fmt.Sprintf("pairs=%d/window=%d", pairs, window)
		var mosquittoRate float64
		b.Run(name+"/mosquitto", func(b *testing.B) {
			addr, pid := startMosquitto(b)
			var flows []flow
			for i := range pairs {
				f := flow{
					sub:    dialPlain(b, addr, fmt.Sprint("sub", i)),
					pub:    dialPlain(b, addr, fmt.Sprint("pub", i)),
					topic:  fmt.Sprint("bench/flow", i),
					filter: fmt.Sprint("bench/flow", i),
				}
				flows = append(flows, f)
			}
			cpu0 := cpuTime(b, pid)
			mosquittoRate = runFlows(b, flows, window)
			b.ReportMetric(float64((cpuTime(b, pid)-cpu0).Microseconds())/float64(b.N), "srv_us/msg")
		})
		b.Run(name+"/mochi", func(b *testing.B) {
			srv := startBenchServer(b, benchMochi)
			var flows []flow
			for i := range pairs {
				flows = append(flows, flow{
					sub:    dialPlain(b, srv.addr, fmt.Sprint("sub", i)),
					pub:    dialPlain(b, srv.addr, fmt.Sprint("pub", i)),
					topic:  fmt.Sprint("bench/flow", i),
					filter: fmt.Sprint("bench/flow", i),
				})
			}
			cpu0 := cpuTime(b, srv.pid)
			rate := runFlows(b, flows, window)
			b.ReportMetric(float64((cpuTime(b, srv.pid)-cpu0).Microseconds())/float64(b.N), "srv_us/msg")
			if mosquittoRate > 0 {
				b.ReportMetric(rate/mosquittoRate, "x_mosquitto")
			}
		})
		b.Run(name+"/tinyedge", func(b *testing.B) {
			srv := startBenchServer(b, pairs)
			var flows []flow
			for i := range pairs {
				a, bm := fmt.Sprint("gw1/a", i), fmt.Sprint("gw1/b", i)
				flows = append(flows, flow{
					sub:    srv.dial(b, bm),
					pub:    srv.dial(b, a),
					topic:  eventsTopic(a, iothub.Bag{{Key: "$.on", Value: "out"}}),
					filter: fmt.Sprintf("devices/gw1/modules/b%d/#", i),
				})
			}
			c0, cpu0 := srv.commits(b), cpuTime(b, srv.pid)
			rate := runFlows(b, flows, window)
			b.ReportMetric(float64((cpuTime(b, srv.pid)-cpu0).Microseconds())/float64(b.N), "srv_us/msg")
			c1 := srv.commits(b)
			// The store's commits: its journal's, which a publisher's
			// PUBACK waits for (with a small window, the bound on its
			// rate), and bbolt's, which run behind them.
			if jn := c1.jn - c0.jn; jn > 0 {
				b.ReportMetric(float64(b.N)/float64(jn), "msg/jcommit")
				b.ReportMetric(float64((c1.jtook-c0.jtook).Microseconds())/float64(jn), "us/jcommit")
			}
			b.ReportMetric(float64(b.N)/float64(c1.n-c0.n), "msg/commit")
			b.ReportMetric(float64((c1.took-c0.took).Microseconds())/float64(c1.n-c0.n), "us/commit")
			if mosquittoRate > 0 {
				b.ReportMetric(rate/mosquittoRate, "x_mosquitto")
			}
		})
	}
}

// benchServerVar, when set in the environment, makes TestBenchServer the
// broker of BenchmarkExternalRoute: its value is the number of pairs.
const benchServerVar = "TINYEDGE_BENCH_SERVER"

// TestBenchServer is BenchmarkExternalRoute's tinyedge, run in a process
// of its own as mosquitto is (startBenchServer): a hub with a store and
// the endpoint, external modules a0…, b0… and routes aN → bN. It prints
// the plain listener's address, answers "commits" with the store's
// commit count and their time in nanoseconds, then its journal's, and
// stops when its standard input ends. In a test run it is skipped.
func TestBenchServer(t *testing.T) {
	v := os.Getenv(benchServerVar)
	if v == "" {
		t.Skip("the broker process of BenchmarkExternalRoute")
	}
	pairs, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", benchServerVar, v, err)
	}
	if pairs == benchMochi {
		serveBareMochi(t)
		return
	}
	var names, routes []string
	for i := range pairs {
		names = append(names, fmt.Sprint("a", i), fmt.Sprint("b", i))
		routes = append(routes, fmt.Sprintf(`FROM /messages/modules/a%d/* INTO BrokeredEndpoint("/modules/b%d/inputs/in")`, i, i))
	}
	o := envOpts{externals: names, routes: routes}
	if os.Getenv("TINYEDGE_BENCH_NOSYNC") != "" {
		o.store = &store.Options{NoSync: true}
	}
	e := newEnv(t, o)
	fmt.Printf("addr %s\n", e.ep.PlainAddr())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "commits" {
			st, err := e.st.Stats()
			if err != nil {
				t.Fatal(err)
			}
			fmt.Printf("commits %d %d %d %d\n", st.Commits, st.CommitTime, st.JournalCommits, st.JournalTime)
		}
	}
}

// benchMochi, as TestBenchServer's number of pairs, makes it a bare
// mochi server instead: mochi's own publish/subscribe, every client
// allowed, no hub, no store. It is the library the endpoint is built
// on, measured alone, beside mosquitto: what tinyedge could reach if
// routing and durability cost nothing.
const benchMochi = -1

// serveBareMochi serves mochi alone on a loopback port until standard
// input ends.
func serveBareMochi(t *testing.T) {
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumQos = 1
	// As mosquitto is run: no in-flight limit of its own, which would
	// hold messages back from a 3.1.1 receiver until it reconnects.
	caps.ReceiveMaximum = math.MaxUint16
	caps.MaximumInflight = math.MaxUint16
	caps.MaximumClientWritesPending = math.MaxUint16
	srv := mqtt.New(&mqtt.Options{
		Capabilities:            caps,
		Logger:                  slog.New(slog.NewTextHandler(io.Discard, nil)),
		SysTopicResendInterval:  3600,
		ClientNetReadBufferSize: 4096,
	})
	if err := srv.AddHook(new(allowAll), nil); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "bench", Address: addr})); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	fmt.Printf("addr %s\n", addr)
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// allowAll lets every client connect, publish and subscribe.
type allowAll struct{ mqtt.HookBase }

func (allowAll) ID() string { return "allow-all" }

func (allowAll) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (allowAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

func (allowAll) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

// benchServer is a running TestBenchServer process.
type benchServer struct {
	addr string
	pid  int
	in   io.Writer
	out  *bufio.Scanner
}

// startBenchServer runs TestBenchServer in a child process and returns
// once it listens. It skips where the test binary cannot be run again
// (emulated).
func startBenchServer(b *testing.B, pairs int) *benchServer {
	args := []string{"-test.run=^TestBenchServer$"}
	if f := os.Getenv("TINYEDGE_BENCH_CPUPROFILE"); f != "" {
		args = append(args, "-test.cpuprofile="+f)
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", benchServerVar, pairs))
	if g := os.Getenv("TINYEDGE_BENCH_GOMAXPROCS"); g != "" {
		cmd.Env = append(cmd.Env, "GOMAXPROCS="+g)
	}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.ENOEXEC) {
			b.Skipf("cannot exec here (emulated?): %v", err)
		}
		b.Fatal(err)
	}
	b.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() {
			_, _ = io.Copy(io.Discard, out)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(wait):
			_ = cmd.Process.Kill()
		}
		if err := cmd.Wait(); err != nil {
			b.Errorf("bench server: %v", err)
		}
	})
	s := &benchServer{pid: cmd.Process.Pid, in: in, out: bufio.NewScanner(out)}
	addr, ok := strings.CutPrefix(s.line(b), "addr ")
	if !ok {
		b.Fatal("bench server did not say its address")
	}
	s.addr = addr
	return s
}

// cpuTime is the user and system time process pid has used, from
// /proc (in clock ticks of 10 ms).
func cpuTime(b *testing.B, pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses: state is
	// the first, utime the 12th and stime the 13th.
	_, rest, _ := bytes.Cut(stat, []byte(") "))
	f := strings.Fields(string(rest))
	if len(f) < 13 {
		b.Fatalf("/proc/%d/stat: %q", pid, stat)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, stat)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

func (s *benchServer) line(b *testing.B) string {
	if !s.out.Scan() {
		b.Fatalf("bench server ended: %v", s.out.Err())
	}
	return s.out.Text()
}

// commitCount is the store's bbolt and journal commits so far and the
// time they took.
type commitCount struct {
	n, jn       uint64
	took, jtook time.Duration
}

func (s *benchServer) commits(b *testing.B) commitCount {
	if _, err := io.WriteString(s.in, "commits\n"); err != nil {
		b.Fatal(err)
	}
	var c commitCount
	if _, err := fmt.Sscanf(s.line(b), "commits %d %d %d %d", &c.n, &c.took, &c.jn, &c.jtook); err != nil {
		b.Fatal(err)
	}
	return c
}

func (s *benchServer) dial(b *testing.B, id string) paho.Client {
	c, err := dialAt(b, "tcp://"+s.addr, nil, id, clientOpts{plain: true})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// flow is one publisher and the subscriber its messages go to.
type flow struct {
	pub, sub      paho.Client
	topic, filter string
}

// runFlows publishes b.N messages, spread over the flows, each publisher
// pipelined, and waits until every subscriber received its share. It
// reports msg/s and latency.
func runFlows(b *testing.B, flows []flow, window int) float64 {
	lat := make([]time.Duration, 0, b.N)
	var mu sync.Mutex
	all := make(chan struct{})
	for _, f := range flows {
		subscribe(b, f.sub, f.filter, 1, func(_ paho.Client, m paho.Message) {
			p := m.Payload()
			if len(p) < 8 {
				return
			}
			d := time.Duration(time.Now().UnixNano() - int64(binary.BigEndian.Uint64(p)))
			mu.Lock()
			lat = append(lat, d)
			if len(lat) == b.N {
				close(all)
			}
			mu.Unlock()
		})
	}
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime(b, os.Getpid())
	var wg sync.WaitGroup
	errs := make(chan error, len(flows))
	for i, f := range flows {
		n := b.N / len(flows)
		if i < b.N%len(flows) {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- publishN(f.pub, f.topic, n, window)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-all:
	case <-time.After(wait + time.Duration(b.N)*time.Millisecond):
		mu.Lock()
		n := len(lat)
		mu.Unlock()
		b.Fatalf("received %d of %d", n, b.N)
	}
	el := time.Since(start)
	b.StopTimer()
	// The clients' CPU: they share the two cores with the broker, so
	// together the two bound the rate.
	b.ReportMetric(float64((cpuTime(b, os.Getpid())-cpu0).Microseconds())/float64(b.N), "cli_us/msg")
	rate := float64(b.N) / el.Seconds()
	slices.Sort(lat)
	b.ReportMetric(rate, "msg/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
	b.ReportMetric(0, "ns/op")
	return rate
}

// publishN publishes n messages at QoS 1 with at most window
// unacknowledged.
func publishN(pub paho.Client, topic string, n, window int) error {
	tokens := make(chan paho.Token, window)
	acked := make(chan error, 1)
	go func() {
		var err error
		for tok := range tokens {
			if !tok.WaitTimeout(wait) {
				err = errors.New("publish not acknowledged in time")
			} else if tok.Error() != nil {
				err = tok.Error()
			}
		}
		acked <- err
	}()
	payload := make([]byte, benchPayload)
	for range n {
		binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
		tokens <- pub.Publish(topic, 1, false, slices.Clone(payload))
	}
	close(tokens)
	return <-acked
}

func dialPlain(b *testing.B, addr, id string) paho.Client {
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectTimeout(wait).SetOrderMatters(true)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		b.Fatalf("connect to mosquitto: %v", tok.Error())
	}
	b.Cleanup(func() { c.Disconnect(0) })
	return c
}

// startMosquitto runs mosquitto on a free loopback port, without
// persistence, and returns its address. It skips when mosquitto is not
// installed or the test binary runs emulated.
func startMosquitto(b *testing.B) (addr string, pid int) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		b.Skip("mosquitto not installed (apt-get install mosquitto)")
	}
	if err := exec.Command(os.Args[0], "-test.run=^$").Run(); errors.Is(err, syscall.ENOEXEC) {
		b.Skipf("cannot exec here (emulated?): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := b.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	text := strings.Join([]string{
		"listener " + strconv.Itoa(port) + " 127.0.0.1",
		"allow_anonymous true",
		"persistence false",
		"max_queued_messages 0",
		"max_inflight_messages 0",
		"log_dest none",
	}, "\n") + "\n"
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(wait)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr, cmd.Process.Pid
		}
		if time.Now().After(deadline) {
			b.Fatalf("mosquitto did not listen on %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkRSS10Modules reports the resident memory of the process with
// a hub, the endpoint and 10 external modules connected (TLS), each
// subscribed to its inputs, twin and methods.
//
//	go test -run '^$' -bench BenchmarkRSS10Modules -benchtime 1x ./hub/edge/
func BenchmarkRSS10Modules(b *testing.B) {
	base := rss(b)
	var names []string
	for i := range 10 {
		names = append(names, fmt.Sprintf("m%d", i))
	}
	e := newEnv(b, envOpts{externals: names})
	before := rss(b)
	for _, n := range names {
		c := e.mustDial(b, "gw1/"+n, clientOpts{})
		subscribe(b, c, "devices/gw1/modules/"+n+"/#", 1, func(paho.Client, paho.Message) {})
		subscribe(b, c, iothub.FilterTwinResponses, 0, func(paho.Client, paho.Message) {})
		subscribe(b, c, iothub.FilterTwinDesired, 0, func(paho.Client, paho.Message) {})
		subscribe(b, c, iothub.FilterMethods, 0, func(paho.Client, paho.Message) {})
	}
	runtime.GC()
	after := rss(b)
	b.ReportMetric(float64(after)/(1<<20), "MiB_rss")
	b.ReportMetric(float64(after-before)/(1<<20), "MiB_for_10_modules")
	b.ReportMetric(float64(before-base)/(1<<20), "MiB_hub_and_endpoint")
	b.ReportMetric(0, "ns/op")
}

// rss is VmRSS of this process (which also holds the paho clients).
func rss(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
