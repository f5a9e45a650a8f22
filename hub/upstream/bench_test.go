package upstream_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/hubtest"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/route"
	"github.com/tinyedge/tinyedge/hub/upstream"
	"github.com/tinyedge/tinyedge/store"
)

// benchBacklog is the backlog BenchmarkUpstreamDrain drains; -short
// makes it a tenth.
func benchBacklog() int {
	if v, err := strconv.Atoi(os.Getenv("TINYEDGE_BENCH_BACKLOG")); err == nil && v > 0 {
		return v
	}
	if testing.Short() {
		return 10_000
	}
	return 100_000
}

// benchBody is a SimulatedTemperatureSensor reading.
var benchBody = []byte(`{"machine":{"temperature":21.53,"pressure":1.05},"ambient":{"temperature":20.92,"humidity":25},"timeCreated":"2026-11-25T19:00:00.000Z"}`)

// BenchmarkUpstreamDrain measures how fast the link drains a backlog of
// messages from the store at QoS 1 with a window of 16, against a bare
// paho client publishing the same messages with the same window in the
// same run (the baseline), with the CPU time per message of each and the
// memory of the process (RssAnon) before and during the drain; to
// mosquitto on loopback in plain-MQTT and in IoT Hub dialect, and to
// hubsim (TLS, SAS tokens). Run it with
//
//	go test -run '^$' -bench UpstreamDrain -benchtime 1x ./hub/upstream/
//
// (TINYEDGE_BENCH_BACKLOG=n changes the backlog from 100,000.)
func BenchmarkUpstreamDrain(b *testing.B) {
	for _, mode := range []string{"mqtt", "iothub", "hubsim"} {
		b.Run(mode, func(b *testing.B) {
			tg := newBenchTarget(b, mode)
			n := benchBacklog()
			var linkRate, baseRate, startRSS, peakRSS float64
			var linkCPU, baseCPU time.Duration
			for range b.N {
				l, s, p := drainOnce(b, tg.link, n)
				c1 := cpuTime()
				linkRate += l
				startRSS = max(startRSS, s)
				peakRSS = max(peakRSS, p)
				baseRate += tg.baseline(b, n)
				linkCPU += drainCPU
				baseCPU += cpuTime() - c1
			}
			linkRate /= float64(b.N)
			baseRate /= float64(b.N)
			b.ReportMetric(linkRate, "msgs/s")
			b.ReportMetric(baseRate, "baseline-msgs/s")
			b.ReportMetric(linkRate/baseRate, "ratio")
			b.ReportMetric(startRSS, "start-RssAnon-MiB")
			b.ReportMetric(peakRSS, "peak-RssAnon-MiB")
			b.ReportMetric(float64(linkCPU.Microseconds())/float64(n*b.N), "cpu-µs/msg")
			b.ReportMetric(float64(baseCPU.Microseconds())/float64(n*b.N), "baseline-cpu-µs/msg")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// benchTarget is where a benchmark drains to: how to make the link, and
// the baseline publishing the same messages there.
type benchTarget struct {
	link     func(st *store.Store) *upstream.Link
	baseline func(b *testing.B, n int) float64
}

// iothubTopic is the topic the link uses for the i-th message in IoT Hub
// dialect (with a message id as long as the hub's).
func iothubTopic(i int) string {
	return "devices/gw1/messages/events/%24.mid=0123456789abcdef-0123-4567-89ab-0123456789ab&%24.ct=application%2Fjson&%24.ce=utf-8&%24.on=temperatureOutput&batchId=b1&sequenceNumber=" + strconv.Itoa(i)
}

func newBenchTarget(b *testing.B, mode string) benchTarget {
	opts := func(st *store.Store) *upstream.Options { return &upstream.Options{Backoff: fast, Store: st} }
	must := func(l *upstream.Link, err error) *upstream.Link {
		if err != nil {
			b.Fatal(err)
		}
		return l
	}
	switch mode {
	case "mqtt":
		br := startBroker(b, "")
		const topic = "tinyedge/gw1/SimulatedTemperatureSensor/temperatureOutput"
		return benchTarget{
			link: func(st *store.Store) *upstream.Link {
				return must(upstream.NewMQTT(upstream.MQTTConfig{Broker: br.url(), DeviceID: "gw1", Topic: upstream.DefaultTopic}, opts(st)))
			},
			baseline: func(b *testing.B, n int) float64 {
				return baseline(b, br, func(int) string { return topic }, n, 16)
			},
		}
	case "iothub":
		br := startBroker(b, "")
		return benchTarget{
			link: func(st *store.Store) *upstream.Link {
				return must(upstream.NewIoTHub(upstream.IoTHubConfig{HostName: hubHost, DeviceID: "gw1", SharedAccessKey: []byte("k"), Broker: br.url()}, opts(st)))
			},
			baseline: func(b *testing.B, n int) float64 { return baseline(b, br, iothubTopic, n, 16) },
		}
	default:
		// The emulator runs in this process: keeping its default 100,000
		// events would weigh on both runs' GC and on the RSS figures.
		sim := startSimKeeping(b, 1000)
		dev, err := sim.AddDevice("gw1")
		if err != nil {
			b.Fatal(err)
		}
		key := simKey(b, dev)
		return benchTarget{
			link: func(st *store.Store) *upstream.Link {
				return must(upstream.NewIoTHub(upstream.IoTHubConfig{HostName: sim.Hostname(), DeviceID: "gw1", SharedAccessKey: key,
					Broker: "ssl://" + sim.Addr(), TLS: simTLS(b, sim)}, opts(st)))
			},
			baseline: func(b *testing.B, n int) float64 { return simBaseline(b, sim, key, n) },
		}
	}
}

// benchMessage is the i-th message of the backlog as a module sends it.
func benchMessage(i int) *message.Message {
	m := message.New(benchBody)
	m.System.ContentType = "application/json"
	m.System.ContentEncoding = "utf-8"
	m.Properties["sequenceNumber"] = strconv.Itoa(i)
	m.Properties["batchId"] = "b1"
	return m
}

// drainOnce fills a store with n messages while the link is not
// started, then starts it and times the drain; it returns messages per
// second, and the anonymous RSS in MiB when the drain starts and its
// peak during the drain (of the whole test process, broker excluded).
func drainOnce(b *testing.B, newLink func(*store.Store) *upstream.Link, n int) (rate, startMiB, peakMiB float64) {
	b.StopTimer()
	st, err := store.Open(filepath.Join(b.TempDir(), "store.db"), &store.Options{SweepInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	link := newLink(st)
	defer link.Close()
	h := hub.New(hub.Options{DeviceID: "gw1", Upstream: link, Store: st})
	defer h.Close()
	h.SetRoutes([]*route.Route{hubtest.MustRoute(b, "up", "FROM /messages/* INTO $upstream")})
	// Fill from 64 senders so that appends share commits.
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				if err := h.Send(context.Background(), "SimulatedTemperatureSensor", "temperatureOutput", benchMessage(i)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if es, _ := st.EndpointStats(hub.UpstreamQueue); es.Queued != int64(n) {
		b.Fatalf("backlog %d, want %d", es.Queued, n)
	}

	runtime.GC()
	startMiB = rssMiB()
	stop := make(chan struct{})
	peak := make(chan float64)
	go func() {
		p := 0.0
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			p = max(p, rssMiB())
			select {
			case <-t.C:
			case <-stop:
				peak <- p
				return
			}
		}
	}()
	b.StartTimer()
	start := time.Now()
	cpu0 := cpuTime()
	link.Start(nil)
	// Every poll of the queue depth is a read transaction that counts in
	// the link's CPU time and competes with it for the cores: every 10 ms
	// keeps that under 0.5 % of the drain's CPU, and the lateness it adds
	// to the measured time (at most one interval) under 0.5 % too.
	deadline := time.Now().Add(10 * time.Minute)
	for {
		es, err := st.EndpointStats(hub.UpstreamQueue)
		if err != nil {
			b.Fatal(err)
		}
		if es.Queued == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("backlog not drained: %d left", es.Queued)
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(start)
	drainCPU = cpuTime() - cpu0
	b.StopTimer()
	close(stop)
	return float64(n) / took.Seconds(), startMiB, <-peak
}

// baseline publishes n messages with a bare paho client on the broker
// and a window of in-flight publishes, and returns messages per second.
func baseline(b *testing.B, br *broker, topic func(i int) string, n, window int) float64 {
	b.StopTimer()
	cli := paho.NewClient(paho.NewClientOptions().AddBroker(br.url()).SetClientID("test-baseline").
		SetCleanSession(true).SetAutoReconnect(false).SetStore(paho.NewMemoryStore()).SetProtocolVersion(4))
	if tok := cli.Connect(); !tok.WaitTimeout(hubtest.Patience) || tok.Error() != nil {
		b.Fatalf("baseline connect: %v", tok.Error())
	}
	defer cli.Disconnect(100)
	return publishWindowed(b, cli, topic, n, window)
}

// publishWindowed publishes n messages with QoS 1 on cli, at most window
// awaiting their PUBACK, and returns messages per second.
func publishWindowed(b *testing.B, cli paho.Client, topic func(i int) string, n, window int) float64 {
	slots := make(chan struct{}, window)
	var wg sync.WaitGroup
	var failed atomic.Int64
	b.StartTimer()
	start := time.Now()
	for i := range n {
		slots <- struct{}{}
		tok := cli.Publish(topic(i), 1, false, benchBody)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-tok.Done()
			if tok.Error() != nil {
				failed.Add(1)
			}
			<-slots
		}()
	}
	wg.Wait()
	took := time.Since(start)
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("baseline: %d publishes failed", f)
	}
	return float64(n) / took.Seconds()
}

// drainCPU is the CPU time the process spent in the last drain.
var drainCPU time.Duration

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssMiB is the process's resident anonymous memory (RssAnon): its heap
// and stacks, without the store file's pages that bbolt maps, which the
// kernel can drop at will.
func rssMiB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "RssAnon:"); ok {
			var kb float64
			fmt.Sscanf(strings.TrimSpace(rest), "%f", &kb)
			return kb / 1024
		}
	}
	return 0
}
