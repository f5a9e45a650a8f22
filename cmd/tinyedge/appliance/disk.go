package appliance

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DataLabel is the file system label of the data partition.
const DataLabel = "tinyedge-data"

// ErrNoDataPartition means no block device holds the data partition and
// none is blank enough to become it.
var ErrNoDataPartition = errors.New("no data partition")

// ext superblock: at byte 1024 of the device; the magic at 0x38, the
// volume label (16 bytes, NUL-padded) at 0x78.
const (
	superblockOffset = 1024
	extMagicOffset   = 0x38
	extLabelOffset   = 0x78
	extMagic         = 0xEF53
	superblockRead   = superblockOffset + extLabelOffset + 16
)

// extLabel returns the label of the ext2/3/4 file system whose first
// bytes are b, and whether b holds one.
func extLabel(b []byte) (string, bool) {
	if len(b) < superblockRead {
		return "", false
	}
	sb := b[superblockOffset:]
	if binary.LittleEndian.Uint16(sb[extMagicOffset:]) != extMagic {
		return "", false
	}
	l := sb[extLabelOffset : extLabelOffset+16]
	if i := bytes.IndexByte(l, 0); i >= 0 {
		l = l[:i]
	}
	return string(l), true
}

// blankProbe is how much of a device must be zero for it to count as
// blank: enough to hold any partition table or file system superblock.
const blankProbe = 1 << 20

// blockDevice is a candidate from /sys/class/block.
type blockDevice struct {
	name string // vda, mmcblk0p3
	dev  string // /dev/vda
}

// blockDevices lists the block devices that can hold a file system:
// not loop, RAM or optical devices, not empty, not a disk that has
// partitions (its partitions are listed instead), and writable unless
// readOnly.
func (m *Machine) blockDevices(readOnly bool) ([]blockDevice, error) {
	dir := m.path("/sys/class/block")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	var out []blockDevice
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, "loop") || strings.HasPrefix(name, "ram") || strings.HasPrefix(name, "zram") || strings.HasPrefix(name, "sr") {
			continue
		}
		sys := filepath.Join(dir, name)
		if readTrim(filepath.Join(sys, "size")) == "0" || (!readOnly && readTrim(filepath.Join(sys, "ro")) == "1") {
			continue
		}
		if hasPartitions(sys, name) {
			continue
		}
		out = append(out, blockDevice{name: name, dev: "/dev/" + name})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

func hasPartitions(sys, name string) bool {
	ents, err := os.ReadDir(sys)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), name) && fileExists(filepath.Join(sys, e.Name(), "partition")) {
			return true
		}
	}
	return false
}

func readTrim(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// readHead reads up to n bytes from the start of the device.
func (m *Machine) readHead(dev string, n int) ([]byte, error) {
	f, err := os.Open(m.path(dev))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	k, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("read %s: %w", dev, err)
	}
	return b[:k], nil
}

// FindLabel returns the device holding the ext file system labelled
// label, or "" if none does.
func (m *Machine) FindLabel(label string) (string, error) {
	devs, err := m.blockDevices(true)
	if err != nil {
		return "", err
	}
	for _, d := range devs {
		b, err := m.readHead(d.dev, superblockRead)
		if err != nil {
			continue
		}
		if l, ok := extLabel(b); ok && l == label {
			return d.dev, nil
		}
	}
	return "", nil
}

