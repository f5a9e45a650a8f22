package store

import (
	"os"

	bolt "go.etcd.io/bbolt"
)

// fillAhead is how far past bbolt's high water mark the writer keeps the
// file's blocks written.
const fillAhead = 256 << 10

// fillFile writes zeros to the part of the file just past bbolt's high
// water mark, so that the pages bbolt allocates there next are blocks the
// file system has already allocated and written.
//
// bbolt grows its file with ftruncate, which leaves a hole, and a commit
// that writes pages past the old high water mark (every commit while a
// backlog builds up) writes into that hole. On ext4 the fdatasync of such
// a commit must also commit a journal transaction for the block
// allocation: on the build machine that is 80–110 µs more per commit
// (about a sixth of a 64-message commit cycle), and on an SD card an
// extra write to the journal. Filling fillAhead bytes at a time, synced
// once, moves that cost to one sync per fillAhead bytes of growth. The
// zeros are written once per byte of the file's growth, never in its
// steady state, when bbolt reuses its free pages.
//
// The writer calls it between batches, so no transaction is running; bbolt
// neither reads nor writes past its high water mark. The filled range is
// dropped from the page cache (see dropRange), so that bbolt's 4 KiB page
// writes there later do not land in large folios. It is best effort: on
// an error (a full disk) it stops, and bbolt's commits allocate as before.
func (s *Store) fillFile() {
	if s.fill == nil {
		return
	}
	var hwm int64
	if err := s.db.View(func(tx *bolt.Tx) error { hwm = tx.Size(); return nil }); err != nil {
		return
	}
	s.filled = max(s.filled, hwm)
	if s.filled-hwm >= fillAhead/2 {
		return
	}
	fi, err := s.fill.Stat()
	if err != nil {
		return
	}
	end := min(hwm+fillAhead, fi.Size())
	if end <= s.filled {
		return
	}
	if s.zeros == nil {
		s.zeros = make([]byte, fillAhead)
	}
	if _, err := s.fill.WriteAt(s.zeros[:end-s.filled], s.filled); err != nil {
		return
	}
	if err := s.fill.Sync(); err != nil {
		return
	}
	dropRange(s.fill, s.filled, end-s.filled)
	s.filled = end
}

// openFill opens the second descriptor of the store file that fillFile
// writes with; nil when fsync is off (nothing to save) or on an error.
func openFill(path string, noSync bool) *os.File {
	if noSync {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil
	}
	return f
}
