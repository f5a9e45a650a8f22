package ota

import (
	"bytes"
	"context"
	be "encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/tinyedge/tinyedge/build/bundle"
)

// signedLen returns the length of b's signed manifest (header field N).
func signedLen(b []byte) int { return int(be.BigEndian.Uint32(b[8:12])) }

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

// unsigned returns b with the signature of its COSE_Sign1 emptied.
func unsigned(t *testing.T, b []byte) []byte {
	t.Helper()
	n := signedLen(b)
	var msg cbor.Tag
	if err := cbor.Unmarshal(b[12:12+n], &msg); err != nil {
		t.Fatal(err)
	}
	fields := msg.Content.([]any)
	fields[3] = []byte{}
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := em.Marshal(cbor.Tag{Number: 18, Content: fields})
	if err != nil {
		t.Fatal(err)
	}
	out := append(bytes.Clone(b[:8]), 0, 0, 0, 0)
	be.BigEndian.PutUint32(out[8:], uint32(len(signed)))
	out = append(out, signed...)
	return append(out, b[12+n:]...)
}

// TestApplyRefusals applies bundles that must be refused to a device
// running 2.0.0 (confirmed, 1.0.0 kept as rollback target) and checks
// each is refused for its reason, with a message that says what to do,
// and that nothing under the data directory changed.
func TestApplyRefusals(t *testing.T) {
	good := update(t, "3.0.0")
	n := signedLen(good)
	payloadAt := 12 + n
	arm := func(goarm string) []byte {
		return makeBundle(t, signingKey(), bundle.Manifest{Version: "3.0.0", GOARCH: "arm", GOARM: goarm}, payload{BinaryName, binary("3.0.0")})
	}
	tests := []struct {
		name   string
		bundle []byte
		opts   func(*ApplyOpts)
		want   error
		text   string // part of the message that tells the user what to do
	}{
		{name: "tampered signature", bundle: flip(good, 12+n-1), want: bundle.ErrBadSignature, text: "altered"},
		{name: "tampered manifest", bundle: bytes.Replace(good, []byte("3.0.0"), []byte("3.0.1"), 1), want: bundle.ErrBadSignature, text: "altered"},
		{name: "tampered payload first byte", bundle: flip(good, payloadAt), want: bundle.ErrDigestMismatch, text: "fetch the bundle again"},
		{name: "tampered payload middle byte", bundle: flip(good, payloadAt+binSize/2), want: bundle.ErrDigestMismatch, text: "fetch the bundle again"},
		{name: "tampered payload last byte", bundle: flip(good, len(good)-1), want: bundle.ErrDigestMismatch, text: "fetch the bundle again"},
		{name: "wrong key", bundle: makeBundle(t, otherKey(), bundle.Manifest{Version: "3.0.0", GOARCH: "arm64"}, payload{BinaryName, binary("3.0.0")}), want: bundle.ErrBadSignature, text: "right key"},
		{name: "no trusted keys", bundle: good, opts: func(o *ApplyOpts) { o.TrustedKeys = nil }, want: bundle.ErrNoTrustedKeys, text: ".pub"},
		{name: "unsigned", bundle: unsigned(t, good), want: bundle.ErrUnsigned, text: "sign the bundle"},
		{name: "truncated in the payload", bundle: good[:payloadAt+binSize/2], want: bundle.ErrTruncated, text: "fetch it again"},
		{name: "truncated by one byte", bundle: good[:len(good)-1], want: bundle.ErrTruncated, text: "fetch it again"},
		{name: "truncated in the manifest", bundle: good[:12+n/2], want: bundle.ErrTruncated, text: "fetch it again"},
		{name: "data after the payload", bundle: append(bytes.Clone(good), 0), want: bundle.ErrFormat, text: "damaged"},
		{name: "not a bundle", bundle: binary("3.0.0"), want: bundle.ErrNotBundle, text: "right file"},
		{name: "wrong architecture", bundle: arm("6"), want: bundle.ErrWrongTarget, text: "linux/arm64"},
		{name: "newer ARM version", bundle: arm("7"), opts: func(o *ApplyOpts) { o.GOARCH, o.GOARM = "arm", "6" }, want: bundle.ErrWrongTarget, text: "does not run"},
		{name: "downgrade", bundle: update(t, "1.5.0"), want: bundle.ErrDowngrade, text: "allow downgrades"},
		{
			name: "minimum version not met",
			bundle: makeBundle(t, signingKey(), bundle.Manifest{Version: "3.0.0", MinVersion: "2.5.0", GOARCH: "arm64"},
				payload{BinaryName, binary("3.0.0")}),
			want: bundle.ErrTooOld, text: "intermediate update",
		},
		{
			name: "two payloads",
			bundle: makeBundle(t, signingKey(), bundle.Manifest{Version: "3.0.0", GOARCH: "arm64"},
				payload{BinaryName, binary("3.0.0")}, payload{"extra", []byte("x")}),
			want: ErrNoBinary, text: "bundle create",
		},
		{
			name: "payload not named tinyedge",
			bundle: makeBundle(t, signingKey(), bundle.Manifest{Version: "3.0.0", GOARCH: "arm64"},
				payload{"tinyedge-arm64", binary("3.0.0")}),
			want: ErrNoBinary, text: "bundle create",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := confirmedDevice(t)
			before := snapshot(t, dir)
			opts := applyOpts("2.0.0")
			if tt.opts != nil {
				tt.opts(&opts)
			}
			_, err := Apply(context.Background(), dir, bytes.NewReader(tt.bundle), opts)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got error %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error %q does not say %q", err, tt.text)
			}
			if d := diffSnapshots(before, snapshot(t, dir)); d != "" {
				t.Errorf("the refusal changed the data directory:\n%s", d)
			}
			if _, v := bootVersion(t, dir); v != "2.0.0" {
				t.Errorf("boot after the refusal runs %s, want 2.0.0", v)
			}
		})
	}
}

