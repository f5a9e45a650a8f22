package ota

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tinyedge/tinyedge/build/bundle"
)

const bigPayload = 10 << 20

// bigBundle writes a 10 MiB pseudo-random payload and a bundle of it to
// dir, streaming, and returns their paths.
func bigBundle(tb testing.TB, dir string) (payloadPath, bundlePath string) {
	tb.Helper()
	payloadPath = filepath.Join(dir, "tinyedge-linux-arm64")
	f, err := os.Create(payloadPath)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriter(f)
	rng := rand.NewChaCha8([32]byte{1})
	if _, err := io.CopyN(w, rng, bigPayload); err != nil {
		tb.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	bundlePath = filepath.Join(dir, "update.teb")
	out, err := os.Create(bundlePath)
	if err != nil {
		tb.Fatal(err)
	}
	defer out.Close()
	bw := bufio.NewWriter(out)
	m := bundle.Manifest{Version: "2.0.0", GOARCH: "arm64"}
	if err := bundle.Create(bw, signingKey(), m, []bundle.PayloadSource{{Name: BinaryName, Path: payloadPath}}); err != nil {
		tb.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		tb.Fatal(err)
	}
	return payloadPath, bundlePath
}

// TestApplyMemory applies a 10 MiB bundle and checks that Apply's memory
// does not grow with the payload: everything it allocates, and the peak
// heap in use while it runs, stay under 2 MiB.
func TestApplyMemory(t *testing.T) {
	work := t.TempDir()
	payloadPath, bundlePath := bigBundle(t, work)
	dir := filepath.Join(work, "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	rssBefore, rssOK := resetPeakRSS()
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	res, err := Apply(context.Background(), dir, f, applyOpts("1.0.0"))
	close(stop)
	wg.Wait()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	peak = max(peak, after.HeapInuse)

	const limit = 2 << 20
	alloc := after.TotalAlloc - before.TotalAlloc
	heapUp := int64(peak) - int64(before.HeapInuse)
	t.Logf("apply of %d MiB: allocated %d KiB in total, peak heap in use %+d KiB above before", bigPayload>>20, alloc>>10, heapUp>>10)
	if rssOK {
		if rss, ok := peakRSS(); ok {
			// Under qemu-user these are the emulator's figures.
			t.Logf("process peak RSS during apply: %+d KiB above the peak reset before it (%d KiB)", int64(rss)-int64(rssBefore), rss)
		}
	}
	if alloc > limit {
		t.Errorf("Apply allocated %d bytes for a %d-byte payload, want under %d: it must stream", alloc, bigPayload, limit)
	}
	if heapUp > limit {
		t.Errorf("peak heap in use grew by %d bytes, want under %d", heapUp, limit)
	}
	want, err := os.ReadFile(payloadPath)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(res.Path)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("installed binary differs from the payload (%v)", err)
	}
}

// resetPeakRSS resets the kernel's peak RSS of the process (Linux
// clear_refs) and returns the peak just after, in KiB; ok is false where
// that is not available.
func resetPeakRSS() (uint64, bool) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return 0, false
	}
	return procStatus("VmHWM")
}

func peakRSS() (uint64, bool) { return procStatus("VmHWM") }

func procStatus(field string) (uint64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// BenchmarkApply10MB measures verify+write of a 10 MiB payload (Apply to
// a fresh data directory) beside two baselines on the same file in the
// same run: a copy with SHA-256 (cp + sha256sum), and the same with the
// fsync Apply also does. It reports the ratios.
func BenchmarkApply10MB(b *testing.B) {
	work := b.TempDir()
	payloadPath, bundlePath := bigBundle(b, work)
	b.SetBytes(bigPayload)
	var apply, plain, synced time.Duration
	n := 0
	for b.Loop() {
		dir := filepath.Join(work, fmt.Sprint("data", n))
		if err := os.Mkdir(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		f, err := os.Open(bundlePath)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if _, err := Apply(context.Background(), dir, f, applyOpts("1.0.0")); err != nil {
			b.Fatal(err)
		}
		apply += time.Since(t0)
		f.Close()
		for _, durable := range []bool{false, true} {
			t0 = time.Now()
			copySHA256(b, payloadPath, filepath.Join(dir, fmt.Sprint("copy", durable)), durable)
			if durable {
				synced += time.Since(t0)
			} else {
				plain += time.Since(t0)
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(apply.Nanoseconds())/float64(n), "apply-ns/op")
	b.ReportMetric(float64(plain.Nanoseconds())/float64(n), "cp+sha256-ns/op")
	b.ReportMetric(float64(synced.Nanoseconds())/float64(n), "cp+sha256+fsync-ns/op")
	b.ReportMetric(float64(apply)/float64(plain), "ratio-vs-cp+sha256")
	b.ReportMetric(float64(apply)/float64(synced), "ratio-vs-cp+sha256+fsync")
}

// copySHA256 copies src to dst through a buffer the size Apply uses,
// hashing it, and fsyncs dst if durable.
func copySHA256(b *testing.B, src, dst string, durable bool) {
	in, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	h := sha256.New()
	buf := make([]byte, copyBufSize)
	if _, err := io.CopyBuffer(io.MultiWriter(out, h), in, buf); err != nil {
		b.Fatal(err)
	}
	h.Sum(nil)
	if durable {
		if err := out.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}
