//go:build system

// The full-system tests: the appliance image (make image) booted under
// qemu-system-aarch64 -M virt, with power cuts. Run them with
// `make test-system`. The guest's only links to the host are its serial
// console (read here) and QEMU's user network with restrict=on: it
// reaches nothing but, in the boot test, the one explicit forward from
// 10.0.2.100:8883 to the hubsim this test runs on 127.0.0.1.
package image_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/hub/hubsim"
)

var (
	repo    = filepath.Join("..", "..")
	imgDir  = envOr("TINYEDGE_IMAGE", filepath.Join(repo, "dist", "image"))
	workDir = envOr("TINYEDGE_IMAGE_WORK", filepath.Join(repo, "dist", "image-work"))
	logDir  = envOr("TINYEDGE_SYSTEM_LOGS", filepath.Join(repo, "dist", "system-test"))
)

// envOr returns the environment variable k, or def, as an absolute path
// (qemu.sh runs from the repository's root).
func envOr(k, def string) string {
	v := os.Getenv(k)
	if v == "" {
		v = def
	}
	if abs, err := filepath.Abs(v); err == nil {
		return abs
	}
	return v
}

// testConfig is the device config the tests put on their data disks: a
// short health window so updates confirm or roll back quickly, and a
// status line for the memory figures.
const testConfig = `hostname = "tinyedge-test"

[appliance]
service = ["run", "--upstream", "console"]
health_window = "40s"
status_interval = "15s"

[[appliance.interfaces]]
name = "eth0"
dhcp = true
`

// hubAddr is where the guest reaches the hubsim of the boot test: a
// guestfwd of QEMU's user network to the hubsim's port on 127.0.0.1. It
// is also the hubsim's host name, so its server certificate holds it as
// an IP address and the guest verifies it without any name lookup.
const (
	hubHost = "10.0.2.100"
	hubPort = "8883"
)

// hubConfig is the boot test's device config: testConfig's appliance,
// provisioned on the hubsim (connection string and CA, with the MQTT port
// the guest dials), and the service `tinyedge run` with the upstream
// the provisioning asks for.
func hubConfig(connStr string) string {
	return strings.Replace(testConfig, `service = ["run", "--upstream", "console"]`, `service = ["run"]`, 1) + fmt.Sprintf(`
[provisioning]
connection_string = %q

[upstream]
ca_file = "/data/hubsim-ca.pem"
port = %s
`, connStr, hubPort)
}

// line is one line of the serial console and when it arrived.
type line struct {
	at   time.Duration // since QEMU started
	text string
}

// vm is one boot of the image under QEMU, -no-reboot: a reboot or power
// off of the guest ends it.
type vm struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	start time.Time // when QEMU started
	mu    sync.Mutex
	lines []line
	done  chan struct{}
	next  int // first line waitFor looks at
}

// boot starts QEMU on the data disk, with media as a second, read-only
// disk if not "", extra kernel command line text and extra QEMU
// arguments.
func boot(t *testing.T, name, data, media, cmdline string, qemuArgs ...string) *vm {
	t.Helper()
	return bootNet(t, name, data, media, cmdline, "", qemuArgs...)
}

// bootNet is boot with netOpts added to QEMU's user network (qemu.sh's
// NETOPTS): the boot test's forward to its hubsim.
func bootNet(t *testing.T, name, data, media, cmdline, netOpts string, qemuArgs ...string) *vm {
	t.Helper()
	args := append([]string{"-no-reboot"}, qemuArgs...)
	if media != "" {
		args = append(args, "-drive", "file="+media+",if=none,id=media,format=raw,readonly=on", "-device", "virtio-blk-device,drive=media")
	}
	cmd := exec.Command(filepath.Join(repo, "scripts", "qemu.sh"), args...)
	cmd.Env = append(os.Environ(), "DATA="+data, "APPEND="+cmdline, "IMG="+imgDir, "NETOPTS="+netOpts)
	return startVM(t, name, cmd)
}