// findBlank returns the first device whose first MiB is all zeros.
func (m *Machine) findBlank() (string, error) {
	devs, err := m.blockDevices(false)
	if err != nil {
		return "", err
	}
	for _, d := range devs {
		b, err := m.readHead(d.dev, blankProbe)
		if err != nil || len(b) < blankProbe {
			continue
		}
		if isZero(b) {
			return d.dev, nil
		}
	}
	return "", nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// DataOpts configures MountData.
type DataOpts struct {
	Label  string        // "" means DataLabel
	Target string        // where to mount it; "" means /data
	Wait   time.Duration // how long devices may take to appear; 0 means 10 s
	// Mkfs creates an ext4 file system labelled label on dev; nil means
	// running mkfs.ext4, which the image must then ship.
	Mkfs func(dev, label string) error
}

// DataResult says what MountData found.
type DataResult struct {
	Device, Target string
	Created        bool // the partition was blank and was formatted
	Already        bool // it was mounted already (by the boot stage)
}

// MountData mounts the data partition, found by its label. If no device
// has the label once the wait is over, the first blank device (its first
// MiB all zeros: never written) is formatted as ext4 with the label — the
// first boot of an image whose data partition was left empty.
func (m *Machine) MountData(ctx context.Context, o DataOpts) (DataResult, error) {
	if o.Label == "" {
		o.Label = DataLabel
	}
	if o.Target == "" {
		o.Target = "/data"
	}
	if o.Wait <= 0 {
		o.Wait = 10 * time.Second
	}
	if o.Mkfs == nil {
		o.Mkfs = mkfsExt4
	}
	r := DataResult{Target: o.Target}
	if mounted, err := m.Mounted(o.Target); err == nil && mounted {
		r.Already = true
		return r, nil
	}
	deadline := time.Now().Add(o.Wait)
	for {
		dev, err := m.FindLabel(o.Label)
		if err != nil {
			return r, fmt.Errorf("data partition: %w", err)
		}
		if dev != "" {
			r.Device = dev
			break
		}
		if time.Now().After(deadline) {
			blank, err := m.findBlank()
			if err != nil {
				return r, fmt.Errorf("data partition: %w", err)
			}
			if blank == "" {
				return r, fmt.Errorf("%w: no block device has an ext4 file system labelled %q and none is blank; write the image's data partition (see build/image)", ErrNoDataPartition, o.Label)
			}
			if err := o.Mkfs(m.path(blank), o.Label); err != nil {
				return r, fmt.Errorf("data partition: format blank %s: %w", blank, err)
			}
			r.Device, r.Created = blank, true
			break
		}
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("data partition: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := os.MkdirAll(m.path(o.Target), 0o755); err != nil {
		return r, fmt.Errorf("data partition: %w", err)
	}
	if err := m.Sys.Mount(m.path(r.Device), m.path(o.Target), "ext4", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOATIME, ""); err != nil {
		return r, fmt.Errorf("mount data partition %s on %s: %w", r.Device, o.Target, err)
	}
	return r, nil
}

// MediaLabel is the label of removable media (a USB stick, a second
// virtual disk) that MountMedia mounts read-only, for updates and
// maintenance commands.
const MediaLabel = "tinyedge-media"

// MountMedia mounts the ext4 file system labelled MediaLabel read-only on
// target, if a device has it; it returns the device, or "" if none does.
func (m *Machine) MountMedia(target string) (string, error) {
	if mounted, err := m.Mounted(target); err == nil && mounted {
		return "", nil
	}
	dev, err := m.FindLabel(MediaLabel)
	if err != nil || dev == "" {
		return "", err
	}
	if err := os.MkdirAll(m.path(target), 0o755); err != nil {
		return "", fmt.Errorf("media: %w", err)
	}
	if err := m.Sys.Mount(m.path(dev), m.path(target), "ext4", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return "", fmt.Errorf("mount media %s on %s: %w", dev, target, err)
	}
	return dev, nil
}

// mkfsExt4 runs mkfs.ext4 from the image.
func mkfsExt4(dev, label string) error {
	bin := ""
	for _, dir := range []string{"/sbin", "/usr/sbin", "/bin", "/usr/bin"} {
		if p := filepath.Join(dir, "mkfs.ext4"); fileExists(p) {
			bin = p
			break
		}
	}
	if bin == "" {
		return errors.New("this image has no mkfs.ext4; write the data partition with the image's data.img instead")
	}
	out, err := exec.Command(bin, "-q", "-F", "-L", label, dev).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", bin, err, bytes.TrimSpace(out))
	}
	return nil
}
