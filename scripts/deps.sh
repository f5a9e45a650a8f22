#!/bin/sh
# Installs what `make test` needs on a fresh Debian machine: qemu-user for
# the arm64 and ARMv6 test runs. Does nothing when it is already there.
set -eu

need=""
command -v qemu-aarch64 >/dev/null 2>&1 || need="$need qemu-user"
command -v qemu-arm >/dev/null 2>&1 || need="$need qemu-user"
[ -z "$need" ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		sudo="sudo"
	else
		echo "deps: need root (or sudo) to apt-get install qemu-user" >&2
		exit 1
	fi
fi
echo "deps: installing qemu-user"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends qemu-user
