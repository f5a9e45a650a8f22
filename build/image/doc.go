// Package image holds the recipe of the tinyedge appliance image — a
// gateway whose whole user space is the tinyedge binary — and its
// full-system tests under QEMU (system_test.go, build tag system).
//
// # The image
//
// `make image ARCH=arm64` (scripts/image.sh) builds, without root and
// without loop devices, in dist/image:
//
//	vmlinuz            the kernel of Debian's linux-image-arm64, fetched
//	                   with apt-get download through a private apt
//	                   configuration (arm64 sources derived from the
//	                   machine's; the system's apt state is never touched)
//	initramfs.cpio.gz  the boot stage: tinyedge-boot (cmd/tinyedge-boot)
//	                   as /init, the kernel modules named in modules.txt
//	                   with their dependencies (read from each module's
//	                   modinfo, decompressed if the package compresses
//	                   them), /etc/tinyedge/modules, their load order, and
//	                   mkfs.ext4 with the libraries it needs
//	data.img           the data partition: ext4 labelled tinyedge-data,
//	                   made with mkfs.ext4 -d; it holds slots/a/tinyedge,
//	                   ota-state.json (slot a active, at IMAGE_VERSION),
//	                   keys/*.pub (the update signing key) and config.toml
//	cmdline            console=ttyAMA0 quiet panic=-1
//
// panic=-1 matters: PID 1 must never exit, and if a bad release does, the
// kernel panics and reboots at once, so the boot stage counts the try.
//
// # Boot
//
// The kernel runs /init: tinyedge-boot, the boot stage, a program of its
// own so that it stays small (3.3 MB for arm64, against 12.4 MB for
// tinyedge; the initramfs went from 7.6 MB to 4.2 MB) and rarely
// changes — an OTA update replaces tinyedge on the data partition, never
// the initramfs. It mounts /proc, /sys, /dev, /run and /tmp, loads the
// modules, mounts the data partition (found by label; a blank one is
// formatted on first boot with the initramfs's mkfs.ext4, and gets slot a
// from a disk labelled tinyedge-media that holds a tinyedge), and asks
// build/ota.Boot which slot runs — counting a try for a version on trial,
// rolling back one that ran out of tries — then execs that slot's binary
// as `tinyedge init`, which stays PID 1. A slot binary that cannot be
// exec'd is rolled back and the other one run; when nothing can run, the
// boot stage says why on the console and reboots a minute later. Its
// first line names it: msg=tinyedge-boot version=… binary=/init size=….
//
// The boot stage tells the slot binary what it decided in the
// environment: TINYEDGE_BOOT_STAGE (its version), TINYEDGE_BOOT_SLOT (a or
// b) and TINYEDGE_BOOT_TRIAL (true while the slot is on trial). Seeing
// them, tinyedge init does not do the boot again, so the try is counted
// once (see cmd/tinyedge/appliance). tinyedge still works as /init
// itself: without them it does the boot stage's work first.
//
// The slot binary sets the host name, brings the network up (DHCP or
// static, from [appliance] in /data/config.toml), restores the clock from
// /data/clock (SNTP when time_servers are given), mounts a disk labelled
// tinyedge-media read-only on /media, and keeps the service running:
// `tinyedge run` (which feeds /dev/watchdog while the hub is healthy). A
// hub that hangs stops feeding it, and 30 s later the watchdog resets the
// machine: PID 1 restarts a service that exited, but leaves one that
// stopped answering to the watchdog, as it cannot tell a hung hub from a
// busy one. A service that exits with status 75 (an update installed, or
// rolled back) makes PID 1 stop everything, sync, unmount and reboot, so
// the boot stage chooses again.
//
// A command after `-- init` on the kernel command line replaces the
// service and runs once, then the machine powers off: a maintenance
// command (the kernel passes what follows `--` to init; a second `--`
// would end it, so the command follows init directly).
// `-- init update apply /media/update.bundle` installs an update from
// a USB stick (or a second disk under QEMU).
//
// # QEMU
//
// `make qemu` (scripts/qemu.sh) boots dist/image under
// qemu-system-aarch64 -M virt -cpu cortex-a53, the console on the
// terminal, the data disk as virtio-blk, the network as QEMU's user
// network with restrict=on (the guest gets 10.0.2.15 by DHCP and reaches
// nothing), and QEMU's i6300esb PCI watchdog, which Debian's arm64 kernel
// drives. It boots a copy of data.img unless DATA names a disk to keep.
// NETOPTS adds options to that network. A guestfwd to a tcp: character
// device (guestfwd=tcp:10.0.2.100:8883-tcp:127.0.0.1:8883) is one host
// connection, opened when QEMU starts: enough for one upstream
// connection, not for reconnects or for modules with cloud identities of
// their own. The cmd: form runs a command for every connection the guest
// opens, with the connection as its standard input and output: the
// system test's boot adds guestfwd=tcp:10.0.2.100:8883-cmd:TEST -guestpipe=PORT
// LOG, its one way out, which runs the test binary as a pipe to a hubsim
// on the host's loopback, so the device and a module connect at once,
// and reconnect when the hubsim is restarted.
//
// # Raspberry Pi SD card
//
// The same pieces make a Raspberry Pi 3, 4 or 5 SD card (64-bit):
//
//  1. Partition the card (a file, with sfdisk; no root needed for a file):
//     partition 1, FAT32, 256 MiB, type c, bootable; partition 2, Linux,
//     the rest (or a fixed size, the rest left for later).
//  2. Partition 1 (mkfs.vfat on a file, filled with mcopy from mtools, so
//     no mount is needed) holds the Pi firmware from Debian's
//     raspi-firmware package (component non-free-firmware):
//     bootcode.bin (Pi 3 only), start4.elf, fixup4.dat, start.elf,
//     fixup.dat, the device trees of linux-image-arm64
//     (usr/lib/linux-image-*/broadcom/bcm27*.dtb), vmlinuz as kernel8.img,
//     initramfs.cpio.gz, and:
//     config.txt:
//     arm_64bit=1
//     kernel=kernel8.img
//     initramfs initramfs.cpio.gz followkernel
//     enable_uart=1
//     dtparam=i2c_arm=on
//     dtparam=watchdog=on
//     cmdline.txt (one line):
//     console=serial0,115200 console=tty1 quiet panic=-1
//  3. Partition 2 is data.img written at its offset (dd conv=notrunc
//     seek=...), or left blank: the first boot formats it, and installs
//     slot a from a USB stick labelled tinyedge-media (ext4) holding the
//     arm64 tinyedge as /tinyedge; without one, it has nothing to run.
//
// modules.txt already lists the Pi's I²C controller (i2c-bcm2835),
// i2c-dev and its watchdog (bcm2835_wdt). The Pi has no real-time clock:
// put time_servers in [appliance] so the clock is trusted after boot.
package image
