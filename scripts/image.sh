#!/bin/sh
# Builds the appliance image for ARCH (arm64) without root and without
# loop devices, into $OUT (default dist/image):
#
#   vmlinuz            the kernel of Debian's linux-image-arm64
#   initramfs.cpio.gz  the boot stage: tinyedge-boot as /init, the kernel
#                      modules of build/image/modules.txt and mkfs.ext4
#   data.img           the data partition (ext4, label tinyedge-data):
#                      slot a, the OTA state, the trusted update key and
#                      config.toml
#   cmdline            the kernel command line
#
# The kernel package comes from the Debian archive the machine is
# configured for, through a private apt configuration (the system's is
# never touched). Downloads are kept in $WORK (dist/image-work) and
# reused. The update signing key is $KEY (NAME.key with NAME.pub beside
# it); without one, a development key is made in $WORK once.
#
# IMAGE_VERSION (1.0.0) is the version of slot a and of the boot stage;
# CONFIG a config.toml to put on the data partition instead of
# build/image/config.toml.
#
# RPI=1 also makes rpi-sdcard.img, a Raspberry Pi 3/4 SD card: a FAT boot
# partition with the Pi firmware (Debian's raspi-firmware), the kernel,
# the device trees and the initramfs, then the data partition (see
# build/image/doc.go).
set -eu
cd "$(dirname "$0")/.."
ARCH=${ARCH:-arm64}
if [ "$ARCH" != arm64 ]; then
	echo "image: ARCH=$ARCH: only arm64 images are built (the Raspberry Pi 3/4/5 and QEMU virt)" >&2
	exit 2
fi
OUT=${OUT:-dist/image}
WORK=${WORK:-dist/image-work}
VERSION=${IMAGE_VERSION:-1.0.0}
CONFIG=${CONFIG:-build/image/config.toml}
DATA_SIZE=${DATA_SIZE:-256M}
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
WORK=$(cd "$WORK" && pwd)

# 1. The kernel package, through a private apt configuration for arm64.
apt_dir=$WORK/apt
mkdir -p "$apt_dir/state/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/etc/sources.list.d" "$apt_dir/etc/preferences.d"
: >"$apt_dir/state/status"
for f in /etc/apt/sources.list.d/*.sources; do
	[ -e "$f" ] || continue
	# Each deb822 stanza of the machine's sources, for arm64 only.
	# (The Pi firmware is in the same archive's non-free-firmware.)
	awk '/^Types:/ { print; print "Architectures: arm64"; next } /^Architectures:/ { next }
		/^Components:/ && !/non-free-firmware/ { print $0 " non-free-firmware"; next } { print }' "$f" >"$apt_dir/etc/sources.list.d/$(basename "$f")"
done
if [ -f /etc/apt/sources.list ]; then
	sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}/deb [arch=arm64] /p' /etc/apt/sources.list >"$apt_dir/etc/sources.list.d/system.list"
fi
apt_opts="-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=$apt_dir/etc/sources.list.d
 -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=$apt_dir/etc/preferences.d
 -o Dir::State=$apt_dir/state -o Dir::State::status=$apt_dir/state/status -o Dir::Cache=$apt_dir/cache
 -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o Debug::NoLocking=1 -o APT::Sandbox::User=root"
debs=$WORK/debs
mkdir -p "$debs"
# fetch PACKAGE...: download the packages not in $debs yet, fetching the
# package lists first when there are none or they lack a package.
updated=""
apt_update() {
	echo "image: fetching the arm64 package lists"
	# shellcheck disable=SC2086
	apt-get -q $apt_opts update >"$WORK/apt-update.log" 2>&1 || { cat "$WORK/apt-update.log" >&2; exit 1; }
	updated=1
}
fetch() {
	for p in "$@"; do
		ls "$debs/${p}_"*.deb >/dev/null 2>&1 && continue
		ls "$apt_dir/state/lists/"*_Packages* >/dev/null 2>&1 || apt_update
		echo "image: downloading $p"
		# shellcheck disable=SC2086
		if ! (cd "$debs" && apt-get -q $apt_opts download "$p" >/dev/null 2>"$WORK/apt-download.log"); then
			[ -z "$updated" ] || { cat "$WORK/apt-download.log" >&2; exit 1; }
			apt_update
			# shellcheck disable=SC2086
			(cd "$debs" && apt-get -q $apt_opts download "$p" >/dev/null)
		fi
	done
}
# The kernel: the version linux-image-arm64 points to, once.
kdeb=$(ls "$debs"/linux-image-*-arm64_*.deb 2>/dev/null | head -1 || true)
if [ -z "$kdeb" ]; then
	fetch linux-image-arm64
	kpkg=$(dpkg-deb -f "$debs"/linux-image-arm64_*.deb Depends | tr ',' '\n' | sed -n 's/^ *\(linux-image-[^ ]*-arm64\).*/\1/p' | head -1)
	[ -n "$kpkg" ] || { echo "image: linux-image-arm64 names no kernel package" >&2; exit 1; }
	fetch "$kpkg"
	kdeb=$(ls "$debs"/linux-image-*-arm64_*.deb | head -1)
