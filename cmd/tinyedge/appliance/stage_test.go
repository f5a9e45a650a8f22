package appliance

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/build/ota"
)

// bootRoot is a machine with a disk holding the data partition and one
// kernel module listed; slots and state are added by the tests.
func bootRoot(t *testing.T) (*Machine, *fakeSys) {
	t.Helper()
	root := t.TempDir()
	disk(t, root, "vda", extHead(DataLabel), 8192)
	writeFile(t, root, ModulesList, []byte("virtio_blk\n"))
	writeFile(t, root, ModulesDir+"/virtio_blk.ko", []byte("module"))
	sys := &fakeSys{}
	return &Machine{Sys: sys, Root: root}, sys
}

// slotBinary writes slot s's binary and returns what the state records
// of it.
func slotBinary(t *testing.T, m *Machine, s ota.Slot, version string) ota.SlotInfo {
	t.Helper()
	b := []byte("#!tinyedge " + version + "\n")
	p := ota.BinaryPath(m.path("/data"), s)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return ota.SlotInfo{Version: version, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:]), Installed: time.Now().UTC()}
}

func writeState(t *testing.T, m *Machine, st ota.State) {
	t.Helper()
	st.Format = ota.StateFormat
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, m.Root, "/data/"+ota.StateFile, b)
}

// execCall is one exec the boot stage made.
type execCall struct {
	path string
	argv []string
	env  []string
}

// recordExec returns an Exec that records its calls and fails for the
// paths in fail.
func recordExec(calls *[]execCall, fail map[string]error) func(string, []string, []string) error {
	return func(path string, argv, env []string) error {
		*calls = append(*calls, execCall{path, argv, env})
		return fail[path]
	}
}

func newStage(m *Machine, calls *[]execCall, fail map[string]error) *Stage {
	return &Stage{
		Machine: m, Version: "0.9.0",
		Args: []string{"init", "update", "status"},
		Env:  []string{"PATH=/bin", HandoffTrialEnv + "=true"},
		Wait: time.Millisecond,
		Mkfs: func(string, string) error { return errors.New("no blank disk in this test") },
		Exec: recordExec(calls, fail),
	}
}

