// Package appliance does what PID 1 must on a tinyedge gateway that runs
// nothing but tinyedge: mount the kernel's file systems, load the kernel
// modules the image ships, find (and on first boot create) the data
// partition, set the host name, bring the network up (static or DHCP),
// keep the clock sane without a real-time clock, feed a hardware watchdog,
// supervise the service (tinyedge run), reap orphans, and shut down
// cleanly: stop the service, sync, unmount and reboot(2).
//
// It lives under cmd/tinyedge because only the tinyedge binary runs it
// and nothing else may: it touches the whole machine. The kernel is behind
// the small Sys interface so that every step is tested without root with
// a fake.
//
// # Boot
//
// The same binary is the boot stage in the initramfs (/init) and the
// binary of each OTA slot on the data partition. The boot stage mounts
// what it needs, loads the modules, mounts the data partition, asks
// build/ota.Boot which slot to run (counting a try for a version on
// trial) and execs that slot's binary, which runs the same steps again:
// each is idempotent, so the slot binary only does what is left (the
// network, the clock, the watchdog, the service).
//
// # Caveats
//
//   - PID 1 must never exit: the kernel panics. Run ends only by reboot(2);
//     a Go panic in PID 1 panics the kernel, which reboots with panic=N on
//     the kernel command line (the image sets it).
//   - The reaper collects every child with wait4(-1): nothing else in PID 1
//     may wait for its own children (os/exec's Wait would see ECHILD). The
//     service is started with os.StartProcess and its exit comes from the
//     reaper; a program run before the reaper starts (mkfs.ext4) is fine.
//   - Under QEMU the disk image is a host file: a killed QEMU loses what
//     the guest had not written to its virtual disk, not what the host had
//     not flushed. A real SD card may lose more (see build/ota's Caveats).
package appliance
