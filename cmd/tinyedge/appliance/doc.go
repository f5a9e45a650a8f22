// Package appliance does what PID 1 must on a tinyedge gateway that runs
// nothing but tinyedge, as its boot stage and its system manager: mount
// the kernel's file systems, load the kernel modules the image ships,
// find (and on first boot create) the data partition, choose the OTA
// slot and exec its binary, set the host name, bring the network up
// (static or DHCP), keep the clock sane without a real-time clock, feed a
// hardware watchdog, supervise the service (tinyedge run), reap orphans,
// and shut down cleanly: stop the service, sync, unmount and reboot(2).
//
// It lives under cmd/tinyedge because only the appliance's two programs
// run it and nothing else may: it touches the whole machine. The kernel
// is behind the small Sys interface so that every step is tested without
// root with a fake.
//
// # Boot
//
// Two programs are PID 1 in turn. The boot stage, cmd/tinyedge-boot, is
// the initramfs's /init: small (3.2 MiB for arm64, against 11.8 MiB for
// tinyedge; the linker keeps only what it calls, so the network and
// supervision code here cost it 0.06 MiB, while build/ota brings
// build/bundle's COSE and X.509 code, 0.38 MiB, for Apply, which the boot
// stage never calls) and rarely changed, since an update cannot replace
// it. Its
// Stage mounts the kernel's file systems (MountBase), loads the modules
// (LoadModules), mounts the data partition (MountData; a blank one is
// formatted on first boot, and given slot a from a disk labelled
// tinyedge-media holding a tinyedge), asks build/ota.Boot which slot
// runs — counting a try for a version on trial, rolling back one that
// ran out of tries — and execs that slot's binary with the arguments the
// kernel gave /init. If the exec fails, the version is rolled back with
// ota.Rollback and Boot chooses again; when nothing can run, the boot
// stage says why on the console and reboots a minute later.
//
// The slot binary, tinyedge, starts as `tinyedge init`, still PID 1. The
// boot stage hands it its decision in the environment (Handoff):
//
//	TINYEDGE_BOOT_STAGE=<the boot stage's version>
//	TINYEDGE_BOOT_SLOT=a|b
//	TINYEDGE_BOOT_TRIAL=true|false
//
// With them, tinyedge init neither mounts, loads nor calls ota.Boot
// again (the try is counted once), and does the rest: the host name, the
// network, the clock, the watchdog and the service, with the trial's
// health window when TINYEDGE_BOOT_TRIAL is true. The service does not
// inherit them. Without them — tinyedge itself as /init, as images made
// before the boot stage had it — tinyedge init does the boot stage's
// work first and runs itself when no slot holds a binary. A handoff that
// is garbled is logged and the work done again: each step is idempotent,
// and ota.Boot run by a slot's binary recognises it and counts nothing.
//
// # Caveats
//
//   - PID 1 must never exit: the kernel panics. Run ends only by reboot(2);
//     a Go panic in PID 1 panics the kernel, which reboots with panic=N on
//     the kernel command line (the image sets it).
//   - The first boot's install from the media copies an unsigned binary:
//     it happens only on a data partition with no update state at all,
//     where whoever holds the device could as well write the partition.
//   - The boot stage runs build/ota.Boot of its own build: later versions
//     of tinyedge must keep the state record readable by it, as ota's
//     Caveats say of the installed binary (which the boot stage is).
//   - The reaper collects every child with wait4(-1): nothing else in PID 1
//     may wait for its own children (os/exec's Wait would see ECHILD). The
//     service is started with os.StartProcess and its exit comes from the
//     reaper; a program run before the reaper starts (mkfs.ext4) is fine.
//   - Under QEMU the disk image is a host file: a killed QEMU loses what
//     the guest had not written to its virtual disk, not what the host had
//     not flushed. A real SD card may lose more (see build/ota's Caveats).
package appliance
