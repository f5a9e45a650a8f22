package bundle

import (
	"strings"
	"testing"
)

func TestParseVersion(t *testing.T) {
	valid := []struct {
		in   string
		want string
	}{
		{"0.0.0", "0.0.0"},
		{"1.2.3", "1.2.3"},
		{"v1.2.3", "1.2.3"},
		{"10.20.30", "10.20.30"},
		{"1.0.0-alpha", "1.0.0-alpha"},
		{"1.0.0-alpha.1", "1.0.0-alpha.1"},
		{"1.0.0-0.3.7", "1.0.0-0.3.7"},
		{"1.0.0-x.7.z.92", "1.0.0-x.7.z.92"},
		{"1.0.0-x-y-z.--", "1.0.0-x-y-z.--"},
		{"1.0.0-alpha+001", "1.0.0-alpha+001"},
		{"1.0.0+20130313144700", "1.0.0+20130313144700"},
		{"1.0.0-beta+exp.sha.5114f85", "1.0.0-beta+exp.sha.5114f85"},
		{"18446744073709551615.0.0", "18446744073709551615.0.0"},
	}
	for _, tc := range valid {
		t.Run(tc.in, func(t *testing.T) {
			v, err := ParseVersion(tc.in)
			if err != nil {
				t.Fatalf("ParseVersion(%q): %v", tc.in, err)
			}
			if got := v.String(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	invalid := []struct{ in, why string }{
		{"", "empty"},
		{"v", "empty"},
		{"1", "three numbers"},
		{"1.2", "three numbers"},
		{"1.2.3.4", "three numbers"},
		{"01.2.3", "leading zero"},
		{"1.02.3", "leading zero"},
		{"1.2.03", "leading zero"},
		{"1.2.3-01", "leading zero"},
		{"1.2.-3", "not a number"},
		{"a.b.c", "not a number"},
		{"1.2.3-", "prerelease"},
		{"1.2.3-a..b", "prerelease"},
		{"1.2.3-a_b", "prerelease"},
		{"1.2.3+", "build metadata"},
		{"1.2.3+a+b", "build metadata"},
		{"1.2.3+a..b", "build metadata"},
		{"18446744073709551616.0.0", "too large"},
		{" 1.2.3", "not a number"},
		{"dev", "three numbers"},
		{"V1.2.3", "not a number"},
	}
	for _, tc := range invalid {
		t.Run("bad/"+tc.in, func(t *testing.T) {
			_, err := ParseVersion(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.why) {
				t.Errorf("ParseVersion(%q) = %v, want an error saying %q", tc.in, err, tc.why)
			}
		})
	}
}

func TestCompareVersions(t *testing.T) {
	// Ascending, from semver §11 and then some.
	order := []string{
		"0.9.9",
		"1.0.0-0",
		"1.0.0-2",
		"1.0.0-10",
		"1.0.0-99999999999999999999999",
		"1.0.0-alpha",
		"1.0.0-alpha.1",
		"1.0.0-alpha.beta",
		"1.0.0-beta",
		"1.0.0-beta.2",
		"1.0.0-beta.11",
		"1.0.0-rc.1",
		"1.0.0",
		"1.0.1",
		"1.1.0",
		"1.10.0",
		"2.0.0",
		"10.0.0",
	}
	for i := range order {
		for j := range order {
			a, _ := ParseVersion(order[i])
			b, _ := ParseVersion(order[j])
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := a.Compare(b); got != want {
				t.Errorf("Compare(%s, %s) = %d, want %d", order[i], order[j], got, want)
			}
		}
	}
	equal := [][2]string{
		{"1.0.0+a", "1.0.0+b"},
		{"v1.0.0", "1.0.0"},
		{"1.0.0-rc.1+build.5", "1.0.0-rc.1"},
	}
	for _, p := range equal {
		a, _ := ParseVersion(p[0])
		b, _ := ParseVersion(p[1])
		if got := a.Compare(b); got != 0 {
			t.Errorf("Compare(%s, %s) = %d, want 0", p[0], p[1], got)
		}
	}
}
