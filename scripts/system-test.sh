#!/bin/sh
# The full-system tests (build/image/system_test.go): builds the image
# (with the Raspberry Pi SD card) once if dist/image has none, then boots it under qemu-system-aarch64
# again and again. Consoles of every boot go to dist/system-test/*.log,
# the figures to dist/system-test/summary.txt.
set -eu
cd "$(dirname "$0")/.."
if [ ! -f dist/image/data.img ] || [ ! -f dist/image/rpi-sdcard.img ] || [ ! -f dist/image-work/dev.key ]; then
	RPI=1 ./scripts/image.sh
fi
rm -rf dist/system-test
go test -tags system -count=1 -v -timeout 40m -run TestSystem ./build/image/ 2>&1 | tee dist/system-test.out | grep -E '^(=== RUN|--- |\s+--- |PASS|FAIL|ok|panic)|system_test.go' || true
[ -f dist/system-test/summary.txt ] && sed 's/^/  /' dist/system-test/summary.txt
# The exit status is go test's, which tee hid.
tail -n 5 dist/system-test.out | grep -q '^ok' 
