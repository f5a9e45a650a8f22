#!/bin/sh
# Installs what `make test` needs on a fresh Debian machine: the official
# Azure IoT Node SDK in scripts/sdk (for the SDK conformance tests; only
# when node and npm exist), qemu-user for the arm64 and ARMv6 test runs,
# mosquitto for the upstream link's tests against a real broker, and
# qemu-system-arm, cpio, e2fsprogs, dosfstools, mtools and fdisk for the
# appliance image and its system tests (make image, make test-system). Does
# nothing when it is already there. `deps.sh sdk` does the SDK only.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)

# install_sdk runs `npm ci` in scripts/sdk when node_modules is missing or
# older than the lockfile.
install_sdk() {
	dir="$root/scripts/sdk"
	if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
		echo "deps: node and npm not found: the Azure IoT SDK conformance tests will skip" >&2
		return 0
	fi
	if [ -d "$dir/node_modules" ] && [ ! "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
		return 0
	fi
	echo "deps: installing the Azure IoT Node SDK in $dir (npm ci)"
	npm ci --prefix "$dir" --no-audit --no-fund
	touch "$dir/node_modules"
}

install_sdk
[ "${1:-}" = sdk ] && exit 0

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
# mosquitto lives in /usr/sbin, which is not on every user's PATH.
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need="$need mosquitto"
[ -z "$need" ] && exit 0
# qemu-user may be listed twice.
need=$(echo $need | tr ' ' '\n' | sort -u | tr '\n' ' ')

sudo=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		sudo="sudo"
	else
		echo "deps: need root (or sudo) to apt-get install $need" >&2
		exit 1
	fi
fi
echo "deps: installing $need"
$sudo apt-get update -q
# shellcheck disable=SC2086 # one word per package
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $need
