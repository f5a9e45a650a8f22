// Command hanger is the system test's hung hub: run by `tinyedge run` as
// a process module, it waits the seconds given as its argument (default
// 10), then stops its parent, the hub, with SIGSTOP. The hub's health
// loop stops with it, so the hardware watchdog is no longer fed and must
// reset the machine. It says so on /dev/console (its own output goes
// through the hub, which is stopped), with the kernel's uptime, and then
// waits.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	after := 10 * time.Second
	if len(os.Args) > 1 {
		s, err := strconv.Atoi(os.Args[1])
		if err != nil {
			fmt.Fprintf(os.Stderr, "hanger: argument %q: want seconds\n", os.Args[1])
			os.Exit(2)
		}
		after = time.Duration(s) * time.Second
	}
	time.Sleep(after)
	hub := os.Getppid()
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	if c, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		fmt.Fprintf(c, "hanger: stopping the hub (pid %d) at uptime=%.3fs\n", hub, time.Duration(ts.Nano()).Seconds())
		c.Close()
	}
	if err := unix.Kill(hub, unix.SIGSTOP); err != nil {
		fmt.Fprintf(os.Stderr, "hanger: stop the hub (pid %d): %v\n", hub, err)
		os.Exit(1)
	}
	for {
		time.Sleep(time.Hour)
	}
}
