package appliance

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// extHead returns the first bytes of an ext4 file system labelled label.
func extHead(label string) []byte {
	b := make([]byte, 4096)
	binary.LittleEndian.PutUint16(b[superblockOffset+extMagicOffset:], extMagic)
	copy(b[superblockOffset+extLabelOffset:], label)
	return b
}

// disk adds a block device to a fake /sys/class/block and /dev.
func disk(t *testing.T, root, name string, head []byte, size int, parts ...string) {
	t.Helper()
	writeFile(t, root, "/sys/class/block/"+name+"/size", []byte(fmt.Sprint(size/512)+"\n"))
	writeFile(t, root, "/sys/class/block/"+name+"/ro", []byte("0\n"))
	for _, p := range parts {
		writeFile(t, root, "/sys/class/block/"+name+"/"+p+"/partition", []byte("1\n"))
	}
	dev := make([]byte, size)
	copy(dev, head)
	writeFile(t, root, "/dev/"+name, dev)
}

func TestMountDataFindsTheLabel(t *testing.T) {
	root := t.TempDir()
	disk(t, root, "vda", extHead("other"), 8192)
	disk(t, root, "vdb", extHead(DataLabel), 8192)
	disk(t, root, "loop0", extHead(DataLabel), 8192) // never a loop device
	sys := &fakeSys{}
	m := &Machine{Sys: sys, Root: root}
	r, err := m.MountData(context.Background(), DataOpts{Wait: time.Millisecond, Mkfs: func(string, string) error { t.Error("mkfs on a labelled disk"); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if r.Device != "/dev/vdb" || r.Created || r.Already {
		t.Errorf("got %+v, want /dev/vdb found", r)
	}
	if want := []string{"mount vdb data ext4"}; !slices.Equal(sys.Calls(), want) {
		t.Errorf("calls %q, want %q", sys.Calls(), want)
	}
}

func TestMountDataFormatsABlankDiskOnFirstBoot(t *testing.T) {
	root := t.TempDir()
	disk(t, root, "mmcblk0", nil, 4<<20, "mmcblk0p1", "mmcblk0p2") // has partitions: skipped
	disk(t, root, "mmcblk0p1", []byte("FAT boot"), 2<<20)
	disk(t, root, "mmcblk0p2", nil, 2<<20)
	sys := &fakeSys{}
	m := &Machine{Sys: sys, Root: root}
	var formatted string
	r, err := m.MountData(context.Background(), DataOpts{Wait: time.Millisecond, Mkfs: func(dev, label string) error {
		formatted = dev + " " + label
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if want := m.path("/dev/mmcblk0p2") + " " + DataLabel; formatted != want {
		t.Errorf("formatted %q, want %q", formatted, want)
	}
	if !r.Created || r.Device != "/dev/mmcblk0p2" {
		t.Errorf("got %+v, want mmcblk0p2 created", r)
	}
}

func TestMountDataNeverFormatsADiskWithData(t *testing.T) {
	root := t.TempDir()
	disk(t, root, "vda", append(make([]byte, 4000), 1), 2<<20) // one byte written in the first MiB
	m := &Machine{Sys: &fakeSys{}, Root: root}
	_, err := m.MountData(context.Background(), DataOpts{Wait: time.Millisecond, Mkfs: func(string, string) error { t.Error("mkfs on a used disk"); return nil }})
	if !errors.Is(err, ErrNoDataPartition) {
		t.Fatalf("err = %v, want ErrNoDataPartition", err)
	}
}

func TestMountDataWaitsForTheDevice(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, "/sys/class/block/.keep", nil)
	go func() {
		time.Sleep(100 * time.Millisecond)
		disk(t, root, "vda", extHead(DataLabel), 8192)
	}()
	m := &Machine{Sys: &fakeSys{}, Root: root}
	r, err := m.MountData(context.Background(), DataOpts{Wait: 10 * time.Second})
	if err != nil || r.Device != "/dev/vda" {
		t.Fatalf("got %+v, %v; want /dev/vda once it appeared", r, err)
	}
}

func TestMountDataAlreadyMounted(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, "/proc/self/mounts", []byte("/dev/vda /data ext4 rw 0 0\n"))
	sys := &fakeSys{}
	r, err := (&Machine{Sys: sys, Root: root}).MountData(context.Background(), DataOpts{})
	if err != nil || !r.Already || len(sys.Calls()) != 0 {
		t.Fatalf("got %+v, %v, calls %q; want it left as it is", r, err, sys.Calls())
	}
}

var labelTable = []struct {
	in    []byte
	label string
	ok    bool
}{
	{extHead("tinyedge-data"), "tinyedge-data", true},
	{extHead("sixteen-chars-xx"), "sixteen-chars-xx", true},
	{extHead(""), "", true},
	{make([]byte, 2048), "", false},
	{extHead("short")[:1100], "", false},
}

func TestExtLabel(t *testing.T) {
	for i, tt := range labelTable {
		l, ok := extLabel(tt.in)
		if l != tt.label || ok != tt.ok {
			t.Errorf("%d: got %q, %v; want %q, %v", i, l, ok, tt.label, tt.ok)
		}
	}
}

func FuzzExtLabel(f *testing.F) {
	for _, tt := range labelTable {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if l, ok := extLabel(b); ok && len(l) > 16 {
			t.Fatalf("label %q longer than the 16 bytes it has", l)
		}
	})
}

func TestMountMediaReadOnly(t *testing.T) {
	root := t.TempDir()
	disk(t, root, "vda", extHead(DataLabel), 8192)
	disk(t, root, "vdb", extHead(MediaLabel), 8192)
	writeFile(t, root, "/sys/class/block/vdb/ro", []byte("1\n"))
	sys := &fakeSys{}
	m := &Machine{Sys: sys, Root: root}
	dev, err := m.MountMedia("/media")
	if err != nil || dev != "/dev/vdb" {
		t.Fatalf("got %q, %v; want the read-only vdb", dev, err)
	}
	if want := []string{"mount vdb media ext4"}; !slices.Equal(sys.Calls(), want) {
		t.Errorf("calls %q, want %q", sys.Calls(), want)
	}
	// A read-only disk is never taken for a blank data partition.
	disk(t, root, "vdb", nil, 2<<20)
	writeFile(t, root, "/sys/class/block/vdb/ro", []byte("1\n"))
	if blank, _ := m.findBlank(); blank != "" {
		t.Errorf("findBlank = %q, want none", blank)
	}
}
