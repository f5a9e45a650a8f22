#!/bin/sh
# Installs what `make test` needs on a fresh Debian machine: qemu-user for
# the arm64 and ARMv6 test runs, and mosquitto for the upstream link's
# tests against a real broker. Does nothing when they are already there.
set -eu

need=""
command -v qemu-aarch64 >/dev/null 2>&1 || need="$need qemu-user"
command -v qemu-arm >/dev/null 2>&1 || need="$need qemu-user"
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
		echo "deps: need root (or sudo) to apt-get install$need" >&2
		exit 1
	fi
fi
echo "deps: installing $need"
$sudo apt-get update -q
# shellcheck disable=SC2086 # one word per package
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $need
