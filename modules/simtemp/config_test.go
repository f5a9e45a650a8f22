package simtemp

import (
	"strings"
	"testing"
	"time"
)

type envMap map[string]string

func (e envMap) Env(k string) (string, bool) { v, ok := e[k]; return v, ok }

func TestReadConfig(t *testing.T) {
	tests := []struct {
		name    string
		env     envMap
		want    config
		wantErr string // substring; "" means success
	}{
		{name: "defaults", env: envMap{}, want: config{messageCount: 500, interval: 5 * time.Second, params: defaultParams()}},
		{name: "unlimited", env: envMap{"MessageCount": "-1"}, want: config{messageCount: -1, interval: 5 * time.Second, params: defaultParams()}},
		{name: "count and delay", env: envMap{"MessageCount": " 7 ", "MessageDelay": "00:00:00.25"}, want: config{messageCount: 7, interval: 250 * time.Millisecond, params: defaultParams()}},
		{name: "range", env: envMap{"machineTempMin": "10", "machineTempMax": "50.5", "machinePressureMin": "0", "machinePressureMax": "2", "ambientTemp": "18", "ambientHumidity": "40"},
			want: config{messageCount: 500, interval: 5 * time.Second, params: params{10, 50.5, 0, 2, 18, 40}}},
		{name: "count not a number", env: envMap{"MessageCount": "abc"}, wantErr: `MessageCount: "abc" is not an integer`},
		{name: "count fractional", env: envMap{"MessageCount": "2.5"}, wantErr: "MessageCount"},
		{name: "delay in bare seconds", env: envMap{"MessageDelay": "5"}, wantErr: `MessageDelay: "5" is not a TimeSpan`},
		{name: "delay zero", env: envMap{"MessageDelay": "00:00:00"}, wantErr: "MessageDelay"},
		{name: "temperature not a number", env: envMap{"machineTempMin": "warm"}, wantErr: `machineTempMin: "warm" is not a number`},
		{name: "infinite", env: envMap{"ambientTemp": "Inf"}, wantErr: "ambientTemp"},
		{name: "humidity fractional", env: envMap{"ambientHumidity": "25.5"}, wantErr: "ambientHumidity"},
		{name: "empty range", env: envMap{"machineTempMax": "21"}, wantErr: "machineTempMax: 21 must be greater than machineTempMin (21)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readConfig(tc.env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("readConfig() error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("readConfig() error = %v", err)
			}
			if got != tc.want {
				t.Errorf("readConfig() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseTimeSpan(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"00:00:05", 5 * time.Second, true},
		{"00:01", time.Minute, true},
		{"01:02:03", time.Hour + 2*time.Minute + 3*time.Second, true},
		{"00:00:00.5", 500 * time.Millisecond, true},
		{"00:00:01.0000001", time.Second + 100*time.Nanosecond, true},
		{"2.03:00:00", 51 * time.Hour, true},
		{"-00:00:01", -time.Second, true},
		{"5", 0, false},
		{"", 0, false},
		{"00:60:00", 0, false},
		{"24:00:00", 0, false},
		{"00:00:61", 0, false},
		{"a:b:c", 0, false},
		{"00:00:00.12345678", 0, false},
		{"1:2:3:4", 0, false},
	}
	for _, tc := range tests {
		got, err := parseTimeSpan(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseTimeSpan(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestSettingsApply(t *testing.T) {
	def := settings{sendData: true, interval: 5 * time.Second}
	cur := settings{sendData: false, interval: time.Second}
	tests := []struct {
		name    string
		patch   map[string]any
		want    settings
		wantErr bool
	}{
		{"nothing", map[string]any{"other": 1.0}, cur, false},
		{"fractional interval", map[string]any{"SendInterval": 0.01}, settings{false, 10 * time.Millisecond}, false},
		{"int interval", map[string]any{"SendInterval": 3}, settings{false, 3 * time.Second}, false},
		{"string interval", map[string]any{"SendInterval": "2"}, settings{false, 2 * time.Second}, false},
		{"zero interval", map[string]any{"SendInterval": 0.0}, cur, true},
		{"negative interval", map[string]any{"SendInterval": -1.0}, cur, true},
		{"bool interval", map[string]any{"SendInterval": true}, cur, true},
		{"deleted interval", map[string]any{"SendInterval": nil}, settings{false, 5 * time.Second}, false},
		{"send data", map[string]any{"SendData": true}, settings{true, time.Second}, false},
		{"send data string", map[string]any{"SendData": "TRUE"}, settings{true, time.Second}, false},
		{"send data number", map[string]any{"SendData": 1.0}, cur, true},
		{"deleted send data", map[string]any{"SendData": nil}, settings{true, time.Second}, false},
		{"both, one bad", map[string]any{"SendData": true, "SendInterval": "soon"}, settings{true, time.Second}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := cur.apply(tc.patch, def)
			if got != tc.want || (len(errs) > 0) != tc.wantErr {
				t.Errorf("apply(%v) = %+v, %v; want %+v, errors %v", tc.patch, got, errs, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseControl(t *testing.T) {
	tests := []struct {
		body    string
		want    []string
		wantErr bool
	}{
		{`{"command":"reset"}`, []string{"reset"}, false},
		{`{"command":"Reset"}`, []string{"reset"}, false},
		{`{"Command":"RESET"}`, []string{"reset"}, false},
		{`{"command":0}`, []string{"reset"}, false},
		{`{"command":1}`, []string{"nooperation"}, false},
		{` [{"command":"reset"},{"command":"noOperation"}] `, []string{"reset", "nooperation"}, false},
		{`{"command":"explode"}`, []string{"explode"}, false},
		{`{"command":7}`, []string{"7"}, false},
		{`{}`, nil, true},
		{`{"command":{}}`, nil, true},
		{`not json`, nil, true},
		{``, nil, true},
		{`[1]`, nil, true},
	}
	for _, tc := range tests {
		got, err := parseControl([]byte(tc.body))
		if (err != nil) != tc.wantErr || strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("parseControl(%q) = %q, %v; want %q, error %v", tc.body, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestNewGUID(t *testing.T) {
	a, b := newGUID(), newGUID()
	if !guidRE.MatchString(a) || a == b {
		t.Errorf("newGUID() = %q, %q; want two different version 4 GUIDs", a, b)
	}
}
