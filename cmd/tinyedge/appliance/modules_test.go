package appliance

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestLoadModulesInOrderPastFailures(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, ModulesList, []byte("# the image's modules\njbd2\nmbcache\n\next4.ko\nbroken\nmissing\n"))
	for _, m := range []string{"jbd2", "mbcache", "ext4", "broken"} {
		writeFile(t, root, "/lib/modules/"+m+".ko", []byte("\x7fELF"))
	}
	sys := &fakeSys{modErrs: map[string]error{"mbcache": unix.EEXIST, "broken": unix.ENOEXEC}}
	m := &Machine{Sys: sys, Root: root}
	r, err := m.LoadModules()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"load jbd2", "load mbcache", "load ext4", "load broken", "load missing"}; !slices.Equal(sys.Calls(), want) {
		t.Errorf("calls = %q, want %q", sys.Calls(), want)
	}
	if !slices.Equal(r.Loaded, []string{"jbd2", "ext4"}) || !slices.Equal(r.Already, []string{"mbcache"}) {
		t.Errorf("loaded %q, already %q; want [jbd2 ext4] and [mbcache]", r.Loaded, r.Already)
	}
	if len(r.Failed) != 2 || !errors.Is(r.Failed[0], unix.ENOEXEC) || !strings.Contains(r.Failed[1].Error(), "module missing") {
		t.Errorf("failed = %v, want broken (ENOEXEC) and missing", r.Failed)
	}
}

func TestLoadModulesWithoutAList(t *testing.T) {
	sys := &fakeSys{}
	r, err := (&Machine{Sys: sys, Root: t.TempDir()}).LoadModules()
	if err != nil || len(r.Loaded)+len(r.Failed) != 0 || len(sys.Calls()) != 0 {
		t.Errorf("got %+v, %v, calls %q; want nothing done", r, err, sys.Calls())
	}
}

var moduleListTable = []struct {
	in   string
	want []string
	err  string
}{
	{"virtio_blk\n  ext4  \n# comment\n\n", []string{"virtio_blk", "ext4"}, ""},
	{"i2c-dev.ko", []string{"i2c-dev"}, ""},
	{"ok\nkernel/fs/ext4.ko\n", nil, "line 2"},
	{"two names\n", nil, "line 1"},
	{"..", nil, "line 1"},
}

func TestParseModuleList(t *testing.T) {
	for i, tt := range moduleListTable {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			got, err := parseModuleList(strings.NewReader(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one naming %q", err, tt.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func FuzzParseModuleList(f *testing.F) {
	for _, tt := range moduleListTable {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		names, err := parseModuleList(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, n := range names {
			if n == "" || strings.ContainsAny(n, "/ \t") || n == ".." {
				t.Fatalf("name %q from %q would leave the modules directory", n, in)
			}
		}
	})
}
