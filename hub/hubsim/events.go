package hubsim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/tinyedge/tinyedge/hub/iothub"
	"github.com/tinyedge/tinyedge/hub/message"
)

// MaxEvents is how many events a Sim keeps in memory at least (at most
// twice as many) unless Options.KeepEvents says otherwise; older ones are
// still in events.jsonl.
const MaxEvents = 100_000

// Event is a device-to-cloud message the hub accepted.
type Event struct {
	// Seq numbers the events of a data directory from 0, across restarts.
	Seq        int64
	DeviceID   string
	ModuleID   string
	Body       []byte
	Properties map[string]string // application properties
	System     message.System    // with ConnectionDeviceID/ModuleID and EnqueuedTime set by the hub
}

// monitorEvent is what `az iot hub monitor-events --properties all` shows
// of an event, and what GET /events and `tinyedge hubsim monitor` print.
type monitorEvent struct {
	DeviceID   string          `json:"deviceId"`
	ModuleID   string          `json:"moduleId,omitempty"`
	Body       json.RawMessage `json:"body"`
	Properties struct {
		Application map[string]string `json:"application"`
		System      map[string]string `json:"system"`
	} `json:"properties"`
}

// MarshalJSON writes the event as `az iot hub monitor-events --properties
// all` shows it: deviceId, moduleId, body (JSON when the body parses as
// JSON, else a string), properties.application and properties.system with
// IoT Hub's system property names.
func (e Event) MarshalJSON() ([]byte, error) {
	var m monitorEvent
	m.DeviceID, m.ModuleID = e.DeviceID, e.ModuleID
	if json.Valid(e.Body) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, e.Body); err != nil {
			return nil, err
		}
		m.Body = buf.Bytes()
	} else {
		m.Body, _ = json.Marshal(string(e.Body))
	}
	m.Properties.Application = e.Properties
	if m.Properties.Application == nil {
		m.Properties.Application = map[string]string{}
	}
	m.Properties.System = SystemProperties(e.System)
	return json.Marshal(m)
}

// SystemProperties names the set system properties as IoT Hub does in
// routing and in the Event Hubs-compatible endpoint.
func SystemProperties(s message.System) map[string]string {
	out := map[string]string{}
	set := func(k, v string) {
		if v != "" {
			out[k] = v
		}
	}
	at := func(k string, t time.Time) {
		if !t.IsZero() {
			out[k] = t.UTC().Format(time.RFC3339Nano)
		}
	}
	set("message-id", s.MessageID)
	set("correlation-id", s.CorrelationID)
	set("user-id", s.UserID)
	set("to", s.To)
	set("content-type", s.ContentType)
	set("content-encoding", s.ContentEncoding)
	at("iothub-creation-time-utc", s.CreationTime)
	at("absolute-expiry-time", s.ExpiryTime)
	at("iothub-enqueuedtime", s.EnqueuedTime)
	set("iothub-connection-device-id", s.ConnectionDeviceID)
	set("iothub-connection-module-id", s.ConnectionModuleID)
	set("iothub-outputname", s.OutputName)
	set("dt-dataschema", s.MessageSchema)
	set("iothub-interface-id", s.InterfaceID)
	set("dt-subject", s.ComponentName)
	out["iothub-message-source"] = "Telemetry"
	return out
}

// storedEvent is a line of events.jsonl: the message as it came, in the
// property-bag form, so nothing is lost.
type storedEvent struct {
	Seq      int64     `json:"seq"`
	DeviceID string    `json:"deviceId"`
	ModuleID string    `json:"moduleId,omitempty"`
	Body     []byte    `json:"body"`
	Bag      string    `json:"bag"`
	Enqueued time.Time `json:"enqueued"`
}

func (e *Event) stored() storedEvent {
	m := &message.Message{Properties: e.Properties, System: e.System}
	return storedEvent{Seq: e.Seq, DeviceID: e.DeviceID, ModuleID: e.ModuleID, Body: e.Body,
		Bag: iothub.BagFromMessage(m, iothub.BagOptions{Output: true, Identity: true}).Encode(), Enqueued: e.System.EnqueuedTime}
}

func (r storedEvent) event() (Event, error) {
	bag, err := iothub.ParseBag(r.Bag)
	if err != nil {
		return Event{}, err
	}
	m := message.New(nil)
	if err := iothub.MessageFromBag(bag, m); err != nil {
		return Event{}, err
	}
	m.System.EnqueuedTime = r.Enqueued
	return Event{Seq: r.Seq, DeviceID: r.DeviceID, ModuleID: r.ModuleID, Body: r.Body, Properties: m.Properties, System: m.System}, nil
}

// eventLog is the events of a data directory: the last keep in memory,
// all of them appended to a file.
type eventLog struct {
	mu      sync.Mutex
	keep    int
	f       *os.File
	events  []Event // events[0].Seq == first
	first   int64
	next    int64
	changed chan struct{} // closed and replaced when an event arrives
}

// openEventLog reads path (if any) and opens it for appending. A torn last
// line, left by a crash mid-write, is cut off.
func openEventLog(path string, keep int) (*eventLog, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open events: %w", err)
	}
	l := &eventLog{f: f, keep: keep, changed: make(chan struct{})}
	r := bufio.NewReader(f)
	var good int64
	for line := 1; ; line++ {
		b, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			break // a line without its newline is torn
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		var rec storedEvent
		if err := json.Unmarshal(b, &rec); err != nil {
			f.Close()
			return nil, fmt.Errorf("read %s line %d: %w", path, line, err)
		}
		ev, err := rec.event()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("read %s line %d: %w", path, line, err)
		}
		if rec.Seq != l.next {
			f.Close()
			return nil, fmt.Errorf("read %s line %d: seq %d, want %d", path, line, rec.Seq, l.next)
		}
		l.append(ev)
		good += int64(len(b))
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, fmt.Errorf("truncate %s: %w", path, err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
}

func (l *eventLog) append(ev Event) {
	l.events = append(l.events, ev)
	l.next = ev.Seq + 1
	if len(l.events) >= 2*l.keep { // trimmed in batches, so appends stay O(1)
		l.events = append([]Event(nil), l.events[len(l.events)-l.keep:]...)
	}
	l.first = l.next - int64(len(l.events))
}

// add numbers ev, writes it to the file and makes it visible. The write
// happens before the PUBACK: a killed hubsim keeps every acknowledged
// event (the file is not fsynced: a power cut may lose some).
func (l *eventLog) add(ev Event) (Event, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ev.Seq = l.next
	b, err := json.Marshal(ev.stored())
	if err != nil {
		return Event{}, err
	}
	if _, err := l.f.Write(append(b, '\n')); err != nil {
		return Event{}, fmt.Errorf("append event: %w", err)
	}
	l.append(ev)
	close(l.changed)
	l.changed = make(chan struct{})
	return ev, nil
}

// since returns the events numbered from seq on (from the oldest kept
// when seq is older), the number to ask for next, and a channel closed when
// more arrive.
func (l *eventLog) since(seq int64) ([]Event, int64, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq < l.first {
		seq = l.first
	}
	var out []Event
	if seq < l.next {
		out = append(out, l.events[seq-l.first:]...)
	}
	return out, l.next, l.changed
}

func (l *eventLog) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
