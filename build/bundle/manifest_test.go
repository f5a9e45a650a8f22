package bundle

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckTarget(t *testing.T) {
	cases := []struct {
		product, goarch, goarm string // the bundle's
		devArch, devArm        string // the device's
		want                   string // "" for accepted
	}{
		{"tinyedge", "arm64", "", "arm64", "", ""},
		{"tinyedge", "arm", "6", "arm", "6", ""},
		{"tinyedge", "arm", "6", "arm", "7", ""},
		{"tinyedge", "arm", "5", "arm", "7", ""},
		{"tinyedge", "arm", "6", "arm", "7,hardfloat", ""},
		{"tinyedge", "arm", "7", "arm", "6", "built for linux/arm GOARM=7, this device is linux/arm GOARM=6; an ARMv7 binary does not run on it"},
		{"tinyedge", "arm", "7", "arm", "", "this device is linux/arm GOARM="},
		{"tinyedge", "arm64", "", "arm", "6", "bundle: built for linux/arm64, this device is linux/arm GOARM=6"},
		{"tinyedge", "arm", "6", "arm64", "", "built for linux/arm GOARM=6, this device is linux/arm64"},
		{"tinyedge", "amd64", "", "arm64", "", "built for linux/amd64, this device is linux/arm64"},
		{"otherthing", "arm64", "", "arm64", "", `bundle is for product "otherthing", this device runs tinyedge`},
	}
	for _, tc := range cases {
		m := Manifest{Product: tc.product, GOARCH: tc.goarch, GOARM: tc.goarm}
		err := m.CheckTarget(tc.devArch, tc.devArm)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s/%s on %s/%s: %v, want accepted", tc.goarch, tc.goarm, tc.devArch, tc.devArm, err)
			}
			continue
		}
		if !errors.Is(err, ErrWrongTarget) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s/%s on %s/%s: %v, want ErrWrongTarget saying %q", tc.goarch, tc.goarm, tc.devArch, tc.devArm, err, tc.want)
		}
	}
}

func TestCheckUpgrade(t *testing.T) {
	cases := []struct {
		version, min   string // the bundle's
		current        string
		allowDowngrade bool
		want           error
		msg            string
	}{
		{"1.3.0", "", "1.2.0", false, nil, ""},
		{"1.3.0", "1.0.0", "1.2.0", false, nil, ""},
		{"1.3.0", "1.2.0", "1.2.0", false, nil, ""},
		{"1.2.0", "", "1.2.0", false, nil, "reinstalling the same version"},
		{"1.2.0+b2", "", "1.2.0+b1", false, nil, "build metadata is ignored"},
		{"v1.3.0", "", "v1.2.0", false, nil, ""},
		{"1.3.0", "", "1.3.0-rc.2", false, nil, "release after its candidate"},
		{"1.3.0-rc.1", "", "1.3.0-rc.2", false, ErrDowngrade, "1.3.0-rc.1 is older than the running 1.3.0-rc.2"},
		{"1.2.0", "", "1.3.0", false, ErrDowngrade, "version 1.2.0 is older than the running 1.3.0; allow downgrades explicitly"},
		{"1.2.0", "", "1.3.0", true, nil, ""},
		{"2.0.0", "1.5.0", "1.2.0", false, ErrTooOld, "version 2.0.0 updates only from 1.5.0 or later, this device runs 1.2.0; apply an intermediate update first"},
		{"2.0.0", "1.5.0", "1.5.0-rc.1", true, ErrTooOld, "updates only from 1.5.0"},
		{"1.0.0", "", "dev", false, nil, `the running version "dev"`},
	}
	for _, tc := range cases {
		m := Manifest{Version: tc.version, MinVersion: tc.min}
		err := m.CheckUpgrade(tc.current, tc.allowDowngrade)
		switch {
		case tc.current == "dev":
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("from %s: %v, want an error saying %q", tc.current, err, tc.msg)
			}
		case tc.want == nil:
			if err != nil {
				t.Errorf("%s (min %q) from %s (%s): %v, want accepted", tc.version, tc.min, tc.current, tc.msg, err)
			}
		case !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg):
			t.Errorf("%s (min %q) from %s: %v, want %v saying %q", tc.version, tc.min, tc.current, err, tc.want, tc.msg)
		}
	}
}
