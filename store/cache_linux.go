package store

import (
	"os"
	"syscall"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// dropCache drops the file's pages from the kernel's page cache and from
// bbolt's memory map (they are read back on demand), so that they come
// back one page at a time.
//
// Linux (ext4 since 6.16, and other file systems) caches a file in large
// folios, up to hundreds of KiB, when it was read sequentially (the page
// check, bbolt's freelist walk) or written in large pieces (bbolt writes
// the first four pages of a new file at once). Writeback writes whole
// folios: a commit that changes one 4 KiB page in a 16 KiB folio writes
// 16 KiB. Every commit rewrites a meta page (pages 0 and 1, in the first
// folio) and a few pages scattered over the file, so large folios
// multiply the bytes written to the SD card several times over. bbolt
// advises its mapping MADV_RANDOM, so pages faulted in through it later
// come in singly, and its writes are of whole 4 KiB pages.
//
// It is best effort: errors leave the cache as it was.
func dropCache(db *bolt.DB, path string, size int64) {
	if data := db.Info().Data; data != 0 && size > 0 {
		_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, data, uintptr(size), unix.MADV_DONTNEED)
	}
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// dropRange drops n bytes at off of f from the page cache, best effort.
func dropRange(f *os.File, off, n int64) {
	_ = unix.Fadvise(int(f.Fd()), off, n, unix.FADV_DONTNEED)
}

// fdatasync flushes f's data, and only the metadata needed to read it.
func fdatasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
