package main

import (
	"strings"
	"testing"
)

var testMessageCases = []struct {
	name, in string
	body     string
	errPart  string
}{
	{"json body", `{"body": {"a": 1}, "systemProperties": {"contentType": "application/json"}}`, `{"a": 1}`, ""},
	{"string body", `{"body": "plain text"}`, "plain text", ""},
	{"no body", `{"properties": {"k": "v"}}`, "", ""},
	{"null body", `{"body": null}`, "", ""},
	{"$-prefixed system property", `{"systemProperties": {"$connectionModuleId": "m"}}`, "", ""},
	{"time system property", `{"systemProperties": {"creationTimeUtc": "2024-01-02T03:04:05Z"}}`, "", ""},
	{"unknown system property", `{"systemProperties": {"colour": "red"}}`, "", "systemProperties.colour"},
	{"bad time", `{"systemProperties": {"enqueuedTime": "noon"}}`, "", "systemProperties.enqueuedTime"},
	{"unknown field", `{"bdy": 1}`, "", `unknown field "bdy"`},
	{"property not a string", `{"properties": {"n": 1}}`, "", "msg.json"},
	{"not JSON", `body: 1`, "", "msg.json"},
}

func TestParseTestMessage(t *testing.T) {
	for _, tt := range testMessageCases {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parseTestMessage("msg.json", []byte(tt.in))
			if tt.errPart != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errPart) {
					t.Fatalf("err = %v, want one naming %q", err, tt.errPart)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(m.Body) != tt.body {
				t.Errorf("body = %q, want %q", m.Body, tt.body)
			}
		})
	}
}

func FuzzParseTestMessage(f *testing.F) {
	for _, tt := range testMessageCases {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseTestMessage("msg.json", b)
		if err != nil {
			if !strings.Contains(err.Error(), "msg.json") {
				t.Errorf("error %q does not name the file", err)
			}
			return
		}
		_ = m.Source()
		_ = m.Size()
	})
}
