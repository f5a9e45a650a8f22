package hubsim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/tinyedge/tinyedge/hub/iothub"
)

// A closed hubsim started again on the same data directory and port has
// the identities, twins and events of the first, and the same CA.
func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	s1, err := New(Options{DataDir: dir, MQTTAddr: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.Start(); err != nil {
		t.Fatal(err)
	}
	id := addModule(t, s1, "gw", "filter")
	c := mustDial(t, s1, id)
	c.subscribe(t, "$iothub/twin/res/#")
	if status, v, _ := twinRequest(t, c, "$iothub/twin/PATCH/properties/reported/?$rid=1", []byte(`{"state":"on"}`), "1"); status != 204 || v != 2 {
		t.Fatalf("reported: %d v%d", status, v)
	}
	s1.PatchDesired("gw", "filter", map[string]any{"k": "v"})
	for i := 0; i < 3; i++ {
		if err := c.publish(t, "devices/gw/modules/filter/messages/events/n="+string(rune('0'+i)), 1, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	ca, addr := s1.CAPEM(), s1.Addr()
	tw1, _ := s1.Twin("gw", "filter")
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	c.waitLost(t)
	if _, err := os.Stat(filepath.Join(dir, infoFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("hubsim.json left after Close: %v", err)
	}

	s2, err := New(Options{DataDir: dir, MQTTAddr: addr, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(); err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if string(s2.CAPEM()) != string(ca) {
		t.Error("the CA changed across the restart")
	}
	tw2, err := s2.Twin("gw", "filter")
	if err != nil || !reflect.DeepEqual(tw1, tw2) {
		t.Errorf("twin after restart %+v, %v; want %+v", tw2, err, tw1)
	}
	evs := waitEvents(t, s2, 3)
	if len(evs) != 3 || evs[2].Seq != 2 || evs[2].Properties["n"] != "2" || evs[0].System.ConnectionModuleID != "filter" {
		t.Errorf("events after restart: %+v", evs)
	}
	// The same key works, and numbering continues.
	c2 := mustDial(t, s2, id)
	if err := c2.publish(t, "devices/gw/modules/filter/messages/events/", 1, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if evs := waitEvents(t, s2, 4); evs[3].Seq != 3 || string(evs[3].Body) != "after" {
		t.Errorf("event after restart: %+v", evs[3])
	}
}

// StopMQTT drops every connection and refuses new ones; StartMQTT takes
// them again on the same port. The upstream link's fault tests do this
// over and over.
func TestStopStartMQTT(t *testing.T) {
	s := startSim(t, "")
	id := addModule(t, s, "gw", "filter")
	addr := s.Addr()
	for i := 0; i < 5; i++ {
		c := mustDial(t, s, id)
		c.subscribe(t, "$iothub/methods/POST/#")
		if err := c.publish(t, "devices/gw/modules/filter/messages/events/", 1, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		// A method in flight fails when the hub goes.
		errc := make(chan error, 1)
		go func() {
			_, err := s.InvokeMethod(context.Background(), "gw", "filter", "m", json.RawMessage(`1`), 10*time.Second)
			errc <- err
		}()
		c.waitMsg(t, "$iothub/methods/POST/m/")
		if err := s.StopMQTT(); err != nil {
			t.Fatal(err)
		}
		c.waitLost(t)
		if err := <-errc; !errors.Is(err, ErrNotConnected) {
			t.Errorf("method during the outage: %v", err)
		}
		if _, err := dial(t, s, id, dialOpts{}); err == nil {
			t.Fatal("connected while stopped")
		}
		if err := s.StartMQTT(); err != nil {
			t.Fatal(err)
		}
		if s.Addr() != addr {
			t.Fatalf("address %s after restart, want %s", s.Addr(), addr)
		}
	}
	if evs := waitEvents(t, s, 5); len(evs) != 5 {
		t.Errorf("%d events", len(evs))
	}
}

// A crash in the middle of an event line loses that line only.
func TestTornEventLog(t *testing.T) {
	dir := t.TempDir()
	s := startSim(t, dir)
	dev, _ := s.AddDevice("d")
	c := mustDial(t, s, dev)
	for i := 0; i < 2; i++ {
		if err := c.publish(t, "devices/d/messages/events/", 1, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	f, err := os.OpenFile(filepath.Join(dir, eventsFileName), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"seq":2,"deviceId":"d","bo`)
	f.Close()
	s2, err := New(Options{DataDir: dir, MQTTAddr: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	evs, next, _ := s2.Events(0)
	if len(evs) != 2 || next != 2 {
		t.Errorf("%d events, next %d; want 2, 2", len(evs), next)
	}
}

func TestDataDirLocked(t *testing.T) {
	s := startSim(t, "")
	if _, err := New(Options{DataDir: s.opts.DataDir, MQTTAddr: "127.0.0.1:0"}); !errors.Is(err, ErrDataDirInUse) {
		t.Errorf("second New on the same data directory: %v, want ErrDataDirInUse", err)
	}
	s.Close()
	s2, err := New(Options{DataDir: s.opts.DataDir, MQTTAddr: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("New after Close: %v", err)
	}
	s2.Close()
}

// Every event the hub acknowledged is there after ten restarts in the
// middle of a stream: a PUBACK means stored, as the upstream link's
// at-least-once guarantee needs.
func TestRestartsMidStream(t *testing.T) {
	dir := t.TempDir()
	var s *Sim
	start := func(addr string) {
		var err error
		if s, err = New(Options{DataDir: dir, MQTTAddr: addr, Logger: testLogger(t)}); err != nil {
			t.Fatal(err)
		}
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
	}
	start("127.0.0.1:0")
	addr := s.Addr()
	id := addModule(t, s, "gw", "sensor")
	opts := paho.NewClientOptions().AddBroker("ssl://" + addr).SetClientID(id.ID()).
		SetUsername(iothub.FormatUsername(s.Hostname(), "gw", "sensor", nil)).
		SetPassword(iothub.SignToken(mustKey(t, id.PrimaryKey), iothub.Resource(s.Hostname(), "gw", "sensor"), time.Now().Add(time.Hour), "")).
		SetTLSConfig(tlsConfig(s)).SetProtocolVersion(4).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(20 * time.Millisecond).
		SetMaxReconnectInterval(50 * time.Millisecond).SetWriteTimeout(time.Second)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}

	stop := make(chan struct{})
	acked := make(chan int, 1<<16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(acked)
		for n := 0; ; {
			select {
			case <-stop:
				return
			default:
			}
			tok := c.Publish(iothub.EventsTopic("gw", "sensor", "n="+strconv.Itoa(n)), 1, false, []byte("x"))
			if tok.WaitTimeout(2*time.Second) && tok.Error() == nil {
				acked <- n
				n++
			}
		}
	}()
	for i := 0; i < 10; i++ {
		// Let a few events through, then restart.
		_, before, _ := s.Events(0)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := s.WaitEvents(ctx, int(before)+5)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		start(addr)
	}
	close(stop)
	wg.Wait()
	defer s.Close()
	var ackedN []int
	for n := range acked {
		ackedN = append(ackedN, n)
	}
	if len(ackedN) < 10 {
		t.Errorf("only %d events acknowledged over 10 restarts", len(ackedN))
	}
	// paho completes the token of a message it resends after a reconnect
	// (messageIds.claimID) before the PUBACK, so the last "acknowledged"
	// events may still be on their way: wait for them, connected.
	deadline := time.Now().Add(10 * time.Second)
	var missing []int
	for {
		evs, _, _ := s.Events(0)
		got := map[string]bool{}
		for _, e := range evs {
			got[e.Properties["n"]] = true
		}
		missing = missing[:0]
		for _, n := range ackedN {
			if !got[strconv.Itoa(n)] {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			t.Logf("%d events acknowledged, %d recorded (duplicates are resends)", len(ackedN), len(evs))
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Disconnect(100)
	if len(missing) > 0 {
		t.Errorf("events acknowledged but not recorded: n=%v", missing)
	}
}

// KeepEvents bounds the events kept in memory, also when they are read
// back from events.jsonl at a start; the file keeps every one.
func TestKeepEvents(t *testing.T) {
	dir := t.TempDir()
	s, err := New(Options{DataDir: dir, MQTTAddr: "127.0.0.1:0", Logger: testLogger(t), KeepEvents: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	dev, _ := s.AddDevice("d")
	c := mustDial(t, s, dev)
	for range 5 {
		if err := c.publish(t, "devices/d/messages/events/", 1, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	check := func(s *Sim) {
		t.Helper()
		evs, next, _ := s.Events(0)
		if next != 5 || len(evs) < 2 || len(evs) > 4 || evs[len(evs)-1].Seq != 4 {
			t.Errorf("%d events in memory (next %d), want 2 to 4 ending at seq 4", len(evs), next)
		}
	}
	check(s)
	s.Close()
	s2, err := New(Options{DataDir: dir, MQTTAddr: "127.0.0.1:0", Logger: testLogger(t), KeepEvents: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	check(s2)
	b, err := os.ReadFile(filepath.Join(dir, eventsFileName))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(b, []byte("\n")); n != 5 {
		t.Errorf("events.jsonl has %d lines, want 5", n)
	}
}
