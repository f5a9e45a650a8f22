package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/cmd/tinyedge/appliance"
)

func TestInitRefusesToRunOutsidePID1(t *testing.T) {
	_, errOut, code := runCLI(t, "init")
	if code != 2 || !strings.Contains(errOut, "PID 1") || !strings.Contains(errOut, "tinyedge run") {
		t.Errorf("code %d, stderr %q; want a usage error pointing at tinyedge run", code, errOut)
	}
}

func TestInitArgsOutsidePID1AreLeftAlone(t *testing.T) {
	if got := initArgs([]string{"run", "--upstream", "console"}); !slices.Equal(got, []string{"run", "--upstream", "console"}) {
		t.Errorf("initArgs = %q", got)
	}
}

func TestServiceArgv(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		command  []string
		watchdog string
		want     []string
	}{
		{nil, "", []string{self, "run", "--upstream", "console", "--data-dir", "/data", "--health-window", "2m0s"}},
		{[]string{"run", "--data-dir=/x"}, "/dev/watchdog", []string{self, "run", "--data-dir=/x", "--health-window", "2m0s", "--watchdog", "/dev/watchdog"}},
		{[]string{"update", "apply", "/media/update.bundle"}, "/dev/watchdog", []string{self, "update", "apply", "/media/update.bundle", "--data-dir", "/data"}},
		{[]string{"version"}, "", []string{self, "version"}},
		{[]string{"/media/crashtest", "write", "-dir", "/data"}, "/dev/watchdog", []string{"/media/crashtest", "write", "-dir", "/data"}},
	}
	for _, tt := range tests {
		if got := serviceArgv(tt.command, 2*time.Minute, tt.watchdog); !slices.Equal(got, tt.want) {
			t.Errorf("serviceArgv(%q) = %q, want %q", tt.command, got, tt.want)
		}
	}
}

func TestApplianceConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(p, []byte(`hostname = "gw-7"

[appliance]
service = ["run", "--upstream", "console"]
health_window = "45s"
watchdog = "off"
time_servers = ["127.0.0.1:1123"]

[[appliance.interfaces]]
name = "eth0"
dhcp = true

[[appliance.interfaces]]
name = "eth1"
address = "192.168.7.1/24"
dns = ["192.168.7.254"]
`), 0o644)
	c, err := loadConfig(p, true)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Appliance
	if c.Hostname != "gw-7" || a.HealthWindow.Duration != 45*time.Second || watchdogDevice(a.Watchdog) != "" || !slices.Equal(a.TimeServers, []string{"127.0.0.1:1123"}) {
		t.Errorf("got %+v", c)
	}
	ifs := interfaces(a.Interfaces)
	want := []appliance.Interface{{Name: "eth0", DHCP: true}, {Name: "eth1", Address: "192.168.7.1/24", DNS: []string{"192.168.7.254"}}}
	if len(ifs) != 2 || ifs[0].Name != want[0].Name || !ifs[0].DHCP || ifs[1].Address != want[1].Address || !slices.Equal(ifs[1].DNS, want[1].DNS) {
		t.Errorf("interfaces %+v, want %+v", ifs, want)
	}
	if d := interfaces(nil); len(d) != 1 || d[0].Name != "eth0" || !d[0].DHCP {
		t.Errorf("default interfaces %+v, want DHCP on eth0", d)
	}

	os.WriteFile(p, []byte("[appliance]\nhealth_windw = \"45s\"\n"), 0o644)
	if _, err := loadConfig(p, true); err == nil || !strings.Contains(err.Error(), "appliance.health_windw") {
		t.Errorf("err = %v, want the misspelt key named", err)
	}
}

func TestStoreTrustsTheClockOnceInitMarkedItSynced(t *testing.T) {
	t.Setenv(clockSyncedEnv, "")
	if storeClockTrust() != nil {
		t.Fatal("outside the appliance the store's own rule must apply")
	}
	marker := filepath.Join(t.TempDir(), "clock-synced")
	t.Setenv(clockSyncedEnv, marker)
	trusted := storeClockTrust()
	now := time.Now()
	if trusted(now) {
		t.Fatal("trusted before the clock was synced")
	}
	os.WriteFile(marker, []byte("ntp\n"), 0o644)
	deadline := time.Now().Add(5 * time.Second) // the marker is looked for once a second
	for !trusted(now) {
		if time.Now().After(deadline) {
			t.Fatal("not trusted after the marker appeared")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if trusted(time.Unix(0, 0)) {
		t.Error("1970 trusted: a synced clock still must read after store.TrustedAfter")
	}
}

// Callers that look at once, the upstream link's identities connecting
// together, all see a marker that is there: the once-a-second limit on
// looking must not answer no to one while another is still looking.
func TestClockTrustConcurrentFirstLooks(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "clock-synced")
	if err := os.WriteFile(marker, []byte("rtc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(clockSyncedEnv, marker)
	now := time.Now()
	for round := 0; round < 50; round++ {
		trusted := clockTrust()
		start := make(chan struct{})
		var wg sync.WaitGroup
		var no atomic.Int32
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if !trusted(now) {
					no.Add(1)
				}
			}()
		}
		close(start)
		wg.Wait()
		if n := no.Load(); n > 0 {
			t.Fatalf("round %d: %d of 8 callers told the clock is untrusted with the marker there", round, n)
		}
	}
}

func TestServiceDoesNotInheritTheHandoff(t *testing.T) {
	env := appliance.Handoff{Stage: "1.0.0", Slot: "b", Trial: true}.Environ([]string{"PATH=/bin", "TINYEDGE_BOOT_STAGEX=kept"})
	got := withoutHandoff(env)
	if want := []string{"PATH=/bin", "TINYEDGE_BOOT_STAGEX=kept"}; !slices.Equal(got, want) {
		t.Errorf("withoutHandoff(%q) = %q, want %q", env, got, want)
	}
}
