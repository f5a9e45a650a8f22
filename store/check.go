package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// This file validates the page structure of a bbolt file before bbolt
// itself opens it for writing. With NoFreelistSync bbolt rebuilds its
// freelist at open by walking every page, and it panics in a goroutine of
// its own when that walk meets a damaged page, which no caller can recover
// from: the gateway would crash-loop. Walking the tree here first turns
// such damage into an error, and the file is moved aside. The walk reads
// the file with pread, not through bbolt's memory map, so it leaves the
// pages in the kernel's page cache and not in the process's resident set.
//
// The layout read here is bbolt's on-disk format version 2 (see
// go.etcd.io/bbolt/internal/common: page.go, meta.go, bucket.go), in
// little-endian byte order as written on every platform tinyedge targets.

const (
	boltMagic   = 0xED0CDAED
	boltVersion = 2

	pageHeaderSize  = 16 // id u64, flags u16, count u16, overflow u32
	elementSize     = 16 // branch: pos, ksize, pgid; leaf: flags, pos, ksize, vsize
	bucketHeaderLen = 16 // root pgid u64, sequence u64

	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	freelistPageFlag = 0x10
	noFreelist       = 0xffffffffffffffff
	bucketLeafFlag   = 0x01

	maxTreeDepth = 64
)

var le = binary.LittleEndian

type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64 // high water mark
	txid     uint64
}

