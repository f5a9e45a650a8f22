// Command tinyedge-boot is the boot stage of the tinyedge appliance: the
// /init of its initramfs, PID 1 from the kernel until it execs the
// tinyedge binary of the active OTA slot on the data partition. It is
// small and rarely changes, so that an update replaces everything else.
//
// As PID 1 it mounts /proc, /sys, /dev, /run and /tmp, loads the kernel
// modules the image lists, mounts the data partition (found by its
// label; a blank one is formatted on first boot), asks build/ota which
// slot runs — counting a try for a version on trial, rolling back one
// that ran out of tries — and execs that slot's binary with the
// arguments the kernel gave it (`init …`), telling it what it decided in
// its environment (appliance.Handoff). It never exits: when nothing can
// run it says why on the console and reboots a minute later.
// See cmd/tinyedge/appliance and build/image.
//
// Usage, on a running system:
//
//	tinyedge-boot version
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/tinyedge/tinyedge/cmd/tinyedge/appliance"
)

// Set at build time with -ldflags -X (see scripts/image.sh).
var (
	version = "dev"
	commit  = "unknown"
)

// retryAfter is how long the console shows why nothing could run before
// the machine reboots and tries again.
const retryAfter = time.Minute

func main() {
	if os.Getpid() != 1 {
		os.Exit(notInit(os.Args[1:], os.Stdout, os.Stderr))
	}
	boot()
}

// notInit is tinyedge-boot started by hand: it prints its version or
// says what it is for.
func notInit(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && args[0] == "version" {
		fmt.Fprintf(stdout, "tinyedge-boot %s\ncommit %s\n%s\n%s/%s\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	}
	fmt.Fprintln(stderr, "tinyedge-boot: the appliance's boot stage runs as PID 1 only (the kernel starts it as /init); `tinyedge-boot version` prints its version")
	return 2
}

// boot is PID 1 until the exec; it never returns.
func boot() {
	m := &appliance.Machine{Sys: appliance.Linux{}, Root: "/"}
	mountErr := m.MountBase()
	_ = appliance.ReopenConsole()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pid1", true)
	self, _ := os.Executable()
	var size int64
	if fi, err := os.Stat(self); err == nil {
		size = fi.Size()
	}
	log.Info("tinyedge-boot", "version", version, "binary", self, "size", size, "uptime", appliance.KernelUptime(), "args", strings.Join(os.Args[1:], " "))
	if mountErr != nil {
		log.Error("mount the kernel file systems", "err", mountErr)
	}
	label, err := dataLabel(os.Args[1:])
	if err != nil {
		log.Warn("kernel command line", "err", err)
	}
	st := &appliance.Stage{
		Machine: m, Logger: log, Version: version,
		Args: os.Args[1:], Env: os.Environ(), Label: label,
	}
	if _, err := st.Prepare(context.Background()); err != nil {
		log.Error("NO DATA PARTITION; rebooting in "+retryAfter.String(), "err", err)
	} else {
		err = st.Handover()
		log.Error("NOTHING TO RUN; rebooting in "+retryAfter.String(), "err", err)
	}
	time.Sleep(retryAfter)
	m.Halt(appliance.Restart, retryAfter, log)
}

// dataLabel reads `init --data-label LABEL` from the kernel's arguments
// to /init, as `tinyedge init` takes it; "" means the default.
func dataLabel(args []string) (string, error) {
	i := slices.Index(args, "init")
	if i < 0 {
		return "", nil
	}
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	label := fs.String("data-label", "", "")
	if err := fs.Parse(args[i+1:]); err != nil {
		return "", fmt.Errorf("init %s: %w (using the default data label)", strings.Join(args[i+1:], " "), err)
	}
	return *label, nil
}