fi
kroot=$WORK/kernel
if [ ! -d "$kroot/boot" ]; then
	rm -rf "$kroot"
	dpkg-deb -x "$kdeb" "$kroot"
fi
kver=$(ls "$kroot/lib/modules" | head -1)
cp "$kroot/boot/vmlinuz-$kver" "$OUT/vmlinuz"

# 2. The modules and their dependencies, in load order.
rd=$WORK/initramfs
rm -rf "$rd"
mkdir -p "$rd/lib/modules" "$rd/etc/tinyedge" "$rd/proc" "$rd/sys" "$rd/dev" "$rd/run" "$rd/tmp" "$rd/data"
kmods=$kroot/lib/modules/$kver/kernel
find "$kmods" -name '*.ko*' >"$WORK/modules.all"
modfile() { # name -> path; modules.dep spells - and _ alike
	n=$(echo "$1" | tr '_' '-')
	u=$(echo "$1" | tr '-' '_')
	grep -E "/($n|$u)\.ko(\.xz|\.zst)?\$" "$WORK/modules.all" | head -1
}
moddeps() { # path -> names it depends on
	case "$1" in
	*.xz) xz -dc "$1" ;;
	*.zst) zstd -dcq "$1" ;;
	*) cat "$1" ;;
	esac | tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '
}
: >"$rd/etc/tinyedge/modules"
added=" "
add() { # depth-first: dependencies first
	case "$added" in *" $1 "*) return ;; esac
	f=$(modfile "$1")
	if [ -z "$f" ]; then
		echo "image: module $1 is not in $kver (built in?); skipped" >&2
		added="$added$1 "
		return
	fi
	added="$added$1 "
	for d in $(moddeps "$f"); do add "$d"; done
	f=$(modfile "$1") # sh has no local variables: add changed f
	case "$f" in
	*.xz) xz -dc "$f" >"$rd/lib/modules/$1.ko" ;;
	*.zst) zstd -dcq "$f" >"$rd/lib/modules/$1.ko" ;;
	*) cp "$f" "$rd/lib/modules/$1.ko" ;;
	esac
	echo "$1" >>"$rd/etc/tinyedge/modules"
}
for m in $(grep -v '^#' build/image/modules.txt); do add "$m"; done

# mkfs.ext4 (mke2fs) and the libraries it needs, so the first boot can
# format a blank data partition.
e2pkgs="e2fsprogs libext2fs2 libcom-err2 libblkid1 libuuid1 libc6"
# shellcheck disable=SC2086
fetch $e2pkgs
e2=$WORK/e2fsprogs
if [ ! -x "$e2/sbin/mke2fs" ]; then
	rm -rf "$e2"
	for p in $e2pkgs; do dpkg-deb -x "$(ls "$debs/${p}_"*.deb | head -1)" "$e2"; done
fi
mkdir -p "$rd/sbin" "$rd/lib/aarch64-linux-gnu"
cp "$e2/sbin/mke2fs" "$rd/sbin/mkfs.ext4"
for l in libext2fs.so.2 libcom_err.so.2 libblkid.so.1 libuuid.so.1 libe2p.so.2 libc.so.6; do
	cp -L "$e2/lib/aarch64-linux-gnu/$l" "$rd/lib/aarch64-linux-gnu/$l" 2>/dev/null ||
		cp -L "$e2/usr/lib/aarch64-linux-gnu/$l" "$rd/lib/aarch64-linux-gnu/$l"
done
cp -L "$e2/lib/ld-linux-aarch64.so.1" "$rd/lib/ld-linux-aarch64.so.1" 2>/dev/null ||
	cp -L "$e2/usr/lib/ld-linux-aarch64.so.1" "$rd/lib/ld-linux-aarch64.so.1"