// startVM starts a QEMU command and reads its console.
func startVM(t *testing.T, name string, cmd *exec.Cmd) *vm {
	t.Helper()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	v := &vm{t: t, name: name, cmd: cmd, start: start, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var reading sync.WaitGroup
	reading.Add(1)
	go func() {
		defer reading.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			s := strings.TrimRight(sc.Text(), "\r")
			at := time.Since(start)
			fmt.Fprintf(logf, "%8.3f %s\n", at.Seconds(), s)
			v.mu.Lock()
			v.lines = append(v.lines, line{at, s})
			v.mu.Unlock()
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		cmd.Wait()
		pw.Close()
		reading.Wait()
		logf.Close()
		close(v.done)
	}()
	t.Cleanup(v.kill)
	return v
}

// waitFor waits for a line matching re after the last one found, and
// returns it with its submatches.
func (v *vm) waitFor(re string, timeout time.Duration) (line, []string) {
	v.t.Helper()
	return v.wait(re, timeout, true)
}

// waitSeen waits for a line matching re anywhere in the console, without
// moving where waitFor looks next: for lines whose order with the others
// is not fixed.
func (v *vm) waitSeen(re string, timeout time.Duration) (line, []string) {
	v.t.Helper()
	return v.wait(re, timeout, false)
}

func (v *vm) wait(re string, timeout time.Duration, advance bool) (line, []string) {
	v.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(timeout)
	for {
		// Whether QEMU had ended before this look: then every line is in.
		ended := false
		select {
		case <-v.done:
			ended = true
		default:
		}
		v.mu.Lock()
		from := 0
		if advance {
			from = v.next
		}
		for i := from; i < len(v.lines); i++ {
			if m := rx.FindStringSubmatch(v.lines[i].text); m != nil {
				if advance {
					v.next = i + 1
				}
				l := v.lines[i]
				v.mu.Unlock()
				return l, m
			}
		}
		v.mu.Unlock()
		if ended {
			v.t.Fatalf("%s: QEMU ended without a line matching %q; console:\n%s", v.name, re, v.tail(40))
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("%s: no line matching %q within %s; console:\n%s", v.name, re, timeout, v.tail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// seen reports whether any line so far matches re.
func (v *vm) seen(re string) bool {
	rx := regexp.MustCompile(re)
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, l := range v.lines {
		if rx.MatchString(l.text) {
			return true
		}
	}
	return false
}

// linesFrom returns the lines from index i on.
func (v *vm) linesFrom(i int) []line {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]line(nil), v.lines[i:]...)
}

func (v *vm) tail(n int) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var b strings.Builder
	for _, l := range v.lines[max(0, len(v.lines)-n):] {
		fmt.Fprintf(&b, "  %7.2f %s\n", l.at.Seconds(), l.text)
	}
	return b.String()
}

// kill is the power cut: SIGKILL to QEMU.
func (v *vm) kill() {
	select {
	case <-v.done:
		return
	default:
	}
	v.cmd.Process.Kill()
	<-v.done
}

// waitExit waits for the guest to power off or reboot (QEMU exits).
func (v *vm) waitExit(timeout time.Duration) {
	v.t.Helper()
	select {
	case <-v.done:
	case <-time.After(timeout):
		v.t.Fatalf("%s: QEMU still running after %s; console:\n%s", v.name, timeout, v.tail(30))
	}
}

// run runs a command on the host, failing the test on error.
func run(t *testing.T, env []string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// dataDisk copies the image's data disk and puts the test config on it.
func dataDisk(t *testing.T, dir, name string) string {
	t.Helper()
	return dataDiskWith(t, dir, name, testConfig, nil)
}

// dataDiskWith copies the image's data disk and puts config and files
// (name in /data -> content) on it (debugfs writes into the ext4 image
// without mounting it).
func dataDiskWith(t *testing.T, dir, name, config string, files map[string][]byte) string {
	t.Helper()
	p := filepath.Join(dir, name+".img")
	run(t, nil, "cp", "--sparse=always", filepath.Join(imgDir, "data.img"), p)
	write := func(to string, b []byte) string {
		from := filepath.Join(dir, name+"."+to)
		if err := os.WriteFile(from, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return "write " + from + " /" + to + "\n"
	}
	script := "rm /config.toml\n" + write("config.toml", []byte(config))
	for to, b := range files {
		script += write(to, b)
	}
	sp := filepath.Join(dir, name+".debugfs")
	if err := os.WriteFile(sp, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, nil, "debugfs", "-w", "-f", sp, p)
	return p
}

// startHubsim runs an IoT Hub emulator on 127.0.0.1 for the boot test,
// named hubHost, with the device provisioned: it returns the sim and the
// boot test's data disk, provisioned on it. Its log goes to hubsim.log
// beside the consoles.
func startHubsim(t *testing.T, dir, device string) (*hubsim.Sim, string) {
	t.Helper()
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(logDir, "hubsim.log"))
	if err != nil {
		t.Fatal(err)
	}
	sim, err := hubsim.New(hubsim.Options{DataDir: filepath.Join(dir, "hubsim"), MQTTAddr: "127.0.0.1:0", Hostname: hubHost,
		Logger: slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		logf.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sim.Close()
		logf.Close()
	})
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	id, err := sim.AddDevice(device)
	if err != nil {
		t.Fatal(err)
	}
	disk := dataDiskWith(t, dir, "boot", hubConfig(sim.ConnectionString(id)), map[string][]byte{"hubsim-ca.pem": sim.CAPEM()})
	return sim, disk
}

// sensorOutput is the quickstart sensor's output: the hub forwards its
// messages on the device's connection with it as $.on (the sensor has no
// cloud identity of its own, so the hubsim stamps no module on them).
const sensorOutput = "temperatureOutput"

// fromSensor reports whether the hubsim's event is one of the quickstart
// sensor's messages sent by device.
func fromSensor(e hubsim.Event, device string) bool {
	return e.DeviceID == device && e.System.ConnectionDeviceID == device && e.System.OutputName == sensorOutput
}

// firstEvent waits for the first of the quickstart sensor's messages the
// hubsim received from device, and returns it with when it arrived.
func firstEvent(ctx context.Context, sim *hubsim.Sim, device string) (hubsim.Event, time.Time, error) {
	next := int64(0)
	for {
		evs, n, more := sim.Events(next)
		for _, e := range evs {
			if fromSensor(e, device) {
				return e, time.Now(), nil
			}
		}
		next = n
		select {
		case <-more:
		case <-ctx.Done():
			return hubsim.Event{}, time.Time{}, fmt.Errorf("no event from %s with $.on=%s: %w", device, sensorOutput, ctx.Err())
		}
	}
}

// mediaDisk makes an ext4 disk labelled tinyedge-media holding files
// (name in the disk -> path on the host).
func mediaDisk(t *testing.T, dir, name string, files map[string]string) string {
	t.Helper()
	root := filepath.Join(dir, name+".d")
	os.MkdirAll(root, 0o755)
	var size int64 = 8 << 20
	for to, from := range files {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, to), b, 0o755); err != nil {
			t.Fatal(err)
		}
		size += int64(len(b)) * 2
	}
	p := filepath.Join(dir, name+".img")
	run(t, nil, "mkfs.ext4", "-q", "-F", "-L", "tinyedge-media", "-d", root, p, strconv.FormatInt(size>>20+1, 10)+"M")
	return p
}

// artifacts builds what the tests install: tinyedge 2.0.0 and the
// crashing 3.0.0 for arm64, their signed bundles, a tampered bundle and
// the store's crash-test program.
type artifacts struct {
	v2, v3, v4, tampered, crashtest string
	crashing                        string // the program of 3.0.0
}

func build(t *testing.T, dir string) artifacts {
	t.Helper()
	arm := []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64"}
	a := artifacts{crashtest: filepath.Join(dir, "crashtest")}
	v2bin, v3bin, v4bin := filepath.Join(dir, "tinyedge-2.0.0"), filepath.Join(dir, "crashing-3.0.0"), filepath.Join(dir, "tinyedge-4.0.0")
	run(t, arm, "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=2.0.0", "-o", v2bin, "../../cmd/tinyedge")
	run(t, arm, "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=4.0.0", "-o", v4bin, "../../cmd/tinyedge")
	run(t, arm, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", v3bin, "./testdata/crashing")
	run(t, arm, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", a.crashtest, "../../store/internal/crashtest/cmd/crashtest")
	host := filepath.Join(workDir, "tinyedge-host")
	key := filepath.Join(workDir, "dev.key")
	a.crashing = v3bin
	a.v2, a.v3, a.v4 = filepath.Join(dir, "v2.bundle"), filepath.Join(dir, "v3.bundle"), filepath.Join(dir, "v4.bundle")
	run(t, nil, host, "bundle", "create", "--key", key, "--version", "4.0.0", "--binary", v4bin, "-o", a.v4)
	run(t, nil, host, "bundle", "create", "--key", key, "--version", "2.0.0", "--binary", v2bin, "-o", a.v2)
	run(t, nil, host, "bundle", "create", "--key", key, "--version", "3.0.0", "--binary", v3bin, "-o", a.v3)
	b, err := os.ReadFile(a.v2)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40 // one bit flipped in the middle of the binary
	a.tampered = filepath.Join(dir, "tampered.bundle")
	os.WriteFile(a.tampered, b, 0o644)
	return a
}

// figures collects what the run measured, printed at the end.
type figures struct {
	mu   sync.Mutex
	text []string
}

func (f *figures) add(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.text = append(f.text, fmt.Sprintf(format, args...))
}

// crashLine is a line of the crash-test writer's report.
var crashLine = regexp.MustCompile(`^[CDA] [0-9]+$`)

// ofRun reports whether a crash-test line names a message of run: the
// writer numbers them run<<32|i.
func ofRun(text string, run int) bool {
	n, err := strconv.ParseUint(text[2:], 10, 64)
	return err == nil && n>>32 == uint64(run)
}

const (
	bootTimeout = 120 * time.Second // a loaded 2-core machine emulating arm64
	initLine    = `msg=tinyedge-boot .*binary=/init size=[0-9]+ uptime=([0-9.]+)s`
	bootLine    = `msg=boot .*slot=(\S*) version=(\S*) trial=(\S+) reason="([^"]*)"`
)

// stageLine is the boot stage's first line: /init is tinyedge-boot, its
// version and size.
const stageLine = `msg=tinyedge-boot .*version=(\S+) binary=/init size=([0-9]+) `

func TestSystem(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-aarch64"); err != nil {
		t.Fatal("qemu-system-aarch64 missing: run scripts/deps.sh")
	}
	for _, f := range []string{"vmlinuz", "initramfs.cpio.gz", "data.img"} {
		if _, err := os.Stat(filepath.Join(imgDir, f)); err != nil {
			t.Fatalf("%v: run make image first", err)
		}
	}
	started := time.Now()
	dir := t.TempDir()
	a := build(t, dir)
	fig := &figures{}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("random seed %d", seed)
	for _, f := range []string{"vmlinuz", "initramfs.cpio.gz", "data.img"} {
		fi, _ := os.Stat(filepath.Join(imgDir, f))
		fig.add("image %-18s %10d bytes", f, fi.Size())
	}
	data := dataDisk(t, dir, "data")
	var applyTook time.Duration

	ok := t.Run("boot", func(t *testing.T) {
		// The quickstart's messages go to a hubsim on this machine's
		// loopback, over TLS verified with the hubsim's CA, authenticated
		// by SAS tokens minted on the clock the guest's real-time clock
		// set (QEMU's PL031 reads the host's time).
		const device = "tinyedge-test"
		sim, disk := startHubsim(t, dir, device)
		_, port, _ := strings.Cut(sim.Addr(), "127.0.0.1:")
		v := bootNet(t, "boot", disk, "", "", "guestfwd=tcp:"+hubHost+":"+hubPort+"-tcp:127.0.0.1:"+port)
		l, m := v.waitFor(initLine, bootTimeout)
		fig.add("boot: kernel start to init (guest uptime) %ss; QEMU start to init %.2fs", m[1], l.at.Seconds())
		v.waitFor(bootLine, bootTimeout)
		v.waitSeen(`msg=network .*address=10\.0\.2\.15/24`, bootTimeout)
		hub, _ := v.waitFor(`msg="tinyedge starting" version=1\.0\.0`, bootTimeout)
		ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
		defer cancel()
		ev, at, err := firstEvent(ctx, sim, device)
		if err != nil {
			t.Fatalf("hubsim: %v; console:\n%s", err, v.tail(40))
		}
		var body struct {
			Machine struct {
				Temperature *float64 `json:"temperature"`
			} `json:"machine"`
		}
		if err := json.Unmarshal(ev.Body, &body); err != nil || body.Machine.Temperature == nil {
			t.Errorf("first event's body %s: want the sensor's machine.temperature (%v)", ev.Body, err)
		}
		fig.add("boot: QEMU start to hub starting %.2fs, to the first message in the hubsim on the host's loopback %.2fs", hub.at.Seconds(), at.Sub(v.start).Seconds())
		v.waitSeen(`msg="feeding the watchdog while the hub is healthy" device=/dev/watchdog`, bootTimeout)
		_, st := v.waitFor(`msg=status .*uptime=([0-9.]+)s initRSS="([^"]+)" .*serviceRSS="([^"]+)"`, bootTimeout)
		fig.add("rss: PID 1 %s, tinyedge run %s (quickstart, %ss after boot)", st[2], st[3], st[1])
		// The i6300esb resets the machine 30 s after its last feed (and
		// with -no-reboot QEMU would end): still up after 45 s means the
		// hub's health loop is feeding it.
		for {
			_, st = v.waitFor(`msg=status .*uptime=([0-9.]+)s`, bootTimeout)
			if up, _ := strconv.ParseFloat(st[1], 64); up >= 45 {
				break
			}
		}
		fig.add("watchdog: i6300esb opened by the hub's health loop, machine still up at %ss (heartbeat 30 s)", st[1])
		evs, _, _ := sim.Events(0)
		n := 0
		for _, e := range evs {
			if fromSensor(e, device) {
				n++
			}
		}
		fig.add("hubsim: %d of the sensor's messages (of %d events) from %s by %ss of guest uptime", n, len(evs), device, st[1])
		v.kill()
	})
	if !ok {
		t.FailNow()
	}

	t.Run("first boot on a blank disk", func(t *testing.T) {
		// The boot stage formats the blank disk, installs slot a from
		// the media's tinyedge and execs it.
		blank := filepath.Join(dir, "blank.img")
		run(t, nil, "truncate", "-s", "64M", blank)
		media := mediaDisk(t, dir, "first-boot-media", map[string]string{"tinyedge": filepath.Join(workDir, "tinyedge-arm64")})
		v := boot(t, "first-boot", blank, media, "")
		_, bs := v.waitFor(stageLine, bootTimeout)
		fi, err := os.Stat(filepath.Join(workDir, "tinyedge-boot-arm64"))
		if err != nil || bs[1] != "1.0.0" || bs[2] != strconv.FormatInt(fi.Size(), 10) || fi.Size() > 4<<20 {
			t.Errorf("/init: tinyedge-boot %s of %s bytes; want 1.0.0, the small boot stage of the image (%v)", bs[1], bs[2], err)
		} else {
			fig.add("boot stage: /init is tinyedge-boot %s, %s bytes stripped (arm64)", bs[1], bs[2])
		}
		v.waitFor(`msg="data partition" .*created=true`, bootTimeout)
		v.waitFor(`msg="first boot: installed tinyedge from the media into slot a"`, bootTimeout)
		_, m := v.waitFor(bootLine, bootTimeout)
		if m[1] != "a" || !strings.Contains(m[4], "only slot a has a binary") {
			t.Errorf("first boot: slot %s reason %q; want slot a, installed", m[1], m[4])
		}
		v.waitFor(`msg="tinyedge starting" version=1\.0\.0`, bootTimeout)
		v.waitFor(`"module": "SimulatedTemperatureSensor"`, bootTimeout)
		v.kill()
		v = boot(t, "second-boot", blank, "", "")
		v.waitFor(`msg="data partition" .*created=false`, bootTimeout)
		v.waitFor(`"module": "SimulatedTemperatureSensor"`, bootTimeout)
		v.kill()
	})

	t.Run("tampered bundle refused", func(t *testing.T) {
		media := mediaDisk(t, dir, "tampered", map[string]string{"update.bundle": a.tampered})
		v := boot(t, "tampered", data, media, "-- init update apply /media/update.bundle")
		v.waitFor(`bundle refused, nothing was installed`, bootTimeout)
		v.waitFor(`msg="service ended; powering off"`, bootTimeout)
		v.waitExit(bootTimeout)
		// This boot also has no usable real-time clock: it reads 2000,
		// and the clock moves forward to the last time the gateway knew.
		v = boot(t, "after-tampered", data, "", "", "-rtc", "base=2000-01-01T00:00:00")
		_, m := v.waitFor(bootLine, bootTimeout)
		if m[1] != "a" || m[2] != "1.0.0" || m[3] != "false" {
			t.Errorf("after the tampered bundle: slot %s version %s trial %s; want a 1.0.0 false", m[1], m[2], m[3])
		}
		_, c := v.waitFor(`msg="clock was behind the last known time; moved forward \(untrusted until NTP syncs\)" .*to=(\S+)`, bootTimeout)
		if to, err := time.Parse(time.RFC3339, c[1]); err != nil || time.Since(to) > time.Hour || time.Since(to) < 0 {
			t.Errorf("clock moved to %s, want the last known time (minutes ago)", c[1])
		}
		v.kill()
	})

	ok = t.Run("ota", func(t *testing.T) {
		media := mediaDisk(t, dir, "v2", map[string]string{"update.bundle": a.v2})
		v := boot(t, "ota-apply", data, media, "-- init update apply /media/update.bundle")
		s, _ := v.waitFor(`msg="service started"`, bootTimeout)
		in, _ := v.waitFor(`installed 2\.0\.0 on trial`, bootTimeout)
		applyTook = in.at - s.at
		fig.add("ota: apply of the 2.0.0 bundle in the guest, service start to installed: %.2fs", applyTook.Seconds())
		v.waitExit(bootTimeout)

		v = boot(t, "ota-trial", data, "", "")
		_, m := v.waitFor(bootLine, bootTimeout)
		if m[1] != "b" || m[2] != "2.0.0" || m[3] != "true" {
			t.Fatalf("first boot after apply: slot %s version %s trial %s; want b 2.0.0 true", m[1], m[2], m[3])
		}
		v.waitFor(`msg="tinyedge starting" version=2\.0\.0`, bootTimeout)
		v.waitFor(`msg="new version confirmed healthy" version=2\.0\.0`, 3*bootTimeout)
		v.kill() // a power cut right after the confirmation

		v = boot(t, "ota-confirmed", data, "", "")
		_, m = v.waitFor(bootLine, bootTimeout)
		if m[1] != "b" || m[2] != "2.0.0" || m[3] != "false" {
			t.Fatalf("boot after the confirmation: slot %s version %s trial %s; want b 2.0.0 false", m[1], m[2], m[3])
		}
		v.waitFor(`"module": "SimulatedTemperatureSensor"`, bootTimeout)
		v.kill()
	})
	if ok {
		t.Run("rollback", func(t *testing.T) {
			media := mediaDisk(t, dir, "v3", map[string]string{"update.bundle": a.v3})
			v := boot(t, "rollback-apply", data, media, "-- init update apply /media/update.bundle")
			v.waitFor(`installed 3\.0\.0 on trial`, bootTimeout)
			v.waitExit(bootTimeout)
			trials := 0
			for i := 1; ; i++ {
				if i > 5 {
					t.Fatalf("still not rolled back after %d boots", i-1)
				}
				v = boot(t, fmt.Sprintf("rollback-%d", i), data, "", "")
				_, m := v.waitFor(bootLine, bootTimeout)
				if m[3] == "true" {
					if m[1] != "a" || m[2] != "3.0.0" {
						t.Fatalf("trial boot: slot %s version %s; want a 3.0.0", m[1], m[2])
					}
					trials++
					// It crashes; PID 1's exit panics the kernel, which
					// reboots, and QEMU ends.
					v.waitFor(`Attempted to kill init`, bootTimeout)
					v.waitExit(bootTimeout)
					continue
				}
				if m[1] != "b" || m[2] != "2.0.0" || !strings.Contains(m[4], "rolled back") {
					t.Fatalf("after the trials: slot %s version %s reason %q; want b 2.0.0 rolled back", m[1], m[2], m[4])
				}
				v.waitFor(`msg="last update" .*outcome=rolled_back version=3\.0\.0 reason="rolled back: did not become healthy after 3 tries"`, bootTimeout)
				v.waitFor(`msg="tinyedge starting" version=2\.0\.0`, bootTimeout)
				v.waitFor(`"module": "SimulatedTemperatureSensor"`, bootTimeout)
				v.kill()
				break
			}
			if trials != 3 {
				t.Errorf("%d trial boots, want 3", trials)
			}
			fig.add("rollback: 3.0.0 crashed on %d trial boots, then 2.0.0 was back, reporting it", trials)
		})
	}

	if ok {
		t.Run("unhealthy version rolled back", func(t *testing.T) {
			// 4.0.0 runs, but a module it must keep running (a process
			// module whose program exits at once) never stays up: it does
			// not confirm itself within the health window, rolls back and
			// reboots.
			media := mediaDisk(t, dir, "v4", map[string]string{"update.bundle": a.v4, "unhealthy.json": "testdata/unhealthy.json", "crashing": a.crashing})
			v := boot(t, "unhealthy-apply", data, media, "-- init update apply /media/update.bundle")
			v.waitFor(`installed 4\.0\.0 on trial`, bootTimeout)
			v.waitExit(bootTimeout)
			v = boot(t, "unhealthy-trial", data, media, "-- init run --upstream console --manifest /media/unhealthy.json")
			_, m := v.waitFor(bootLine, bootTimeout)
			if m[1] != "a" || m[2] != "4.0.0" || m[3] != "true" {
				t.Fatalf("trial boot: slot %s version %s trial %s; want a 4.0.0 true", m[1], m[2], m[3])
			}
			v.waitFor(`msg="new version did not become healthy; rolling back"`, 3*bootTimeout)
			v.waitFor(`msg="service asks for a reboot"`, bootTimeout)
			v.waitFor(`reboot: Restarting system`, bootTimeout)
			v.waitExit(bootTimeout)
			v = boot(t, "unhealthy-after", data, "", "")
			_, m = v.waitFor(bootLine, bootTimeout)
			if m[1] != "b" || m[2] != "2.0.0" || m[3] != "false" {
				t.Fatalf("after the rollback: slot %s version %s trial %s; want b 2.0.0 false", m[1], m[2], m[3])
			}
			_, r := v.waitFor(`msg="last update" .*outcome=rolled_back version=4\.0\.0 reason="([^"]*module crasher[^"]*)"`, bootTimeout)
			v.waitFor(`"module": "SimulatedTemperatureSensor"`, bootTimeout)
			v.kill()
			fig.add("unhealthy 4.0.0: rolled back by its own health check, reported as %q", r[1])
		})
	}

	t.Run("raspberry pi sd card", func(t *testing.T) {
		// The SD card of make image RPI=1 on QEMU's Raspberry Pi 3B: the
		// SD controller's modules load, the data partition is found on
		// mmcblk0p2 by its label, and slot a boots. (QEMU's raspi3b has no
		// network and starts kernel8.img itself, without the firmware.)
		sd := filepath.Join(imgDir, "rpi-sdcard.img")
		if _, err := os.Stat(sd); err != nil {
			t.Fatalf("%v: scripts/system-test.sh builds the image with RPI=1", err)
		}
		card := filepath.Join(dir, "sdcard.img")
		run(t, nil, "cp", "--sparse=always", sd, card)
		run(t, nil, "truncate", "-s", "1G", card) // QEMU wants a power of two
		cmd := exec.Command("qemu-system-aarch64", "-M", "raspi3b", "-nographic", "-no-reboot", "-serial", "mon:stdio",
			"-kernel", filepath.Join(imgDir, "vmlinuz"), "-initrd", filepath.Join(imgDir, "initramfs.cpio.gz"),
			"-dtb", filepath.Join(workDir, "rpi-boot", "bcm2837-rpi-3-b.dtb"),
			"-append", "console=ttyAMA0 quiet panic=-1 -- init update status",
			"-drive", "file="+card+",if=sd,format=raw")
		v := startVM(t, "rpi3", cmd)
		v.waitFor(`msg="data partition" .*device=/dev/mmcblk0p2`, 2*bootTimeout)
		_, m := v.waitFor(bootLine, bootTimeout)
		if m[1] != "a" || m[2] != "1.0.0" {
			t.Errorf("pi: slot %s version %s; want a 1.0.0", m[1], m[2])
		}
		v.waitFor(`clock was behind the last known time; moved forward`, bootTimeout)
		v.waitFor(`^active +slot a \(1\.0\.0\)`, bootTimeout)
		v.waitFor(`reboot: Power down`, bootTimeout)
		v.waitExit(bootTimeout)
		fig.add("raspberry pi: the SD card booted on QEMU raspi3b, data partition on mmcblk0p2")
	})

	t.Run("power cuts, store", func(t *testing.T) {
		data := dataDisk(t, dir, "crash")
		media := mediaDisk(t, dir, "crashtest", map[string]string{"crashtest": a.crashtest})
		const kills = 10
		logs := map[string]string{"crashtest": a.crashtest}
		var names []string
		committed := 0
		for run := 1; run <= kills; run++ {
			v := boot(t, fmt.Sprintf("crash-%d", run), data, media, fmt.Sprintf("-- init /media/crashtest write -dir /data -run %d", run))
			_, m := v.waitFor(bootLine, bootTimeout)
			if m[1] != "a" || m[2] != "1.0.0" || m[3] != "false" {
				t.Fatalf("run %d: slot %s version %s trial %s; want a 1.0.0 false", run, m[1], m[2], m[3])
			}
			s, _ := v.waitFor(`msg="service started"`, bootTimeout)
			v.waitFor(`^C [0-9]+$`, bootTimeout)
			time.Sleep(time.Duration(rng.IntN(3000)) * time.Millisecond)
			v.kill()
			var b strings.Builder
			n := 0
			out := v.linesFrom(0)
			// The last line may have been cut by the kill ("D 4294967"
			// of "D 42949672961"). Leaving it out is not always safe: a
			// D line dropped while its ack did commit reads as a lost
			// message. Message numbers are run<<32|i, so a cut number
			// names an earlier run (it is at least ten times smaller):
			// the last line is kept when it names this run. (Other lines
			// may name earlier runs: their messages left in the store.)
			for i, l := range out {
				if l.at > s.at && crashLine.MatchString(l.text) && (i < len(out)-1 || ofRun(l.text, run)) {
					b.WriteString(l.text + "\n")
					if l.text[0] == 'C' {
						n++
					}
				}
			}
			committed += n
			name := fmt.Sprintf("run%d.log", run)
			p := filepath.Join(dir, name)
			os.WriteFile(p, []byte(b.String()), 0o644)
			logs[name] = p
			names = append(names, "/media/"+name)
		}
		check := mediaDisk(t, dir, "crashcheck", logs)
		v := boot(t, "crash-check", data, check, "-- init /media/crashtest check -dir /data "+strings.Join(names, " "))
		_, m := v.waitFor(bootLine, bootTimeout)
		if m[1] != "a" || m[3] != "false" {
			t.Fatalf("check boot: slot %s trial %s; want a false", m[1], m[3])
		}
		_, res := v.waitFor(`^committed ([0-9]+), delivered ([0-9]+), drained ([0-9]+), redelivered ([0-9]+)$`, bootTimeout)
		_, st := v.waitFor(`msg="service ended; powering off" .*status="([^"]+)"`, bootTimeout)
		if st[1] != "exit status 0" {
			t.Errorf("the checker found lost messages (%s); console:\n%s", st[1], v.tail(30))
		}
		fig.add("power cuts (store): %d SIGKILLs of QEMU during the crash writer; the checker: committed %s, delivered %s, drained %s, redelivered %s; %s",
			kills, res[1], res[2], res[3], res[4], st[1])
		if committed == 0 {
			t.Error("no commit was reported over the console")
		}
	})

	t.Run("power cuts, ota apply", func(t *testing.T) {
		media := mediaDisk(t, dir, "v2cut", map[string]string{"update.bundle": a.v2})
		span := applyTook + applyTook/5
		if span <= 0 {
			span = 5 * time.Second
		}
		before, during, after := 0, 0, 0
		for i := 1; during < 5 && i <= 12; i++ {
			data := dataDisk(t, dir, fmt.Sprintf("otacut-%d", i))
			v := boot(t, fmt.Sprintf("otacut-%d", i), data, media, "-- init update apply /media/update.bundle")
			v.waitFor(`msg="service started"`, bootTimeout)
			time.Sleep(time.Duration(rng.Int64N(int64(span))))
			v.kill()
			installed := v.seen(`installed 2\.0\.0 on trial`)
			switch {
			case installed:
				after++
			case v.seen(`\]\s+[0-9]+%`): // the progress bar had started
				during++
			default:
				before++
			}
			v = boot(t, fmt.Sprintf("otacut-%d-boot", i), data, "", "")
			_, m := v.waitFor(bootLine, bootTimeout)
			switch {
			case m[1] == "a" && m[2] == "1.0.0" && m[3] == "false" && !installed:
			case m[1] == "b" && m[2] == "2.0.0" && m[3] == "true":
			default:
				t.Fatalf("cut %d (installed before the cut: %v): slot %s version %s trial %s reason %q; want a 1.0.0 or the trial of b 2.0.0", i, installed, m[1], m[2], m[3], m[4])
			}
			v.waitFor(`"module": "SimulatedTemperatureSensor"`, bootTimeout)
			v.kill()
		}
		if during < 5 {
			t.Errorf("only %d cuts fell during the apply", during)
		}
		fig.add("power cuts (ota): %d SIGKILLs during the apply, %d before it began, %d after it ended; every boot after came up on a complete slot", during, before, after)
	})

	fig.add("system test took %s", time.Since(started).Round(time.Second))
	summary := strings.Join(fig.text, "\n") + "\n"
	t.Log("\n" + summary)
	os.WriteFile(filepath.Join(logDir, "summary.txt"), []byte(summary), 0o644)
}
