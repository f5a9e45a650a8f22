package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// The journal is a file of fixed size next to the store file
// (<path>.journal) that makes a batch of appends and acknowledgements
// durable with one write and one fdatasync, where a bbolt commit takes two
// fdatasyncs and the page writes between them. The writer answers the
// batch once its frame is synced; the applier keeps its messages in
// memory until a checkpoint commits those not acknowledged by then (see
// the package documentation). After a crash, Open takes back what the
// frames after the last checkpoint hold.
//
// A frame is a 32-byte header and the batch's entries:
//
//	magic   uint32  journalMagic
//	frame   uint64  the frame's number: each frame follows the one before
//	first   uint64  the sequence number of the first entry; the others follow
//	count   uint32  entries
//	length  uint32  bytes of entries after the header
//	crc     uint32  CRC-32C of the header before it and of the entries
//
// then count appends, each its targets, its trusted flag and its record:
//
//	uvarint targets, then per target: uvarint len, endpoint name,
//	uvarint priority, varint TTL ns
//	byte trusted (0 or 1)
//	uvarint len, the message record (as stored in bbolt)
//
// then the acknowledgements of the batch:
//
//	uvarint acknowledgements, then per acknowledgement: uvarint len,
//	endpoint name, uvarint n, n × uvarint sequence number
//
// The header's integers are big-endian. Frames are written one after the
// other from the start of the file; when the next one does not fit, the
// writer starts again at offset 0, but only once no frame is needed any
// more (see hand). Reading stops at the first header that is not one
// (zeros, a torn write, an older frame left behind a wrap: its number
// does not follow) or whose CRC fails; appends the last checkpoint covers
// are skipped and acknowledgements are idempotent, so frames older than
// bbolt's state do no harm.
//
// The file is written with zeros to its full size when it is created and
// synced once, so a frame write changes no file system metadata and its
// fdatasync writes only the frame's blocks.
const (
	journalMagic     = 0x544a4e31 // "TJN1"
	frameHeaderLen   = 32
	maxFrameEntries  = 1 << 20
	journalSuffix    = ".journal"
	journalWriteUnit = 64 << 10 // zeros written per call when the file is created
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// crc32cOf is the CRC of a frame: its header up to the CRC, then its
// entries.
func crc32cOf(head, body []byte) uint32 {
	return crc32.Update(crc32.Checksum(head, crc32c), crc32c, body)
}

// journal is the writer's: only the writer goroutine writes frames; Open
// reads them before the writer starts.
type journal struct {
	f      *os.File
	path   string
	size   int64  // the file's fixed size
	pos    int64  // where the next frame goes
	frame  uint64 // the number of the next frame
	noSync bool
	buf    []byte
}

// journalEntry is an append read back from a frame.
type journalEntry struct {
	seq uint64
	app *appendReq
}

// ackReq is an acknowledgement: of seqs, by endpoint.
type ackReq struct {
	endpoint string
	seqs     []uint64
}

// openJournal opens or creates the journal of the store at path and
// makes it size bytes long, written. It returns the appends and the
// acknowledgements of the frames it holds; the next frame goes after
// them. When the file cannot be made its size (a full disk), it returns
// those and the error, and no journal.
func openJournal(path string, size int64, noSync bool) (*journal, []journalEntry, []ackReq, error) {
	name := path + journalSuffix
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("store: open journal: %w", err)
	}
	j := &journal{f: f, path: name, size: size, noSync: noSync}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, nil, fmt.Errorf("store: open journal: %w", err)
	}
	entries, acks, last, end, err := readJournal(f, fi.Size())
	if err != nil {
		f.Close()
		return nil, nil, nil, err
	}
	j.frame = last + 1
	j.pos = end
	if fi.Size() < size {
		if err := j.extend(fi.Size()); err != nil {
			// Give back what was written: the disk is full, and bbolt
			// needs the room more.
			_ = f.Truncate(fi.Size())
			f.Close()
			return nil, entries, acks, err
		}
	} else {
		j.size = fi.Size()
	}
	dropRange(f, 0, j.size)
	return j, entries, acks, nil
}

