package main

import (
	"bytes"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNotInit(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := notInit([]string{"version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "tinyedge-boot "+version+"\n") {
		t.Errorf("version: code %d, stdout %q", code, out.String())
	}
	out.Reset()
	if code := notInit(nil, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "PID 1") || out.Len() != 0 {
		t.Errorf("no arguments: code %d, stderr %q; want a usage error saying it is PID 1's", code, errOut.String())
	}
}

func TestDataLabel(t *testing.T) {
	tests := []struct {
		args []string
		want string
		err  bool
	}{
		{nil, "", false},
		{[]string{"quiet"}, "", false},
		{[]string{"init"}, "", false},
		{[]string{"init", "--data-label", "gw-data", "update", "status"}, "gw-data", false},
		{[]string{"stray", "init", "-data-label=x"}, "x", false},
		{[]string{"init", "update", "--data-label", "not-init's"}, "", false},
		{[]string{"init", "--bogus"}, "", true},
	}
	for _, tt := range tests {
		got, err := dataLabel(tt.args)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("dataLabel(%q) = %q, %v; want %q, error %v", tt.args, got, err, tt.want, tt.err)
		}
	}
}
