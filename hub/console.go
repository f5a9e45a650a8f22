package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"unicode/utf8"

	"github.com/tinyedge/tinyedge/hub/message"
)

// Console is the $upstream endpoint of `tinyedge run --upstream console`:
// it prints each message the way `az iot hub monitor-events --properties
// all` shows what reached IoT Hub — origin, module, payload, annotations,
// system and application properties — one indented JSON document per
// message.
type Console struct {
	mu sync.Mutex
	w  io.Writer
}

var _ Endpoint = (*Console)(nil)

// NewConsole returns a console endpoint writing to w.
func NewConsole(w io.Writer) *Console { return &Console{w: w} }

// Name is "$upstream".
func (c *Console) Name() string { return "$upstream" }

type consoleEvent struct {
	Event struct {
		Origin      string            `json:"origin"`
		Module      string            `json:"module"`
		Interface   string            `json:"interface"`
		Component   string            `json:"component"`
		Payload     any               `json:"payload"`
		Annotations map[string]string `json:"annotations"`
		Properties  struct {
			System      map[string]string `json:"system"`
			Application map[string]string `json:"application"`
		} `json:"properties"`
	} `json:"event"`
}

// systemNamesAz maps our system property names to the names monitor-events
// prints under properties.system.
var systemNamesAz = map[string]string{
	"messageId":       "message_id",
	"correlationId":   "correlation_id",
	"userId":          "user_id",
	"to":              "to",
	"contentType":     "content_type",
	"contentEncoding": "content_encoding",
	"creationTimeUtc": "iothub-creation-time-utc",
	"expiryTimeUtc":   "absolute_expiry_time",
	"messageSchema":   "dt-dataschema",
	"componentName":   "dt-subject",
}

// Deliver prints m. It never fails short of a write error.
func (c *Console) Deliver(_ context.Context, m *message.Message, d Delivery) error {
	var ev consoleEvent
	e := &ev.Event
	e.Origin = m.System.ConnectionDeviceID
	e.Module = m.System.ConnectionModuleID
	e.Interface = m.System.InterfaceID
	e.Component = m.System.ComponentName
	e.Payload = payload(m)
	e.Annotations = map[string]string{
		"iothub-connection-device-id": m.System.ConnectionDeviceID,
		"iothub-message-source":       "Telemetry",
	}
	if m.System.ConnectionModuleID != "" {
		e.Annotations["iothub-connection-module-id"] = m.System.ConnectionModuleID
	}
	if v, ok := m.SystemProperty("enqueuedTime"); ok {
		e.Annotations["iothub-enqueuedtime"] = v
	}
	e.Properties.System = map[string]string{}
	for name, v := range m.SystemProperties() {
		if az, ok := systemNamesAz[name]; ok {
			e.Properties.System[az] = v
		}
	}
	if m.System.OutputName != "" {
		e.Properties.System["iothub-outputname"] = m.System.OutputName
	}
	e.Properties.Application = m.Properties
	if e.Properties.Application == nil {
		e.Properties.Application = map[string]string{}
	}
	b, err := json.MarshalIndent(&ev, "", "    ")
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	b = append(b, '\n')
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.w.Write(b); err != nil {
		return fmt.Errorf("console: %w", err)
	}
	return nil
}

// payload shows a JSON body as JSON, other UTF-8 text as a string and
// anything else as the string monitor-events would show for bytes.
func payload(m *message.Message) any {
	body := m.Body
	if json.Valid(body) {
		return json.RawMessage(bytes.TrimSpace(body))
	}
	if utf8.Valid(body) {
		return string(body)
	}
	return fmt.Sprintf("%x", body)
}