// extend writes zeros from off to the journal's size and syncs them.
func (j *journal) extend(off int64) error {
	zeros := make([]byte, journalWriteUnit)
	for off < j.size {
		n := min(int64(len(zeros)), j.size-off)
		if _, err := j.f.WriteAt(zeros[:n], off); err != nil {
			return fmt.Errorf("store: create journal %s: %w", j.path, err)
		}
		off += n
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("store: create journal %s: %w", j.path, err)
	}
	// And its name: a file new since the last sync of its directory may
	// not be found after a power cut, whatever was synced in it.
	d, err := os.Open(filepath.Dir(j.path))
	if err != nil {
		return fmt.Errorf("store: create journal %s: %w", j.path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store: create journal %s: sync its directory: %w", j.path, err)
	}
	return nil
}

func (j *journal) close() error { return j.f.Close() }

// errJournalFull says a frame does not fit before the end of the journal
// and bbolt does not yet have every frame before it.
var errJournalFull = errors.New("journal full")

// write writes apps, appends whose sequence numbers are consecutive, and
// acks, acknowledgements, as one frame and syncs it. wrap says no frame
// written so far is needed any more: the frame may then go to the start
// of the file.
func (j *journal) write(apps, acks []*op, wrap bool) error {
	b := encodeFrame(j.buf[:0], j.frame, apps, acks)
	if cap(b) <= 1<<20 {
		j.buf = b
	}
	if int64(len(b)) > j.size {
		return errJournalFull
	}
	if j.pos+int64(len(b)) > j.size {
		if !wrap {
			return errJournalFull
		}
		j.pos = 0
	}
	if _, err := j.f.WriteAt(b, j.pos); err != nil {
		return fmt.Errorf("write journal %s: %w", j.path, err)
	}
	if !j.noSync {
		if err := fdatasync(j.f); err != nil {
			return fmt.Errorf("sync journal %s: %w", j.path, err)
		}
	}
	j.pos += int64(len(b))
	j.frame++
	return nil
}

// encodeFrame appends the frame numbered frame holding the appends apps
// and the acknowledgements acks to b.
func encodeFrame(b []byte, frame uint64, apps, acks []*op) []byte {
	start := len(b)
	b = append(b, make([]byte, frameHeaderLen)...)
	var first uint64
	for i, o := range apps {
		a := o.app
		if i == 0 {
			first = a.seq
		}
		b = binary.AppendUvarint(b, uint64(len(a.targets)))
		for _, t := range a.targets {
			b = binary.AppendUvarint(b, uint64(len(t.Endpoint)))
			b = append(b, t.Endpoint...)
			b = binary.AppendUvarint(b, uint64(t.Priority))
			b = binary.AppendVarint(b, t.TTL)
		}
		if a.trusted {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
		b = binary.AppendUvarint(b, uint64(len(a.rec)))
		b = append(b, a.rec...)
	}
	b = binary.AppendUvarint(b, uint64(len(acks)))
	for _, o := range acks {
		b = binary.AppendUvarint(b, uint64(len(o.ack.endpoint)))
		b = append(b, o.ack.endpoint...)
		b = binary.AppendUvarint(b, uint64(len(o.ack.seqs)))
		for _, seq := range o.ack.seqs {
			b = binary.AppendUvarint(b, seq)
		}
	}
	h := b[start : start+frameHeaderLen]
	binary.BigEndian.PutUint32(h[0:], journalMagic)
	binary.BigEndian.PutUint64(h[4:], frame)
	binary.BigEndian.PutUint64(h[12:], first)
	binary.BigEndian.PutUint32(h[20:], uint32(len(apps)))
	binary.BigEndian.PutUint32(h[24:], uint32(len(b)-start-frameHeaderLen))
	binary.BigEndian.PutUint32(h[28:], crc32cOf(h[:28], b[start+frameHeaderLen:]))
	return b
}

// frameHeader is a decoded header.
type frameHeader struct {
	frame, first  uint64
	count, length uint32
	crc           uint32
}

// parseFrameHeader decodes a header; ok is false when h is not one.
func parseFrameHeader(h []byte) (frameHeader, bool) {
	if len(h) < frameHeaderLen || binary.BigEndian.Uint32(h) != journalMagic {
		return frameHeader{}, false
	}
	return frameHeader{
		frame:  binary.BigEndian.Uint64(h[4:]),
		first:  binary.BigEndian.Uint64(h[12:]),
		count:  binary.BigEndian.Uint32(h[20:]),
		length: binary.BigEndian.Uint32(h[24:]),
		crc:    binary.BigEndian.Uint32(h[28:]),
	}, true
}

// decodeEntries decodes the appends and acknowledgements of a frame
// whose header is h.
func decodeEntries(h frameHeader, b []byte) ([]journalEntry, []ackReq, error) {
	if h.count > maxFrameEntries || uint64(h.count) > uint64(len(b)) {
		return nil, nil, fmt.Errorf("%w: journal frame %d: %d entries in %d bytes", ErrCorrupt, h.frame, h.count, len(b))
	}
	if h.first+uint64(h.count) < h.first {
		return nil, nil, fmt.Errorf("%w: journal frame %d: sequence numbers overflow", ErrCorrupt, h.frame)
	}
	d := frameDecoder{b: b}
	out := make([]journalEntry, 0, h.count)
	for i := range h.count {
		off := d.off
		a, err := d.entry()
		if err != nil {
			return nil, nil, fmt.Errorf("%w: journal frame %d entry %d at byte %d: %v", ErrCorrupt, h.frame, i, off, err)
		}
		a.seq = h.first + uint64(i)
		out = append(out, journalEntry{seq: a.seq, app: a})
	}
	off := d.off
	acks, err := d.acks()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: journal frame %d acknowledgements at byte %d: %v", ErrCorrupt, h.frame, off, err)
	}
	if d.off != len(b) {
		return nil, nil, fmt.Errorf("%w: journal frame %d: %d bytes after its %d entries", ErrCorrupt, h.frame, len(b)-d.off, h.count)
	}
	return out, acks, nil
}

func (d *frameDecoder) acks() ([]ackReq, error) {
	n, err := d.uvarint()
	if err != nil {
		return nil, err
	}
	if n > uint64(len(d.b)-d.off) {
		return nil, fmt.Errorf("%d acknowledgements", n)
	}
	var out []ackReq
	for range n {
		ep, err := d.endpoint()
		if err != nil {
			return nil, err
		}
		m, err := d.uvarint()
		if err != nil {
			return nil, err
		}
		if m > uint64(len(d.b)-d.off) {
			return nil, fmt.Errorf("%d sequence numbers", m)
		}
		a := ackReq{endpoint: ep, seqs: make([]uint64, 0, m)}
		for range m {
			seq, err := d.uvarint()
			if err != nil {
				return nil, err
			}
			a.seqs = append(a.seqs, seq)
		}
		out = append(out, a)
	}
	return out, nil
}

type frameDecoder struct {
	b   []byte
	off int
}

func (d *frameDecoder) uvarint() (uint64, error) {
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		return 0, errors.New("bad unsigned varint")
	}
	d.off += n
	return v, nil
}