// parseMeta reads the meta stored in a meta page (after its page header)
// and validates magic, version and checksum.
func parseMeta(page []byte) (boltMeta, error) {
	if len(page) < pageHeaderSize+64 {
		return boltMeta{}, errors.New("meta page too short")
	}
	m := page[pageHeaderSize:]
	if le.Uint32(m[0:]) != boltMagic {
		return boltMeta{}, errors.New("not a bbolt file (bad magic)")
	}
	if v := le.Uint32(m[4:]); v != boltVersion {
		return boltMeta{}, fmt.Errorf("unsupported bbolt format version %d", v)
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if h.Sum64() != le.Uint64(m[56:]) {
		return boltMeta{}, errors.New("meta checksum mismatch")
	}
	return boltMeta{
		pageSize: le.Uint32(m[8:]),
		root:     le.Uint64(m[16:]),
		freelist: le.Uint64(m[32:]),
		pgid:     le.Uint64(m[40:]),
		txid:     le.Uint64(m[48:]),
	}, nil
}

// checkBoltFile validates the structure of the bbolt file f: the meta
// page bbolt would use, that the file holds every page below the high
// water mark, that every page reachable from the root is a well-formed
// branch or leaf page referenced once, with keys in order, and that the
// freelist page, when the file has one (see markClean), is one.
func checkBoltFile(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	first := make([]byte, 4096)
	if _, err := f.ReadAt(first, 0); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	var metas []boltMeta
	var errs []error
	m0, err0 := parseMeta(first)
	if err0 == nil {
		metas = append(metas, m0)
	} else {
		errs = append(errs, fmt.Errorf("meta 0: %w", err0))
	}
	// The second meta is at the page size; take it from the first meta
	// when that one is valid, else try the usual page sizes.
	sizes := []int64{4096, 8192, 16384, 32768, 65536}
	if err0 == nil {
		sizes = []int64{int64(m0.pageSize)}
	}
	for _, ps := range sizes {
		buf := make([]byte, 4096)
		if _, err := f.ReadAt(buf, ps); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if m1, err := parseMeta(buf); err == nil && int64(m1.pageSize) == ps {
			metas = append(metas, m1)
			break
		} else if err != nil && ps == sizes[0] {
			errs = append(errs, fmt.Errorf("meta 1: %w", err))
		}
	}
	if len(metas) == 0 {
		return errors.Join(errs...)
	}
	// bbolt uses the meta with the higher transaction id.
	m := metas[0]
	if len(metas) == 2 && metas[1].txid > m.txid {
		m = metas[1]
	}
	ps := int64(m.pageSize)
	if ps < 1024 || ps&(ps-1) != 0 {
		return fmt.Errorf("invalid page size %d", ps)
	}
	if need := int64(m.pgid) * ps; need > size {
		return fmt.Errorf("file is truncated: %d bytes, the last transaction needs %d", size, need)
	}
	if m.root < 2 || m.root >= m.pgid {
		return fmt.Errorf("root page %d outside the file (high water mark %d)", m.root, m.pgid)
	}
	w := &pageWalker{f: f, ps: ps, hwm: m.pgid, seen: make(map[uint64]bool)}
	var free []byte
	if m.freelist != noFreelist {
		p, err := w.read(m.freelist)
		if err != nil {
			return fmt.Errorf("freelist: %w", err)
		}
		if le.Uint16(p[8:]) != freelistPageFlag {
			return fmt.Errorf("freelist: page %d is not a freelist page", m.freelist)
		}
		free = p
	}
	if _, err = w.walk(m.root, nil, nil, 0); err != nil {
		return err
	}
	return w.checkFreelist(free)
}

// checkFreelist checks that the ids in the freelist page p (nil: none)
// are pages of the file that no bucket uses.
func (w *pageWalker) checkFreelist(p []byte) error {
	if p == nil {
		return nil
	}
	n, ids := uint64(le.Uint16(p[10:])), p[pageHeaderSize:]
	if n == 0xFFFF { // the real count is in the first element
		n, ids = le.Uint64(ids), ids[8:]
	}
	if n > uint64(len(ids)/8) {
		return fmt.Errorf("freelist: %d ids do not fit its pages", n)
	}
	for i := range n {
		id := le.Uint64(ids[i*8:])
		if id < 2 || id >= w.hwm || w.seen[id] {
			return fmt.Errorf("freelist: page %d is in use or outside the file", id)
		}
	}
	return nil
}

type pageWalker struct {
	f    *os.File
	ps   int64
	hwm  uint64
	seen map[uint64]bool
}

// read returns page id with its overflow pages.
func (w *pageWalker) read(id uint64) ([]byte, error) {
	if id < 2 || id >= w.hwm {
		return nil, fmt.Errorf("page %d: out of bounds (high water mark %d)", id, w.hwm)
	}
	hdr := make([]byte, w.ps)
	if _, err := w.f.ReadAt(hdr, int64(id)*w.ps); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	if got := le.Uint64(hdr); got != id {
		return nil, fmt.Errorf("page %d: header says page %d", id, got)
	}
	overflow := uint64(le.Uint32(hdr[12:]))
	if id+overflow >= w.hwm {
		return nil, fmt.Errorf("page %d: %d overflow pages run past the high water mark %d", id, overflow, w.hwm)
	}
	for i := id; i <= id+overflow; i++ {
		if w.seen[i] {
			return nil, fmt.Errorf("page %d: referenced twice", i)
		}
		w.seen[i] = true
	}
	if overflow == 0 {
		return hdr, nil
	}
	buf := make([]byte, int64(overflow+1)*w.ps)
	if _, err := w.f.ReadAt(buf, int64(id)*w.ps); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	return buf, nil
}

// walk checks the subtree at page id, whose keys must lie in [lo, hi)
// (nil: unbounded), and returns its largest key.
func (w *pageWalker) walk(id uint64, lo, hi []byte, depth int) ([]byte, error) {
	if depth > maxTreeDepth {
		return nil, fmt.Errorf("page %d: tree deeper than %d", id, maxTreeDepth)
	}
	p, err := w.read(id)
	if err != nil {
		return nil, err
	}
	return w.walkPage(id, p, lo, hi, depth)
}

func (w *pageWalker) walkPage(id uint64, p []byte, lo, hi []byte, depth int) ([]byte, error) {
	if len(p) < pageHeaderSize {
		return nil, fmt.Errorf("page %d: shorter than its header", id)
	}
	flags := le.Uint16(p[8:])
	count := int(le.Uint16(p[10:]))
	if pageHeaderSize+count*elementSize > len(p) {
		return nil, fmt.Errorf("page %d: %d elements do not fit", id, count)
	}
	field := func(i, off int) uint32 { return le.Uint32(p[pageHeaderSize+i*elementSize+off:]) }
	slice := func(i int, pos, n uint32) ([]byte, error) {
		start := int64(pageHeaderSize+i*elementSize) + int64(pos)
		end := start + int64(n)
		if end > int64(len(p)) {
			return nil, fmt.Errorf("page %d: element %d points past the page", id, i)
		}
		return p[start:end], nil
	}
	prev := lo
	var last []byte
	switch flags {
	case branchPageFlag:
		if count == 0 {
			return nil, fmt.Errorf("page %d: empty branch", id)
		}
		for i := 0; i < count; i++ {
			key, err := slice(i, field(i, 0), field(i, 4))
			if err != nil {
				return nil, err
			}
			if err := keyInRange(id, i, key, prev, hi, i > 0); err != nil {
				return nil, err
			}
			next := hi
			if i < count-1 {
				nk, err := slice(i+1, field(i+1, 0), field(i+1, 4))
				if err != nil {
					return nil, err
				}
				next = nk
			}
			child := le.Uint64(p[pageHeaderSize+i*elementSize+8:])
			max, err := w.walk(child, key, next, depth+1)
			if err != nil {
				return nil, err
			}
			prev, last = max, max
		}
	case leafPageFlag:
		for i := 0; i < count; i++ {
			key, err := slice(i, field(i, 4), field(i, 8))
			if err != nil {
				return nil, err
			}
			if err := keyInRange(id, i, key, prev, hi, i > 0); err != nil {
				return nil, err
			}
			val, err := slice(i, field(i, 4)+field(i, 8), field(i, 12))
			if err != nil {
				return nil, err
			}
			if field(i, 0)&bucketLeafFlag != 0 {
				if err := w.walkBucket(id, val, depth); err != nil {
					return nil, err
				}
			}
			prev, last = key, key
		}
	default:
		return nil, fmt.Errorf("page %d: unexpected page type %#x", id, flags)
	}
	return last, nil
}

// walkBucket checks a nested bucket given its header value: either a root
// page, or an inline page stored in the value itself.
func (w *pageWalker) walkBucket(id uint64, val []byte, depth int) error {
	if len(val) < bucketHeaderLen {
		return fmt.Errorf("page %d: bucket header too short", id)
	}
	root := le.Uint64(val)
	if root != 0 {
		_, err := w.walk(root, nil, nil, depth+1)
		return err
	}
	inline := val[bucketHeaderLen:]
	if len(inline) < pageHeaderSize || le.Uint16(inline[8:]) != leafPageFlag {
		return fmt.Errorf("page %d: malformed inline bucket", id)
	}
	if depth > maxTreeDepth {
		return fmt.Errorf("page %d: buckets nested deeper than %d", id, maxTreeDepth)
	}
	_, err := w.walkPage(id, inline, nil, nil, depth+1)
	return err
}

func keyInRange(id uint64, i int, key, prev, hi []byte, strict bool) error {
	if len(key) == 0 {
		return fmt.Errorf("page %d: element %d has an empty key", id, i)
	}
	if prev != nil {
		c := bytes.Compare(key, prev)
		if c < 0 || (strict && c == 0) {
			return fmt.Errorf("page %d: key %d out of order", id, i)
		}
	}
	if hi != nil && bytes.Compare(key, hi) >= 0 {
		return fmt.Errorf("page %d: key %d beyond its parent's range", id, i)
	}
	return nil
}
