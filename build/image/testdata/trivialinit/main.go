// Command trivialinit is the system test's baseline: a static init that
// does nothing but say it runs, with the kernel's uptime, and power the
// machine off. Booted alone in an initramfs of its own, on the image's
// kernel under the same QEMU options, it measures what the kernel takes
// to reach a user space, for the appliance's boot figures to be read
// against.
package main

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	up := time.Duration(ts.Nano())
	// An initramfs made without root has no /dev/console node, and then
	// the kernel gives init no console: mount devtmpfs to open it.
	if _, err := unix.FcntlInt(1, unix.F_GETFD, 0); err != nil {
		_ = unix.Mount("devtmpfs", "/dev", "devtmpfs", 0, "")
		if fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0); err == nil {
			_ = unix.Dup3(fd, 1, 0)
		}
	}
	fmt.Fprintf(os.Stdout, "trivial init: uptime=%.3fs\n", up.Seconds())
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// PID 1 must not exit (the kernel would panic): wait for the power
	// to go.
	for {
		time.Sleep(time.Hour)
	}
}
