package hubsim

import (
	"errors"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	ids := []string{"gw", "gw/$edgeAgent", "gw/$edgeHub", "gw/SimulatedTemperatureSensor", "gw/filtermodule", "dev1", "other", "other/filter2"}
	for _, tt := range []struct {
		target, device, module string
		err                    error
		mention                string
	}{
		{target: "gw/filtermodule", device: "gw", module: "filtermodule"},
		{target: "filtermodule", device: "gw", module: "filtermodule"},
		{target: "dev1", device: "dev1"},
		{target: "gw", device: "gw"},
		{target: "FilterMod", device: "gw", module: "filtermodule"},
		{target: "simtemp", device: "gw", module: "SimulatedTemperatureSensor"},
		{target: "Temperature", device: "gw", module: "SimulatedTemperatureSensor"},
		{target: "edgeHub", device: "gw", module: "$edgeHub"},
		{target: "filter", err: ErrAmbiguous, mention: "gw/filtermodule, other/filter2"},
		{target: "edge", err: ErrAmbiguous, mention: "gw/$edgeAgent, gw/$edgeHub"},
		{target: "gw/nothing", err: ErrNotFound, mention: "known:"},
		{target: "zzz", err: ErrNotFound, mention: "gw/filtermodule"},
		{target: "", err: errors.New("")},
	} {
		d, m, err := Resolve(ids, tt.target)
		if tt.err != nil {
			if err == nil || (tt.err.Error() != "" && !errors.Is(err, tt.err)) || !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("Resolve(%q) = %s/%s, %v; want %v mentioning %q", tt.target, d, m, err, tt.err, tt.mention)
			}
			continue
		}
		if err != nil || d != tt.device || m != tt.module {
			t.Errorf("Resolve(%q) = %q/%q, %v; want %q/%q", tt.target, d, m, err, tt.device, tt.module)
		}
	}
	// Only one filter module: a substring is enough.
	if d, m, err := Resolve([]string{"gw", "gw/filtermodule", "gw/SimulatedTemperatureSensor"}, "filter"); err != nil || d != "gw" || m != "filtermodule" {
		t.Errorf("Resolve(filter) = %s/%s, %v", d, m, err)
	}
}
