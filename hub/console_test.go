package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/message"
)

// TestConsoleLooksLikeMonitorEvents checks the fields `az iot hub
// monitor-events --properties all` prints, for JSON, text and binary
// bodies.
func TestConsoleLooksLikeMonitorEvents(t *testing.T) {
	tests := []struct {
		name    string
		body    []byte
		payload any
	}{
		{"json", []byte(`{"t": 21.5}`), map[string]any{"t": 21.5}},
		{"text", []byte("hello"), "hello"},
		{"binary", []byte{0xff, 0x00, 0x10}, "ff0010"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			c := hub.NewConsole(&out)
			m := message.New(tt.body)
			m.Properties["MessageType"] = "Alert"
			m.System.ConnectionDeviceID = "gw1"
			m.System.ConnectionModuleID = "filter"
			m.System.OutputName = "output1"
			m.System.MessageID = "id-1"
			m.System.ContentType = "application/json"
			m.System.EnqueuedTime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
			if err := c.Deliver(context.Background(), m, hub.Delivery{}); err != nil {
				t.Fatal(err)
			}
			var ev struct {
				Event struct {
					Origin      string            `json:"origin"`
					Module      string            `json:"module"`
					Payload     any               `json:"payload"`
					Annotations map[string]string `json:"annotations"`
					Properties  struct {
						System      map[string]string `json:"system"`
						Application map[string]string `json:"application"`
					} `json:"properties"`
				} `json:"event"`
			}
			if err := json.Unmarshal(out.Bytes(), &ev); err != nil {
				t.Fatalf("output is not one JSON document: %v\n%s", err, out.String())
			}
			e := ev.Event
			if e.Origin != "gw1" || e.Module != "filter" {
				t.Errorf("origin/module = %q/%q", e.Origin, e.Module)
			}
			if got, _ := json.Marshal(e.Payload); string(got) != mustJSON(t, tt.payload) {
				t.Errorf("payload = %s, want %s", got, mustJSON(t, tt.payload))
			}
			if e.Annotations["iothub-connection-module-id"] != "filter" || e.Annotations["iothub-enqueuedtime"] != "2024-01-02T03:04:05.000Z" {
				t.Errorf("annotations = %v", e.Annotations)
			}
			if e.Properties.System["message_id"] != "id-1" || e.Properties.System["content_type"] != "application/json" || e.Properties.System["iothub-outputname"] != "output1" {
				t.Errorf("system properties = %v", e.Properties.System)
			}
			if e.Properties.Application["MessageType"] != "Alert" {
				t.Errorf("application properties = %v", e.Properties.Application)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
