#!/bin/sh
# Boots the appliance image (make image) under qemu-system-aarch64 -M virt
# with the console on this terminal (Ctrl-A X quits). The data disk is a
# copy, so every `make qemu` starts from the image as built; DATA=path
# boots another disk instead (and keeps what the appliance writes to it).
#
# The guest's network is QEMU's user network with restrict=on: it reaches
# nothing outside; DHCP gives it 10.0.2.15. NETOPTS adds options to that
# network, such as explicit forwards to the host's loopback
# (NETOPTS=guestfwd=tcp:10.0.2.100:8883-tcp:127.0.0.1:8883: the guest's
# connections to 10.0.2.100:8883 reach a hub on this machine), which
# restrict=on leaves working. That forward is one connection, made when
# QEMU starts; guestfwd=tcp:IP:PORT-cmd:COMMAND runs COMMAND for every
# guest connection instead, with the connection as its stdin and stdout
# (the system test's way, for reconnects). Extra QEMU arguments may follow
# (a second disk: -drive file=media.img,if=none,id=m,format=raw
# -device virtio-blk-device,drive=m), and APPEND adds to the kernel
# command line (APPEND='-- init update status' runs one command).
set -eu
cd "$(dirname "$0")/.."
IMG=${IMG:-dist/image}
for f in vmlinuz initramfs.cpio.gz data.img cmdline; do
	[ -f "$IMG/$f" ] || { echo "qemu: $IMG/$f missing: run make image" >&2; exit 1; }
done
command -v qemu-system-aarch64 >/dev/null || { echo "qemu: qemu-system-aarch64 missing: run scripts/deps.sh" >&2; exit 1; }
if [ -z "${DATA:-}" ]; then
	# A copy, removed when QEMU ends.
	DATA=$(mktemp /tmp/tinyedge-data.XXXXXX)
	export DATA
	cp --sparse=always "$IMG/data.img" "$DATA"
	trap 'rm -f "$DATA"' EXIT INT TERM
	"$0" "$@"
	exit
fi
data=$DATA
exec qemu-system-aarch64 -M virt -cpu cortex-a53 -smp 1 -m ${MEM:-256} -nographic -no-user-config -nodefaults \
	-serial mon:stdio \
	-kernel "$IMG/vmlinuz" -initrd "$IMG/initramfs.cpio.gz" \
	-append "$(cat "$IMG/cmdline") ${APPEND:-}" \
	-drive "file=$data,if=none,id=data,format=raw" -device virtio-blk-device,drive=data \
	-netdev "user,id=net,restrict=on${NETOPTS:+,$NETOPTS}" -device virtio-net-device,netdev=net \
	-device i6300esb \
	"$@"