# 3. For arm64: the boot stage (/init) and tinyedge (slot a).
# buildTime: the commit's date, so the same commit builds the same image.
ldflags="-s -w -X main.version=$VERSION -X main.commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -trimpath -ldflags "$ldflags" -o "$WORK/tinyedge-boot-arm64" ./cmd/tinyedge-boot
CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -trimpath -ldflags "$ldflags -X main.buildTime=$(git log -1 --format=%cI 2>/dev/null)" -o "$WORK/tinyedge-arm64" ./cmd/tinyedge
cp "$WORK/tinyedge-boot-arm64" "$rd/init"
(cd "$rd" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9n >"$OUT/initramfs.cpio.gz"

# 4. The data partition.
go build -o "$WORK/tinyedge-host" ./cmd/tinyedge
if [ -z "${KEY:-}" ]; then
	KEY=$WORK/dev.key
	[ -f "$KEY" ] || "$WORK/tinyedge-host" bundle keygen -o "$WORK/dev" >/dev/null
fi
pub=${KEY%.key}.pub
dd=$WORK/data
rm -rf "$dd"
mkdir -p "$dd/slots/a" "$dd/keys"
cp "$WORK/tinyedge-arm64" "$dd/slots/a/tinyedge"
chmod 0755 "$dd/slots/a/tinyedge"
cp "$pub" "$dd/keys/"
cp "$CONFIG" "$dd/config.toml"
size=$(stat -c %s "$dd/slots/a/tinyedge")
sum=$(sha256sum "$dd/slots/a/tinyedge" | cut -d' ' -f1)
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cat >"$dd/ota-state.json" <<JSON
{
  "format": 1,
  "active": "a",
  "previous": "",
  "trial": "",
  "tries_left": 0,
  "a": {"version": "$VERSION", "size": $size, "sha256": "$sum", "installed": "$now"},
  "b": {},
  "last": {},
  "updated": "$now",
  "generation": 1
}
JSON
rm -f "$OUT/data.img"
mkfs.ext4 -q -F -L tinyedge-data -E root_owner=0:0 -d "$dd" "$OUT/data.img" "$DATA_SIZE" >/dev/null
echo "console=ttyAMA0 quiet panic=-1" >"$OUT/cmdline"

# 5. The Raspberry Pi SD card, on request.
if [ "${RPI:-}" = 1 ]; then
	for t in sfdisk mkfs.vfat mcopy; do
		command -v $t >/dev/null || { echo "image: RPI=1 needs $t (scripts/deps.sh installs it)" >&2; exit 1; }
	done
	fetch raspi-firmware
	fw=$WORK/raspi-firmware
	[ -d "$fw/usr/lib/raspi-firmware" ] || dpkg-deb -x "$(ls "$debs"/raspi-firmware_*.deb | head -1)" "$fw"
	bd=$WORK/rpi-boot
	rm -rf "$bd"
	mkdir -p "$bd"
	cp "$fw"/usr/lib/raspi-firmware/*.bin "$fw"/usr/lib/raspi-firmware/*.elf "$fw"/usr/lib/raspi-firmware/*.dat "$bd/"
	cp "$kroot"/usr/lib/linux-image-"$kver"/broadcom/bcm2711-rpi-*.dtb "$kroot"/usr/lib/linux-image-"$kver"/broadcom/bcm2837-rpi-*.dtb "$bd/"
	cp "$OUT/vmlinuz" "$bd/kernel8.img"
	cp "$OUT/initramfs.cpio.gz" "$bd/initramfs.cpio.gz"
	# Debian's kernel carries the mainline device trees: the Pi 4's name
	# is what the firmware looks for, the Pi 3's must be given.
	cat >"$bd/config.txt" <<'TXT'
# tinyedge appliance (build/image)
arm_64bit=1
kernel=kernel8.img
initramfs initramfs.cpio.gz followkernel
enable_uart=1
dtparam=i2c_arm=on
dtparam=watchdog=on
[pi3]
device_tree=bcm2837-rpi-3-b.dtb
[pi3+]
device_tree=bcm2837-rpi-3-b-plus.dtb
[pi02]
device_tree=bcm2837-rpi-zero-2-w.dtb
[all]
TXT
	echo "console=ttyS1,115200 console=tty1 quiet panic=-1" >"$bd/cmdline.txt"
	boot_mib=256
	data_mib=$(($(stat -c %s "$OUT/data.img") / 1048576))
	rm -f "$WORK/rpi-boot.img"
	mkfs.vfat -F 32 -n TINYEDGE -C "$WORK/rpi-boot.img" $((boot_mib * 1024)) >/dev/null
	mcopy -i "$WORK/rpi-boot.img" -s "$bd"/* ::/
	sd=$OUT/rpi-sdcard.img
	rm -f "$sd"
	truncate -s $((4 + boot_mib + data_mib))M "$sd"
	printf 'label: dos\nstart=4MiB, size=%dMiB, type=c, bootable\nstart=%dMiB, size=%dMiB, type=83\n' \
		"$boot_mib" $((4 + boot_mib)) "$data_mib" | sfdisk -q "$sd"
	dd if="$WORK/rpi-boot.img" of="$sd" bs=1M seek=4 conv=notrunc,sparse status=none
	dd if="$OUT/data.img" of="$sd" bs=1M seek=$((4 + boot_mib)) conv=notrunc,sparse status=none
fi

echo "image: $OUT (kernel $kver)"
for f in vmlinuz initramfs.cpio.gz data.img $([ "${RPI:-}" = 1 ] && echo rpi-sdcard.img); do
	printf '  %-18s %10d bytes (%s on disk)\n' "$f" "$(stat -c %s "$OUT/$f")" "$(du -h "$OUT/$f" | cut -f1)"
done
printf '  %-18s %10d bytes (tinyedge-boot, /init; tinyedge is %d)\n' init "$(stat -c %s "$rd/init")" "$(stat -c %s "$WORK/tinyedge-arm64")"
echo "  modules: $(tr '\n' ' ' <"$rd/etc/tinyedge/modules")"
