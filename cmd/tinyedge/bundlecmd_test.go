package main

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
)

func runBundle(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := cmdBundle(args, &out, &errOut)
	code = exitCode(err, &errOut)
	return out.String(), errOut.String(), code
}

// keygen makes a key pair in dir and returns the paths of NAME.key and
// NAME.pub.
func keygen(t *testing.T, dir, name string) (string, string) {
	t.Helper()
	base := filepath.Join(dir, name)
	if out, errOut, code := runBundle(t, "keygen", "-o", base); code != 0 {
		t.Fatalf("keygen: exit %d\n%s%s", code, out, errOut)
	}
	return base + ".key", base + ".pub"
}

// hostBinary is the test binary itself: an ELF for the architecture the
// tests run on, and the flags create needs for it.
func hostBinary(t *testing.T) (string, []string) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the test binary is an ELF binary on linux only")
	}
	if runtime.GOARCH != "arm" {
		return os.Args[0], nil
	}
	goarm := "6"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "GOARM" {
				goarm = s.Value[:1]
			}
		}
	}
	return os.Args[0], []string{"--goarm", goarm}
}

func hostTarget() string {
	if runtime.GOARCH == "arm" {
		return "linux/arm GOARM="
	}
	return "linux/" + runtime.GOARCH
}