func TestStageExecsTheActiveSlot(t *testing.T) {
	m, sys := bootRoot(t)
	writeState(t, m, ota.State{Active: ota.SlotA, A: slotBinary(t, m, ota.SlotA, "1.0.0")})
	var calls []execCall
	st := newStage(m, &calls, nil)
	dr, err := st.Prepare(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if dr.Device != "/dev/vda" {
		t.Errorf("data partition on %q, want /dev/vda", dr.Device)
	}
	if err := st.Handover(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"load virtio_blk", "mount vda data ext4"}; !slices.Equal(sys.Calls(), want) {
		t.Errorf("kernel calls %q, want %q", sys.Calls(), want)
	}
	if len(calls) != 1 {
		t.Fatalf("%d execs, want 1", len(calls))
	}
	c := calls[0]
	bin := ota.BinaryPath(m.path("/data"), ota.SlotA)
	if c.path != bin || !slices.Equal(c.argv, []string{bin, "init", "update", "status"}) {
		t.Errorf("exec %s %q, want %s with the kernel's arguments", c.path, c.argv, bin)
	}
	// The handoff replaces whatever the environment held before.
	want := []string{"PATH=/bin", HandoffStageEnv + "=0.9.0", HandoffSlotEnv + "=a", HandoffTrialEnv + "=false"}
	if !slices.Equal(c.env, want) {
		t.Errorf("env %q, want %q", c.env, want)
	}
}

// handoffOf reads the handoff an exec passed.
func handoffOf(t *testing.T, c execCall) Handoff {
	t.Helper()
	env := map[string]string{}
	for _, kv := range c.env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	h, ok, err := ReadHandoff(func(k string) string { return env[k] })
	if !ok || err != nil {
		t.Fatalf("exec of %s: no handoff (%v): env %q", c.path, err, c.env)
	}
	return h
}

func TestStageCountsTriesThenRollsBack(t *testing.T) {
	m, _ := bootRoot(t)
	writeState(t, m, ota.State{Active: ota.SlotA, Trial: ota.SlotB, Tries: 3, TriesLeft: 3,
		A: slotBinary(t, m, ota.SlotA, "1.0.0"), B: slotBinary(t, m, ota.SlotB, "2.0.0")})
	var got []string
	for boot := 1; boot <= 5; boot++ {
		var calls []execCall
		st := newStage(m, &calls, nil)
		if err := st.Handover(); err != nil {
			t.Fatalf("boot %d: %v", boot, err)
		}
		if len(calls) != 1 {
			t.Fatalf("boot %d: %d execs, want 1", boot, len(calls))
		}
		h := handoffOf(t, calls[0])
		got = append(got, string(h.Slot)+" "+map[bool]string{true: "trial", false: "active"}[h.Trial])
		if want := ota.BinaryPath(m.path("/data"), h.Slot); calls[0].path != want {
			t.Errorf("boot %d: exec %s, want %s", boot, calls[0].path, want)
		}
	}
	// The trial never confirmed: three tries, then back on a for good.
	want := []string{"b trial", "b trial", "b trial", "a active", "a active"}
	if !slices.Equal(got, want) {
		t.Errorf("boots %q, want %q", got, want)
	}
	st, err := ota.Status(m.path("/data"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Last.Outcome != ota.OutcomeRolledBack || st.Last.Version != "2.0.0" || !strings.Contains(st.Last.Reason, "after 3 tries") {
		t.Errorf("last result %+v, want 2.0.0 rolled back after 3 tries", st.Last)
	}
}

func TestStageFallsBackWhenTheChosenBinaryCannotStart(t *testing.T) {
	tests := []struct {
		name     string
		state    func(m *Machine) ota.State
		fail     []ota.Slot
		want     []string // slot of each exec
		err      bool
		outcome  ota.Outcome
		stateNow func(st ota.State) bool
	}{
		{
			name: "trial falls back to its rollback target",
			state: func(m *Machine) ota.State {
				return ota.State{Active: ota.SlotA, Trial: ota.SlotB, Tries: 3, TriesLeft: 3,
					A: slotBinary(t, m, ota.SlotA, "1.0.0"), B: slotBinary(t, m, ota.SlotB, "2.0.0")}
			},
			fail:     []ota.Slot{ota.SlotB},
			want:     []string{"b", "a"},
			outcome:  ota.OutcomeRolledBack,
			stateNow: func(st ota.State) bool { return st.Active == ota.SlotA && st.Trial == ota.NoSlot },
		},
		{
			name: "active falls back to the previous version",
			state: func(m *Machine) ota.State {
				return ota.State{Active: ota.SlotB, Previous: ota.SlotA,
					A: slotBinary(t, m, ota.SlotA, "1.0.0"), B: slotBinary(t, m, ota.SlotB, "2.0.0")}
			},
			fail:     []ota.Slot{ota.SlotB},
			want:     []string{"b", "a"},
			outcome:  ota.OutcomeRolledBack,
			stateNow: func(st ota.State) bool { return st.Active == ota.SlotA && st.Previous == ota.SlotB },
		},
		{
			name: "nothing left to fall back to",
			state: func(m *Machine) ota.State {
				return ota.State{Active: ota.SlotA, A: slotBinary(t, m, ota.SlotA, "1.0.0")}
			},
			fail: []ota.Slot{ota.SlotA},
			want: []string{"a"},
			err:  true,
		},
		{
			name: "both versions fail",
			state: func(m *Machine) ota.State {
				return ota.State{Active: ota.SlotB, Previous: ota.SlotA,
					A: slotBinary(t, m, ota.SlotA, "1.0.0"), B: slotBinary(t, m, ota.SlotB, "2.0.0")}
			},
			fail: []ota.Slot{ota.SlotA, ota.SlotB},
			want: []string{"b", "a"},
			err:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := bootRoot(t)
			writeState(t, m, tt.state(m))
			fail := map[string]error{}
			for _, s := range tt.fail {
				fail[ota.BinaryPath(m.path("/data"), s)] = syscall.ENOEXEC
			}
			var calls []execCall
			err := newStage(m, &calls, fail).Handover()
			var got []string
			for _, c := range calls {
				got = append(got, string(handoffOf(t, c).Slot))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("exec'd slots %q, want %q", got, tt.want)
			}
			if tt.err {
				if !errors.Is(err, ErrNothingToRun) || !strings.Contains(err.Error(), "exec format error") {
					t.Errorf("err %v, want ErrNothingToRun saying why the exec failed", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			st, err := ota.Status(m.path("/data"))
			if err != nil {
				t.Fatal(err)
			}
			if st.Last.Outcome != tt.outcome || !strings.Contains(st.Last.Reason, "boot stage could not start") || !tt.stateNow(st) {
				t.Errorf("state %+v, want the failed version rolled back", st)
			}
		})
	}
}

func TestStageFirstBootInstallsFromTheMedia(t *testing.T) {
	m, sys := bootRoot(t)
	disk(t, m.Root, "vdb", extHead(MediaLabel), 8192)
	// The fake mount does not mount: put the media's file where it
	// would appear.
	writeFile(t, m.Root, "/media/tinyedge", []byte("#!tinyedge from the stick\n"))
	var calls []execCall
	st := newStage(m, &calls, nil)
	if _, err := st.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := st.Handover(); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(sys.Calls(), "mount vdb media ext4") {
		t.Errorf("kernel calls %q: the media was not mounted", sys.Calls())
	}
	bin := ota.BinaryPath(m.path("/data"), ota.SlotA)
	if len(calls) != 1 || calls[0].path != bin {
		t.Fatalf("execs %+v, want one of %s", calls, bin)
	}
	if b, err := os.ReadFile(bin); err != nil || string(b) != "#!tinyedge from the stick\n" {
		t.Errorf("slot a holds %q (%v), want the media's tinyedge", b, err)
	}
	if fi, err := os.Stat(bin); err != nil || fi.Mode().Perm()&0o100 == 0 {
		t.Errorf("slot a binary %v (%v), want executable", fi.Mode(), err)
	}
	if _, err := os.Stat(bin + ".new"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s.new left behind (%v)", bin, err)
	}
	s, err := ota.Status(m.path("/data"))
	if err != nil || s.Active != ota.SlotA {
		t.Errorf("state %+v (%v), want slot a active", s, err)
	}
}

func TestStageWithNothingToRun(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, m *Machine)
		want  string
	}{
		{"blank partition, no media", func(t *testing.T, m *Machine) {}, "write the image's data.img"},
		{"media without tinyedge", func(t *testing.T, m *Machine) {
			disk(t, m.Root, "vdb", extHead(MediaLabel), 8192)
		}, "write the image's data.img"},
		{"a state naming no slot is never overwritten from the media", func(t *testing.T, m *Machine) {
			writeState(t, m, ota.State{})
			disk(t, m.Root, "vdb", extHead(MediaLabel), 8192)
			writeFile(t, m.Root, "/media/tinyedge", []byte("#!other\n"))
		}, "no slot binary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := bootRoot(t)
			tt.setup(t, m)
			var calls []execCall
			err := newStage(m, &calls, nil).Handover()
			if !errors.Is(err, ErrNothingToRun) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want ErrNothingToRun saying %q", err, tt.want)
			}
			if len(calls) != 0 {
				t.Errorf("execs %+v, want none", calls)
			}
			if _, err := os.Stat(ota.BinaryPath(m.path("/data"), ota.SlotA)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("slot a written (%v)", err)
			}
		})
	}
}

func TestStageWithoutDataPartition(t *testing.T) {
	m := &Machine{Sys: &fakeSys{}, Root: t.TempDir()}
	writeFile(t, m.Root, "/sys/class/block/.keep", nil)
	var calls []execCall
	_, err := newStage(m, &calls, nil).Prepare(context.Background())
	if !errors.Is(err, ErrNoDataPartition) {
		t.Errorf("err %v, want ErrNoDataPartition", err)
	}
}

var handoffTests = []struct {
	name string
	env  map[string]string
	want Handoff
	ok   bool
	err  bool
}{
	{"none", map[string]string{}, Handoff{}, false, false},
	{"slot b on trial", map[string]string{HandoffStageEnv: "1.0.0", HandoffSlotEnv: "b", HandoffTrialEnv: "true"}, Handoff{"1.0.0", ota.SlotB, true}, true, false},
	{"slot a", map[string]string{HandoffStageEnv: "1.0.0", HandoffSlotEnv: "a", HandoffTrialEnv: "false"}, Handoff{"1.0.0", ota.SlotA, false}, true, false},
	{"trial unset", map[string]string{HandoffStageEnv: "x", HandoffSlotEnv: "a"}, Handoff{"x", ota.SlotA, false}, true, false},
	{"no slot", map[string]string{HandoffStageEnv: "1.0.0"}, Handoff{}, true, true},
	{"bad slot", map[string]string{HandoffStageEnv: "1.0.0", HandoffSlotEnv: "c"}, Handoff{}, true, true},
	{"bad trial", map[string]string{HandoffStageEnv: "1.0.0", HandoffSlotEnv: "a", HandoffTrialEnv: "yes"}, Handoff{}, true, true},
}

func TestReadHandoff(t *testing.T) {
	for _, tt := range handoffTests {
		t.Run(tt.name, func(t *testing.T) {
			h, ok, err := ReadHandoff(func(k string) string { return tt.env[k] })
			if ok != tt.ok || (err != nil) != tt.err {
				t.Fatalf("ok %v err %v, want ok %v err %v", ok, err, tt.ok, tt.err)
			}
			if !tt.err && h != tt.want {
				t.Errorf("got %+v, want %+v", h, tt.want)
			}
		})
	}
}

// FuzzReadHandoff: whatever the environment holds, a handoff read without
// error survives Environ and reads back the same.
func FuzzReadHandoff(f *testing.F) {
	for _, tt := range handoffTests {
		f.Add(tt.env[HandoffStageEnv], tt.env[HandoffSlotEnv], tt.env[HandoffTrialEnv])
	}
	f.Fuzz(func(t *testing.T, stage, slot, trial string) {
		env := map[string]string{HandoffStageEnv: stage, HandoffSlotEnv: slot, HandoffTrialEnv: trial}
		h, ok, err := ReadHandoff(func(k string) string { return env[k] })
		if !ok || err != nil {
			return
		}
		back := map[string]string{}
		for _, kv := range h.Environ(nil) {
			k, v, _ := strings.Cut(kv, "=")
			back[k] = v
		}
		h2, ok2, err2 := ReadHandoff(func(k string) string { return back[k] })
		if !ok2 || err2 != nil || h2 != h {
			t.Errorf("%+v read back as %+v (%v %v)", h, h2, ok2, err2)
		}
	})
}
