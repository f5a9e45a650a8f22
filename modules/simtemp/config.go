package simtemp

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/twin"
)

// Names of the settings, as the original spells them.
const (
	envMessageCount = "MessageCount"
	envMessageDelay = "MessageDelay"

	desiredSendInterval = "SendInterval"
	desiredSendData     = "SendData"
)

// Defaults of the original.
const (
	DefaultMessageCount = 500
	DefaultSendInterval = 5 * time.Second
)

// minInterval is the shortest SendInterval accepted.
const minInterval = time.Millisecond

// envReader is the part of the module client that settings come from.
type envReader interface {
	Env(key string) (string, bool)
}

// config is what a run reads from its environment.
type config struct {
	messageCount int // negative: no limit
	interval     time.Duration
	params       params
}

// CheckEnv checks a deployment entry's env settings without running the
// module; a wrong setting is a *hub.EnvError naming it.
func CheckEnv(env map[string]string) error {
	_, err := readConfig(hub.MapEnv(env))
	return err
}

func readConfig(env envReader) (config, error) {
	cfg := config{messageCount: DefaultMessageCount, interval: DefaultSendInterval, params: defaultParams()}
	if v, ok := env.Env(envMessageCount); ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return config{}, &hub.EnvError{Key: envMessageCount, Err: fmt.Errorf("%q is not an integer; set it to the number of messages to send, or -1 for no limit", v)}
		}
		cfg.messageCount = n
	}
	if v, ok := env.Env(envMessageDelay); ok {
		d, err := parseTimeSpan(v)
		if err != nil {
			return config{}, &hub.EnvError{Key: envMessageDelay, Err: err}
		}
		if d < minInterval {
			return config{}, &hub.EnvError{Key: envMessageDelay, Err: fmt.Errorf("%q is shorter than %s", v, minInterval)}
		}
		cfg.interval = d
	}
	p := &cfg.params
	for _, f := range []struct {
		name string
		dst  *float64
	}{
		{"machineTempMin", &p.machineTempMin},
		{"machineTempMax", &p.machineTempMax},
		{"machinePressureMin", &p.machinePressureMin},
		{"machinePressureMax", &p.machinePressureMax},
		{"ambientTemp", &p.ambientTemp},
	} {
		v, ok := env.Env(f.name)
		if !ok {
			continue
		}
		x, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
			return config{}, &hub.EnvError{Key: f.name, Err: fmt.Errorf("%q is not a number", v)}
		}
		*f.dst = x
	}
	if v, ok := env.Env("ambientHumidity"); ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return config{}, &hub.EnvError{Key: "ambientHumidity", Err: fmt.Errorf("%q is not an integer percentage", v)}
		}
		p.ambientHumidity = n
	}
	if p.machineTempMax <= p.machineTempMin {
		return config{}, &hub.EnvError{Key: "machineTempMax", Err: fmt.Errorf("%g must be greater than machineTempMin (%g)", p.machineTempMax, p.machineTempMin)}
	}
	return cfg, nil
}

// parseTimeSpan reads a .NET TimeSpan in the forms configuration files
// use: [-][d.]hh:mm[:ss[.fffffff]]. A bare number, which .NET would take as
// days, is refused: it is almost always meant as seconds.
func parseTimeSpan(s string) (time.Duration, error) {
	bad := func() (time.Duration, error) {
		return 0, fmt.Errorf("%q is not a TimeSpan; write it as hh:mm:ss, e.g. 00:00:05 for five seconds", s)
	}
	v := strings.TrimSpace(s)
	neg := strings.HasPrefix(v, "-")
	v = strings.TrimPrefix(v, "-")
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return bad()
	}
	var days int64
	if d, h, ok := strings.Cut(parts[0], "."); ok {
		n, err := strconv.ParseInt(d, 10, 32)
		if err != nil || n < 0 {
			return bad()
		}
		days, parts[0] = n, h
	}
	hours, err1 := strconv.ParseUint(parts[0], 10, 8)
	mins, err2 := strconv.ParseUint(parts[1], 10, 8)
	if err1 != nil || err2 != nil || hours > 23 || mins > 59 {
		return bad()
	}
	var secs float64
	if len(parts) == 3 {
		whole, frac, _ := strings.Cut(parts[2], ".")
		w, err := strconv.ParseUint(whole, 10, 8)
		if err != nil || w > 59 || len(frac) > 7 {
			return bad()
		}
		secs = float64(w)
		if frac != "" {
			f, err := strconv.ParseUint(frac, 10, 32)
			if err != nil {
				return bad()
			}
			secs += float64(f) / math.Pow10(len(frac))
		}
	}
	d := time.Duration(days)*24*time.Hour + time.Duration(hours)*time.Hour +
		time.Duration(mins)*time.Minute + time.Duration(secs*float64(time.Second))
	if neg {
		d = -d
	}
	return d, nil
}

// settings are the desired-property settings of a run.
type settings struct {
	sendData bool
	interval time.Duration
}

// reported is how the settings appear in the reported properties, as the
// original writes them: SendInterval in seconds.
func (s settings) reported() map[string]any {
	return map[string]any{desiredSendData: s.sendData, desiredSendInterval: s.interval.Seconds()}
}

// apply returns s changed by the members of a desired document or patch
// that it knows, falling back to def for members set to null (deleted),
// and the problems with members it had to ignore.
func (s settings) apply(doc map[string]any, def settings) (settings, []error) {
	var errs []error
	if v, ok := doc[desiredSendInterval]; ok {
		switch d, err := intervalValue(v); {
		case err != nil:
			errs = append(errs, fmt.Errorf("desired %s: %w", desiredSendInterval, err))
		case v == nil:
			s.interval = def.interval
		default:
			s.interval = d
		}
	}
	if v, ok := doc[desiredSendData]; ok {
		switch b, err := boolValue(v); {
		case err != nil:
			errs = append(errs, fmt.Errorf("desired %s: %w", desiredSendData, err))
		case v == nil:
			s.sendData = def.sendData
		default:
			s.sendData = b
		}
	}
	return s, errs
}

// intervalValue reads a SendInterval in seconds: a number, or a string
// holding one (the original's conversion accepts both).
func intervalValue(v any) (time.Duration, error) {
	if v == nil {
		return 0, nil
	}
	secs, ok := twin.Number(v)
	if !ok {
		return 0, fmt.Errorf("%v (%T) is not a number of seconds", v, v)
	}
	if math.IsNaN(secs) || secs*float64(time.Second) < float64(minInterval) || secs > float64(math.MaxInt64/time.Second) {
		return 0, fmt.Errorf("%g s is out of range (%s or more)", secs, minInterval)
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// boolValue reads a SendData: a boolean, or a string holding one.
func boolValue(v any) (bool, error) {
	switch x := v.(type) {
	case nil:
		return false, nil
	case bool:
		return x, nil
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(x))
		if err != nil {
			return false, fmt.Errorf("%q is not true or false", x)
		}
		return b, nil
	default:
		return false, fmt.Errorf("%v (%T) is not true or false", v, v)
	}
}