// TestApplyRefusalFirstUpdate checks that a refused first update leaves
// no slot directory behind.
func TestApplyRefusalFirstUpdate(t *testing.T) {
	dir := newDevice(t)
	before := snapshot(t, dir)
	good := update(t, "2.0.0")
	_, err := applyBytes(dir, good[:len(good)-10], "1.0.0")
	if !errors.Is(err, bundle.ErrTruncated) {
		t.Fatalf("got %v, want ErrTruncated", err)
	}
	if d := diffSnapshots(before, snapshot(t, dir)); d != "" {
		t.Errorf("the refusal changed the data directory:\n%s", d)
	}
}

func TestApplyDowngradeAllowed(t *testing.T) {
	dir := confirmedDevice(t)
	opts := applyOpts("2.0.0")
	opts.AllowDowngrade = true
	if _, err := Apply(context.Background(), dir, bytes.NewReader(update(t, "1.5.0")), opts); err != nil {
		t.Fatal(err)
	}
	if d, v := bootVersion(t, dir); v != "1.5.0" || !d.Trial {
		t.Errorf("boot runs %s (trial %v), want 1.5.0 on trial", v, d.Trial)
	}
}

// TestApplyDuringTrial checks that a second update is refused while one
// is on trial: its slot runs, the other is the rollback target.
func TestApplyDuringTrial(t *testing.T) {
	dir := confirmedDevice(t)
	mustApply(t, dir, "3.0.0", "2.0.0")
	before := snapshot(t, dir)
	_, err := applyBytes(dir, update(t, "4.0.0"), "3.0.0")
	if !errors.Is(err, ErrTrialInProgress) || !strings.Contains(err.Error(), "rollback") {
		t.Fatalf("got %v, want ErrTrialInProgress saying how to roll back", err)
	}
	if d := diffSnapshots(before, snapshot(t, dir)); d != "" {
		t.Errorf("the refusal changed the data directory:\n%s", d)
	}
}

