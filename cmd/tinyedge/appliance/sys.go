package appliance

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Sys is the part of the kernel PID 1 uses. Linux is the real one; tests
// use a fake that records calls.
type Sys interface {
	// Mount mounts source on target (mount(2)).
	Mount(source, target, fstype string, flags uintptr, data string) error
	// Unmount unmounts target (umount2(2)).
	Unmount(target string, flags int) error
	// LoadModule loads the kernel module in file path (finit_module(2)).
	LoadModule(path string) error
	// Sethostname sets the host name.
	Sethostname(name string) error
	// Sync flushes every file system's dirty data to its device.
	Sync()
	// Reboot reboots, powers off or halts (reboot(2)); it returns only on
	// failure.
	Reboot(how How) error
	// Settimeofday sets the system clock.
	Settimeofday(t unix.Timeval) error
}

// How a shutdown ends.
type How int

// Ways to end a shutdown.
const (
	Restart How = iota
	PowerOff
)

func (h How) String() string {
	if h == PowerOff {
		return "power off"
	}
	return "reboot"
}

// Linux is the real kernel.
type Linux struct{}

var _ Sys = Linux{}

// Mount implements Sys.
func (Linux) Mount(source, target, fstype string, flags uintptr, data string) error {
	return unix.Mount(source, target, fstype, flags, data)
}

// Unmount implements Sys.
func (Linux) Unmount(target string, flags int) error { return unix.Unmount(target, flags) }

// LoadModule implements Sys.
func (Linux) LoadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil {
		return fmt.Errorf("finit_module %s: %w", path, err)
	}
	return nil
}

// Sethostname implements Sys.
func (Linux) Sethostname(name string) error { return unix.Sethostname([]byte(name)) }

// Sync implements Sys.
func (Linux) Sync() { unix.Sync() }

// Reboot implements Sys.
func (Linux) Reboot(how How) error {
	cmd := unix.LINUX_REBOOT_CMD_RESTART
	if how == PowerOff {
		cmd = unix.LINUX_REBOOT_CMD_POWER_OFF
	}
	return unix.Reboot(cmd)
}

// Settimeofday implements Sys.
func (Linux) Settimeofday(t unix.Timeval) error { return unix.Settimeofday(&t) }

// KernelUptime is the kernel's uptime as /proc/uptime gives it ("1.42s"),
// for boot log lines; "?" when it cannot be read.
func KernelUptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0] + "s"
	}
	return "?"
}
