package appliance

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Machine is the system PID 1 manages: the kernel (Sys) and the file tree
// under Root ("/" on a device; a temporary directory in tests).
type Machine struct {
	Sys  Sys
	Root string
}

// path returns p (absolute, as seen on the device) under m.Root.
func (m *Machine) path(p string) string { return filepath.Join(m.Root, p) }

// mountPoint is one of the file systems every boot needs.
type mountPoint struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

// baseMounts are mounted in this order: /proc first, since whether the
// others are mounted is read from it.
var baseMounts = []mountPoint{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755,size=10%"},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777,size=20%"},
}

// MountBase mounts /proc, /sys, /dev (devtmpfs), /run and /tmp, each
// unless it is already mounted (the boot stage did it before it exec'd
// the slot binary).
func (m *Machine) MountBase() error {
	var errs []error
	for _, mp := range baseMounts {
		mounted, err := m.Mounted(mp.target)
		if err == nil && mounted {
			continue
		}
		if err := os.MkdirAll(m.path(mp.target), 0o755); err != nil {
			errs = append(errs, fmt.Errorf("mount %s: %w", mp.target, err))
			continue
		}
		if err := m.Sys.Mount(mp.source, m.path(mp.target), mp.fstype, mp.flags, mp.data); err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", mp.fstype, mp.target, err))
		}
	}
	return errors.Join(errs...)
}

// Mounted reports whether something is mounted on target, from
// /proc/self/mounts.
func (m *Machine) Mounted(target string) (bool, error) {
	f, err := os.Open(m.path("/proc/self/mounts"))
	if err != nil {
		return false, err
	}
	defer f.Close()
	mps, err := parseMounts(f)
	if err != nil {
		return false, fmt.Errorf("read /proc/self/mounts: %w", err)
	}
	for _, mp := range mps {
		if mp.target == target {
			return true, nil
		}
	}
	return false, nil
}

// parseMounts reads the mount table in the format of /proc/self/mounts
// (fstab(5): source target type options freq passno, with octal escapes
// such as \040 for spaces).
func parseMounts(r io.Reader) ([]mountPoint, error) {
	var out []mountPoint
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) < 3 {
			return out, fmt.Errorf("line %d: %d fields, want at least 3", line, len(f))
		}
		out = append(out, mountPoint{source: unescapeMount(f[0]), target: unescapeMount(f[1]), fstype: f[2]})
	}
	return out, sc.Err()
}

// unescapeMount undoes the kernel's octal escapes (\040, \011, \012, \134).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && isOctal(s[i+1:i+4]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	if len(s) != 3 || s[0] > '3' {
		return false
	}
	for i := range 3 {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return true
}

// ReopenConsole makes /dev/console the standard input, output and error
// when the kernel could not give PID 1 one (an initramfs without a
// /dev/console node, as a cpio made without root has).
func ReopenConsole() error {
	if _, err := unix.FcntlInt(1, unix.F_GETFD, 0); err == nil {
		return nil
	}
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("open /dev/console: %w", err)
	}
	for _, to := range []int{0, 1, 2} {
		if fd != to {
			if err := unix.Dup3(fd, to, 0); err != nil {
				return fmt.Errorf("dup /dev/console to %d: %w", to, err)
			}
		}
	}
	if fd > 2 {
		unix.Close(fd)
	}
	return nil
}
