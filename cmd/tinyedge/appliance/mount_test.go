package appliance

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMountBaseMountsWhatIsMissing(t *testing.T) {
	tests := []struct {
		name    string
		mounted string // /proc/self/mounts; "" means the file is missing
		want    []string
	}{
		{"fresh boot", "", []string{"mount proc proc proc", "mount sysfs sys sysfs", "mount devtmpfs dev devtmpfs", "mount tmpfs run tmpfs", "mount tmpfs tmp tmpfs"}},
		{"after the boot stage", "proc /proc proc rw 0 0\nsysfs /sys sysfs rw 0 0\ndevtmpfs /dev devtmpfs rw 0 0\ntmpfs /run tmpfs rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n", nil},
		{"some", "proc /proc proc rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n", []string{"mount sysfs sys sysfs", "mount devtmpfs dev devtmpfs", "mount tmpfs run tmpfs"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if tt.mounted != "" {
				writeFile(t, root, "/proc/self/mounts", []byte(tt.mounted))
			}
			sys := &fakeSys{}
			m := &Machine{Sys: sys, Root: root}
			if err := m.MountBase(); err != nil {
				t.Fatal(err)
			}
			if got := sys.Calls(); !slices.Equal(got, tt.want) {
				t.Errorf("calls = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMountBaseGoesOnAfterAFailure(t *testing.T) {
	sys := &fakeSys{mountFn: func(target string) error {
		if strings.HasSuffix(target, "/sys") {
			return unix.EPERM
		}
		if strings.HasSuffix(target, "/dev") {
			return unix.EBUSY // mounted, though /proc did not say so
		}
		return nil
	}}
	m := &Machine{Sys: sys, Root: t.TempDir()}
	err := m.MountBase()
	if err == nil || !strings.Contains(err.Error(), "mount sysfs on /sys") {
		t.Fatalf("err = %v, want the /sys failure named", err)
	}
	if strings.Contains(err.Error(), "/dev") {
		t.Errorf("err = %v: EBUSY (already mounted) is no failure", err)
	}
	if got := len(sys.Calls()); got != 5 {
		t.Errorf("%d mounts tried, want all 5", got)
	}
}

var mountTable = []struct {
	in   string
	want []mountPoint
	err  bool
}{
	{"proc /proc proc rw,nosuid 0 0\n", []mountPoint{{source: "proc", target: "/proc", fstype: "proc"}}, false},
	{"/dev/vda /my\\040data ext4 rw 0 0\n\n", []mountPoint{{source: "/dev/vda", target: "/my data", fstype: "ext4"}}, false},
	{"a\\134b /x\\011y tmpfs rw 0 0", []mountPoint{{source: `a\b`, target: "/x\ty", fstype: "tmpfs"}}, false},
	{"bad\\9 /t\\04 tmpfs", []mountPoint{{source: `bad\9`, target: `/t\04`, fstype: "tmpfs"}}, false},
	{"only two\n", nil, true},
}

func TestParseMounts(t *testing.T) {
	for i, tt := range mountTable {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			got, err := parseMounts(strings.NewReader(tt.in))
			if (err != nil) != tt.err {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
			if !tt.err && !slices.Equal(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func FuzzParseMounts(f *testing.F) {
	for _, tt := range mountTable {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		mps, err := parseMounts(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, mp := range mps {
			if mp.fstype == "" || strings.ContainsAny(mp.fstype, " \t\n") {
				t.Fatalf("fstype %q from %q", mp.fstype, in)
			}
		}
	})
}
