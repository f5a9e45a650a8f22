#!/bin/sh
# Installs what `make test` and `make test-system` need on a fresh Debian
# machine: qemu-user for the arm64 and ARMv6 test runs; qemu-system-arm,
# cpio and e2fsprogs for the appliance image and its system tests. Does
# nothing when they are there.
set -eu

need=""
command -v qemu-aarch64 >/dev/null 2>&1 || need="$need qemu-user"
command -v qemu-arm >/dev/null 2>&1 || need="$need qemu-user"
command -v qemu-system-aarch64 >/dev/null 2>&1 || need="$need qemu-system-arm"
command -v cpio >/dev/null 2>&1 || need="$need cpio"
command -v mkfs.ext4 >/dev/null 2>&1 || need="$need e2fsprogs"
command -v debugfs >/dev/null 2>&1 || need="$need e2fsprogs"
command -v dpkg-deb >/dev/null 2>&1 || need="$need dpkg"
command -v sfdisk >/dev/null 2>&1 || need="$need fdisk"
command -v mkfs.vfat >/dev/null 2>&1 || need="$need dosfstools"
command -v mcopy >/dev/null 2>&1 || need="$need mtools"
[ -z "$need" ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		sudo="sudo"
	else
		echo "deps: need root (or sudo) to apt-get install$need" >&2
		exit 1
	fi
fi
echo "deps: installing$need"
$sudo apt-get update -q
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $need
