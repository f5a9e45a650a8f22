#!/bin/sh
# Binary sizes of the stripped static builds (make cross; with the
# appliance's boot stage, tinyedge-boot), and the RSS of
# `tinyedge run` with the quickstart deployment after SECONDS (default 60)
# on this machine.
set -eu
cd "$(dirname "$0")/.."
make -s cross >/dev/null
for f in dist/tinyedge-linux-arm64 dist/tinyedge-linux-armv6 dist/tinyedge-linux-armv7 dist/tinyedge-boot-linux-arm64; do
	stat -c '%s %n' "$f" | awk '{ printf "%-28s %9d bytes (%.1f MiB)\n", $2, $1, $1 / 1048576 }'
done
secs=${SECONDS_RSS:-60}
make -s build >/dev/null
# rss LABEL ARGS…: the RSS of `tinyedge run ARGS…` after $secs seconds.
# The embedded IoT Hub emulator keeps its state in a temporary directory,
# not the user's.
rss() {
	label=$1
	shift
	dir=$(mktemp -d)
	XDG_STATE_HOME="$dir/state" ./dist/tinyedge run --data-dir "$dir" --log-format json "$@" >/dev/null 2>"$dir/log" &
	pid=$!
	sleep "$secs"
	rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
	hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
	kill -TERM "$pid"
	wait "$pid" || true
	echo "tinyedge run (quickstart, $label, $(go env GOARCH)) after ${secs}s: RSS ${rss} kB (peak ${hwm} kB)"
	rm -rf "$dir"
}
rss "console upstream" --upstream console &
rss "with the embedded IoT Hub emulator in the same process"
wait
