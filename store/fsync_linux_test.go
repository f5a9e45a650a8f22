//go:build linux

package store

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkFdatasync measures what a 4 KiB page write costs on the disk
// of b.TempDir, without and with an fdatasync after it (a bbolt commit
// makes two): wall time and this process's CPU time (user and system,
// from getrusage), which on a machine of two cores is taken from the
// broker and its clients. The file is written and synced whole first, so
// the writes change no file system metadata, as in a store file bbolt
// reuses. Run with
//
//	go test -run '^$' -bench Fdatasync ./store/
func BenchmarkFdatasync(b *testing.B) {
	var writeCPU float64
	for _, sync := range []bool{false, true} {
		name := "write"
		if sync {
			name = "write_fdatasync"
		}
		b.Run(name, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "f"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			const pages = 256
			if _, err := f.WriteAt(make([]byte, pages*4096), 0); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			page := make([]byte, 4096)
			fd := int(f.Fd())
			cpu0 := processCPU(b)
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				if _, err := f.WriteAt(page, int64(i%pages)*4096); err != nil {
					b.Fatal(err)
				}
				if sync {
					if err := unix.Fdatasync(fd); err != nil {
						b.Fatal(err)
					}
				}
			}
			wall := time.Since(start)
			b.StopTimer()
			cpu := float64((processCPU(b) - cpu0).Nanoseconds()) / 1e3 / float64(b.N)
			b.ReportMetric(float64(wall.Nanoseconds())/1e3/float64(b.N), "us/op")
			b.ReportMetric(cpu, "cpu_us/op")
			b.ReportMetric(0, "ns/op")
			if !sync {
				writeCPU = cpu
			} else if writeCPU > 0 {
				b.ReportMetric(cpu/writeCPU, "x_write_cpu")
			}
		})
	}
}

// processCPU is the user and system time this process has used.
func processCPU(b *testing.B) time.Duration {
	var r syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &r); err != nil {
		b.Fatal(err)
	}
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}