func (d *frameDecoder) bytes() ([]byte, error) {
	n, err := d.uvarint()
	if err != nil {
		return nil, err
	}
	if n > uint64(len(d.b)-d.off) {
		return nil, fmt.Errorf("length %d past the end of the frame", n)
	}
	v := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return v, nil
}

// endpoint decodes an endpoint name, which must be one.
func (d *frameDecoder) endpoint() (string, error) {
	b, err := d.bytes()
	if err != nil {
		return "", err
	}
	if err := checkEndpoint("journal", string(b)); err != nil {
		return "", err
	}
	return string(b), nil
}

func (d *frameDecoder) entry() (*appendReq, error) {
	n, err := d.uvarint()
	if err != nil {
		return nil, err
	}
	if n == 0 || n > uint64(len(d.b)-d.off) {
		return nil, fmt.Errorf("%d targets", n)
	}
	a := &appendReq{targets: make([]targetRecord, 0, n)}
	for range n {
		ep, err := d.endpoint()
		if err != nil {
			return nil, err
		}
		prio, err := d.uvarint()
		if err != nil {
			return nil, err
		}
		if prio >= NumPriorities {
			return nil, fmt.Errorf("priority %d", prio)
		}
		ttl, m := binary.Varint(d.b[d.off:])
		if m <= 0 {
			return nil, errors.New("bad TTL varint")
		}
		d.off += m
		a.targets = append(a.targets, targetRecord{Endpoint: ep, Priority: uint32(prio), TTL: ttl})
	}
	if d.off >= len(d.b) || d.b[d.off] > 1 {
		return nil, errors.New("bad trusted flag")
	}
	a.trusted = d.b[d.off] == 1
	d.off++
	rec, err := d.bytes()
	if err != nil {
		return nil, err
	}
	a.rec = rec
	a.est = estimate(len(rec), len(a.targets))
	return a, nil
}

// readAt fills b from r at off. A ReaderAt may say io.EOF with all of b
// read, when b ends where the input does.
func readAt(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	return err
}

// readJournal reads the frames of a journal of size bytes from its
// start, as long as each follows the one before, and returns their
// appends and acknowledgements, the number of the last frame read (0 when
// none) and the offset after it.
func readJournal(r io.ReaderAt, size int64) ([]journalEntry, []ackReq, uint64, int64, error) {
	var (
		out  []journalEntry
		acks []ackReq
		last uint64
		pos  int64
		hb   [frameHeaderLen]byte
		buf  []byte
	)
	for pos+frameHeaderLen <= size {
		if err := readAt(r, hb[:], pos); err != nil {
			return nil, nil, 0, 0, fmt.Errorf("store: read journal: %w", err)
		}
		h, ok := parseFrameHeader(hb[:])
		if !ok || (pos > 0 && h.frame != last+1) || int64(h.length) > size-pos-frameHeaderLen {
			break
		}
		if cap(buf) < int(h.length) {
			buf = make([]byte, h.length)
		}
		b := buf[:h.length]
		if err := readAt(r, b, pos+frameHeaderLen); err != nil {
			return nil, nil, 0, 0, fmt.Errorf("store: read journal: %w", err)
		}
		if crc32cOf(hb[:28], b) != h.crc {
			break
		}
		// Entries keep slices of b: give each frame its own.
		entries, as, err := decodeEntries(h, append([]byte(nil), b...))
		if err != nil {
			// A frame with a valid CRC that does not decode was not
			// written by this code: stop as at a torn frame.
			break
		}
		out = append(out, entries...)
		acks = append(acks, as...)
		last = h.frame
		pos += frameHeaderLen + int64(h.length)
	}
	return out, acks, last, pos, nil
}