func TestApplyCanceled(t *testing.T) {
	dir := confirmedDevice(t)
	before := snapshot(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	opts := applyOpts("2.0.0")
	opts.Progress = func(done, total int64) {
		if done > 0 {
			cancel()
		}
	}
	_, err := Apply(ctx, dir, bytes.NewReader(update(t, "3.0.0")), opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if d := diffSnapshots(before, snapshot(t, dir)); d != "" {
		t.Errorf("the canceled apply changed the data directory:\n%s", d)
	}
}

// TestApplyRemovesLeftover checks that a .new file left by a crash does
// not stop the next update and is gone after it.
func TestApplyRemovesLeftover(t *testing.T) {
	dir := confirmedDevice(t)
	leftover := filepath.Join(dir, SlotsDir, "a", BinaryName+newSuffix)
	if err := os.WriteFile(leftover, []byte("half a binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	running, err := os.Stat(BinaryPath(dir, SlotB))
	if err != nil {
		t.Fatal(err)
	}
	res := mustApply(t, dir, "3.0.0", "2.0.0")
	// The running binary (active b) is the same file, untouched.
	if fi, err := os.Stat(BinaryPath(dir, SlotB)); err != nil || !os.SameFile(fi, running) || !fi.ModTime().Equal(running.ModTime()) {
		t.Errorf("Apply replaced or modified the running binary in b")
	}
	if v := versionOf(t, BinaryPath(dir, SlotB)); v != "2.0.0" {
		t.Errorf("running slot b holds %s after Apply, want 2.0.0", v)
	}
	if res.Slot != SlotA || res.Version != "3.0.0" || res.Tries != DefaultTries {
		t.Errorf("Apply = %+v, want slot a, 3.0.0, %d tries", res, DefaultTries)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover %s: %v, want it gone", leftover, err)
	}
	if got := versionOf(t, res.Path); got != "3.0.0" {
		t.Errorf("slot a holds %s, want 3.0.0", got)
	}
	fi, err := os.Stat(res.Path)
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("installed binary mode %v (%v), want 0755", fi.Mode(), err)
	}
}

// TestApplyProgress checks the progress callback: 0 first, then strictly
// increasing, ending at the payload size.
func TestApplyProgress(t *testing.T) {
	dir := newDevice(t)
	var calls [][2]int64
	opts := applyOpts("1.0.0")
	opts.Progress = func(done, total int64) { calls = append(calls, [2]int64{done, total}) }
	if _, err := Apply(context.Background(), dir, bytes.NewReader(update(t, "2.0.0")), opts); err != nil {
		t.Fatal(err)
	}
	if len(calls) < 3 {
		t.Fatalf("%d progress calls, want several: %v", len(calls), calls)
	}
	if calls[0] != [2]int64{0, binSize} {
		t.Errorf("first call %v, want [0 %d]", calls[0], binSize)
	}
	for i := 1; i < len(calls); i++ {
		if calls[i][0] <= calls[i-1][0] || calls[i][1] != binSize {
			t.Errorf("call %d: %v after %v, want increasing done of total %d", i, calls[i], calls[i-1], binSize)
		}
	}
	if last := calls[len(calls)-1]; last[0] != last[1] {
		t.Errorf("last call %v, want done == total", last)
	}
}

func TestApplyInvalidOptions(t *testing.T) {
	dir := newDevice(t)
	for name, opts := range map[string]ApplyOpts{
		"no current version": {TrustedKeys: trusted(), GOARCH: "arm64"},
		"negative tries":     {TrustedKeys: trusted(), GOARCH: "arm64", CurrentVersion: "1.0.0", Tries: -1},
	} {
		if _, err := Apply(context.Background(), dir, bytes.NewReader(update(t, "2.0.0")), opts); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
	if _, err := Apply(context.Background(), filepath.Join(dir, "missing"), bytes.NewReader(update(t, "2.0.0")), applyOpts("1.0.0")); err == nil || !strings.Contains(err.Error(), "data-dir") {
		t.Errorf("missing data directory: got %v, want an error naming --data-dir", err)
	}
}