// fakeELF writes a bare ELF header for machine: enough for the
// architecture check, not a program.
func fakeELF(t *testing.T, path string, machine elf.Machine) {
	t.Helper()
	var b bytes.Buffer
	b.Write([]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS32), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT), 0})
	b.Write(make([]byte, 8))
	hdr := struct {
		Type, Machine                             uint16
		Version, Entry, Phoff, Shoff, Flags       uint32
		Ehsize, Phentsize, Phnum, Shentsize, Shnu uint16
		Shstrndx                                  uint16
	}{Type: uint16(elf.ET_EXEC), Machine: uint16(machine), Version: 1, Ehsize: 52, Phentsize: 32, Shentsize: 40}
	binary.Write(&b, binary.LittleEndian, hdr)
	b.Write(bytes.Repeat([]byte{0xaa}, 1000)) // the "program"
	if err := os.WriteFile(path, b.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestBundleKeygen(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "release")
	out, errOut, code := runBundle(t, "keygen", "-o", base)
	if code != 0 || !strings.Contains(out, "wrote "+base+".key") || !strings.Contains(out, "wrote "+base+".pub: the public key, key id ") {
		t.Fatalf("keygen: exit %d\n%s%s", code, out, errOut)
	}
	if fi, err := os.Stat(base + ".key"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("private key: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	before, _ := os.ReadFile(base + ".key")
	_, errOut, code = runBundle(t, "keygen", "-o", base)
	if code != 1 || !strings.Contains(errOut, "exists; refusing to overwrite") {
		t.Errorf("second keygen: exit %d, stderr %q; want 1 and a refusal", code, errOut)
	}
	if after, _ := os.ReadFile(base + ".key"); !bytes.Equal(before, after) {
		t.Error("the second keygen changed the private key")
	}
	if _, _, code := runBundle(t, "keygen"); code != 2 {
		t.Errorf("keygen without -o: exit %d, want 2", code)
	}
}

func TestBundleCreateInspect(t *testing.T) {
	dir := t.TempDir()
	key, pub := keygen(t, dir, "release")
	_, otherPub := keygen(t, dir, "other")
	bin, extra := hostBinary(t)
	out := filepath.Join(dir, "tinyedge.bundle")
	args := append([]string{"create", "--key", key, "--version", "1.4.0", "--min-version", "1.0.0", "--binary", bin, "-o", out}, extra...)
	stdout, stderr, code := runBundle(t, args...)
	if code != 0 || !strings.Contains(stdout, "wrote "+out+": tinyedge 1.4.0 for "+hostTarget()) {
		t.Fatalf("create: exit %d\n%s%s", code, stdout, stderr)
	}
	binBytes, _ := os.ReadFile(bin)
	sum := sha256.Sum256(binBytes)

	t.Run("verified", func(t *testing.T) {
		stdout, stderr, code := runBundle(t, "inspect", out, "--pub", pub)
		for _, want := range []string{
			"version      1.4.0\n", "target       " + hostTarget(), "min-version  1.0.0\n", "product      tinyedge\n",
			"tinyedge", hex.EncodeToString(sum[:]), "signature    ok: trusted key id", "(" + pub + ")",
			"payload      tinyedge: sha256 ok\n", "verified\n",
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("inspect output lacks %q:\n%s", want, stdout)
			}
		}
		if code != 0 {
			t.Errorf("exit %d, want 0; stderr %q", code, stderr)
		}
	})
	t.Run("rotation", func(t *testing.T) {
		_, stderr, code := runBundle(t, "inspect", "--pub", otherPub, out, "--pub", pub)
		if code != 0 {
			t.Errorf("exit %d, want 0 (one of two keys signed it); stderr %q", code, stderr)
		}
	})
	t.Run("no key", func(t *testing.T) {
		stdout, stderr, code := runBundle(t, "inspect", out)
		if code != 1 || !strings.Contains(stdout, "version      1.4.0") || !strings.Contains(stdout, "NOT CHECKED") || !strings.Contains(stderr, "give --pub") {
			t.Errorf("exit %d, want 1\n%s%s", code, stdout, stderr)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		stdout, stderr, code := runBundle(t, "inspect", out, "--pub", otherPub)
		if code != 1 || !strings.Contains(stdout, "NOT VERIFIED") || !strings.Contains(stderr, "signature does not verify with any of the 1 trusted keys") || !strings.Contains(stderr, "signed with the right key?") {
			t.Errorf("exit %d, want 1\n%s%s", code, stdout, stderr)
		}
	})
	b, _ := os.ReadFile(out)
	damaged := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tampered := bytes.Clone(b)
	tampered[len(tampered)-100] ^= 1
	cases := []struct {
		name, file, stdout, stderr string
	}{
		{"tampered payload", damaged("tampered", tampered), "payload      tinyedge: FAILED", `payload "tinyedge" has SHA-256`},
		{"tampered manifest", damaged("manifest", bytes.Replace(b, []byte("1.4.0"), []byte("9.4.0"), 1)), "NOT VERIFIED", "altered or damaged"},
		{"truncated", damaged("truncated", b[:len(b)-1]), "payload      tinyedge: FAILED", "cut short"},
		{"truncated header", damaged("header", b[:40]), "", "cut short"},
		{"trailing data", damaged("trailing", append(bytes.Clone(b), 0)), "payload      tinyedge: FAILED", "data follows the last payload"},
		{"not a bundle", damaged("garbage", []byte("#!/bin/sh\necho hello\n")), "", "not a tinyedge bundle"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runBundle(t, "inspect", tc.file, "--pub", pub)
			if code != 1 || !strings.Contains(stdout, tc.stdout) || !strings.Contains(stderr, tc.stderr) || strings.Contains(stdout, "verified\n") {
				t.Errorf("exit %d, want 1 with %q and %q\n%s%s", code, tc.stdout, tc.stderr, stdout, stderr)
			}
		})
	}
	for _, args := range [][]string{
		{"inspect"},
		{"inspect", out, out},
		{"inspect", filepath.Join(dir, "missing.bundle"), "--pub", pub},
		{"inspect", out, "--pub", filepath.Join(dir, "missing.pub")},
		{"inspect", out, "--pub", key},
		{"inspect", out, "--frob"},
	} {
		if _, stderr, code := runBundle(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2; stderr %q", args, code, stderr)
		}
	}
}

func TestBundleCreateRefusals(t *testing.T) {
	dir := t.TempDir()
	key, pub := keygen(t, dir, "release")
	bin, extra := hostBinary(t)
	armBin := filepath.Join(dir, "tinyedge-linux-arm")
	fakeELF(t, armBin, elf.EM_ARM)
	arm64Bin := filepath.Join(dir, "tinyedge-linux-arm64")
	fakeELF(t, arm64Bin, elf.EM_AARCH64)
	script := filepath.Join(dir, "script")
	os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755)
	openKey := filepath.Join(dir, "open.key")
	k, _ := os.ReadFile(key)
	os.WriteFile(openKey, k, 0o644)
	otherArch := "arm64"
	if runtime.GOARCH == "arm64" {
		otherArch = "amd64"
	}
	out := filepath.Join(dir, "out.bundle")
	base := []string{"create", "--key", key, "--version", "1.4.0", "-o", out}
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad version", []string{"create", "--key", key, "--version", "1.4", "--binary", bin, "-o", out}, 2, `--version: version "1.4"`},
		{"bad min-version", append(append(base, "--binary", bin, "--min-version", "x"), extra...), 2, "--min-version"},
		{"missing flags", []string{"create", "--key", key, "--binary", bin}, 2, "want `tinyedge bundle create"},
		{"key open to others", append([]string{"create", "--key", openKey, "--version", "1.4.0", "--binary", bin, "-o", out}, extra...), 1, "chmod 600 " + openKey},
		{"public key as key", append([]string{"create", "--key", pub, "--version", "1.4.0", "--binary", bin, "-o", out}, extra...), 1, ""},
		{"goarch disagrees with ELF", append(base, "--binary", bin, "--goarch", otherArch), 2, "is an ELF binary for " + runtime.GOARCH},
		{"arm without goarm", append(base, "--binary", armBin), 2, "ARM version cannot be read reliably from the ELF header; pass --goarm"},
		{"arm with goarm 8", append(base, "--binary", armBin, "--goarm", "8"), 2, "want 5, 6 or 7"},
		{"goarm on arm64", append(base, "--binary", arm64Bin, "--goarm", "7"), 2, "--goarm 7 is for arm binaries; this one is arm64"},
		{"not ELF", append(base, "--binary", script), 2, "pass --goarch"},
		{"missing binary", append(base, "--binary", filepath.Join(dir, "nope")), 2, "no such file"},
		{"missing output dir", []string{"create", "--key", key, "--version", "1.4.0", "--binary", armBin, "--goarm", "6", "-o", filepath.Join(dir, "no", "out.bundle")}, 1, "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runBundle(t, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, want %d with %q\n%s%s", code, tc.code, tc.want, stdout, stderr)
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("a refused create wrote %s", out)
			}
		})
	}
	if entries, _ := filepath.Glob(filepath.Join(dir, "*.tmp*")); len(entries) != 0 {
		t.Errorf("temporary files left: %v", entries)
	}

	// What the flags settle, the manifest says.
	stdout, stderr, code := runBundle(t, append(base, "--binary", armBin, "--goarm", "6")...)
	if code != 0 || !strings.Contains(stdout, "for linux/arm GOARM=6") {
		t.Fatalf("create for arm: exit %d\n%s%s", code, stdout, stderr)
	}
	stdout, _, code = runBundle(t, "inspect", out, "--pub", pub)
	if code != 0 || !strings.Contains(stdout, "target       linux/arm GOARM=6\n") || !strings.Contains(stdout, "tinyedge   1052 bytes") {
		t.Errorf("inspect: exit %d\n%s", code, stdout)
	}
	_, stderr, code = runBundle(t, append(base, "--binary", script, "--goarch", "arm64")...)
	if code != 0 || !strings.Contains(stderr, "warning: "+script+" is not an ELF binary") {
		t.Errorf("non-ELF with --goarch: exit %d, stderr %q; want 0 and a warning", code, stderr)
	}
}

func TestBundleUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"sign"}} {
		_, stderr, code := runBundle(t, args...)
		if code != 2 || !strings.Contains(stderr, "tinyedge bundle keygen -o NAME") {
			t.Errorf("%q: exit %d, want 2 and the usage; stderr %q", args, code, stderr)
		}
	}
	if stdout, _, code := runBundle(t, "help"); code != 0 || !strings.Contains(stdout, "tinyedge bundle inspect") {
		t.Errorf("help: exit %d", code)
	}
}

var interspersedCases = []struct {
	args  []string
	pos   []string
	dir   string
	tail  int
	fails bool
}{
	{args: nil},
	{args: []string{"m"}, pos: []string{"m"}},
	{args: []string{"m", "--data-dir", "d"}, pos: []string{"m"}, dir: "d"},
	{args: []string{"--data-dir", "d", "m"}, pos: []string{"m"}, dir: "d"},
	{args: []string{"a", "--tail", "3", "b", "--data-dir=d"}, pos: []string{"a", "b"}, dir: "d", tail: 3},
	{args: []string{"--tail", "1", "--", "--data-dir", "-x"}, pos: []string{"--data-dir", "-x"}, tail: 1},
	{args: []string{"m", "--", "--tail", "2"}, pos: []string{"m", "--tail", "2"}},
	{args: []string{"m", "--nosuch"}, fails: true},
	{args: []string{"--tail", "x", "m"}, fails: true},
}

func interspersedFlags() (*flag.FlagSet, *string, *int) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs, fs.String("data-dir", "", ""), fs.Int("tail", 0, "")
}

func TestParseInterspersed(t *testing.T) {
	for _, tc := range interspersedCases {
		fs, dir, tail := interspersedFlags()
		pos, err := parseInterspersed(fs, tc.args)
		if (err != nil) != tc.fails {
			t.Errorf("%q: error %v, want failure %v", tc.args, err, tc.fails)
			continue
		}
		if !tc.fails && (!slices.Equal(pos, tc.pos) || *dir != tc.dir || *tail != tc.tail) {
			t.Errorf("%q: positional %q, data-dir %q, tail %d; want %q, %q, %d", tc.args, pos, *dir, *tail, tc.pos, tc.dir, tc.tail)
		}
	}
}

// FuzzParseInterspersed: the arguments, NUL-separated. What comes back
// as positional is each an argument, in their order.
func FuzzParseInterspersed(f *testing.F) {
	for _, tc := range interspersedCases {
		f.Add(strings.Join(tc.args, "\x00"))
	}
	f.Fuzz(func(t *testing.T, joined string) {
		var args []string
		if joined != "" {
			args = strings.Split(joined, "\x00")
		}
		fs, _, _ := interspersedFlags()
		pos, err := parseInterspersed(fs, args)
		if err != nil {
			return
		}
		i := 0
		for _, p := range pos {
			for i < len(args) && args[i] != p {
				i++
			}
			if i == len(args) {
				t.Fatalf("%q: positional %q are not arguments in order", args, pos)
			}
			i++
		}
	})
}
