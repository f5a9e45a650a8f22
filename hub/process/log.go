package process

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"
)

// MaxLineBytes is the longest output line kept whole; a longer one is
// split into lines of at most this many bytes.
const MaxLineBytes = 4096

// Line is one line a module process wrote.
type Line struct {
	Seq    uint64    `json:"seq"` // 1 for the module's first line since tinyedge started, then counting up
	Time   time.Time `json:"time"`
	Stream string    `json:"stream"` // "stdout" or "stderr"
	Text   string    `json:"text"`   // without the line end
}

// Log keeps the last lines of a module's output across its restarts: a
// ring of fixed size, the oldest line dropped for a new one.
type Log struct {
	mu      sync.Mutex
	buf     []Line // circular, len == capacity once full
	start   int    // index of the oldest line once full
	next    uint64 // Seq of the next line
	changed chan struct{}
}

func newLog(capacity int) *Log {
	return &Log{buf: make([]Line, 0, capacity), next: 1, changed: make(chan struct{})}
}

// Append adds a line that did not come from a module process's output,
// e.g. a built-in module's log line (stream "log").
func (l *Log) Append(stream, text string) Line { return l.add(stream, text) }

func (l *Log) add(stream, text string) Line {
	l.mu.Lock()
	defer l.mu.Unlock()
	ln := Line{Seq: l.next, Time: time.Now(), Stream: stream, Text: text}
	l.next++
	if len(l.buf) < cap(l.buf) {
		l.buf = append(l.buf, ln)
	} else {
		l.buf[l.start] = ln
		l.start = (l.start + 1) % len(l.buf)
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return ln
}

// Tail returns the last n lines (all it keeps when n <= 0), oldest first.
func (l *Log) Tail(n int) []Line {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n <= 0 || n > len(l.buf) {
		n = len(l.buf)
	}
	return l.lastLocked(n)
}

func (l *Log) lastLocked(n int) []Line {
	out := make([]Line, 0, n)
	for i := len(l.buf) - n; i < len(l.buf); i++ {
		out = append(out, l.buf[(l.start+i)%len(l.buf)])
	}
	return out
}

// Since returns the lines kept with Seq >= seq, oldest first, the Seq to
// ask for next, and a channel closed when a line arrives after them. Lines
// already dropped from the ring are skipped.
func (l *Log) Since(seq uint64) (lines []Line, next uint64, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := uint64(0)
	if seq < l.next {
		n = min(l.next-seq, uint64(len(l.buf)))
	}
	return l.lastLocked(int(n)), l.next, l.changed
}

// Follow calls fn with every line from seq on, as they arrive, until ctx
// ends or fn fails. Follow returns nil when ctx ends.
func (l *Log) Follow(ctx context.Context, seq uint64, fn func(Line) error) error {
	for {
		lines, next, changed := l.Since(seq)
		for _, ln := range lines {
			if err := fn(ln); err != nil {
				return err
			}
		}
		seq = next
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
}

// capture reads r line by line into the log and the logger until EOF or
// an error (the read end closed). A line longer than MaxLineBytes is cut
// on a character boundary into several.
func capture(r io.Reader, stream string, l *Log, log *slog.Logger) {
	br := bufio.NewReaderSize(r, MaxLineBytes)
	var carry []byte // the start of a character cut off a long line
	for {
		b, err := br.ReadSlice('\n')
		line := append(carry, b...)
		carry = nil
		switch {
		case len(b) > 0 && b[len(b)-1] == '\n':
			line = line[:len(line)-1]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			emit(l, log, stream, line)
		case errors.Is(err, bufio.ErrBufferFull):
			cut := min(len(line), MaxLineBytes)
			for cut > 0 && cut < len(line) && !utf8.RuneStart(line[cut]) {
				cut--
			}
			if cut == 0 {
				cut = min(len(line), MaxLineBytes)
			}
			emit(l, log, stream, line[:cut])
			carry = append([]byte(nil), line[cut:]...)
			continue
		case len(line) > 0: // the last line, without a line end
			emit(l, log, stream, line)
		}
		if err != nil {
			return
		}
	}
}

func emit(l *Log, log *slog.Logger, stream string, text []byte) {
	ln := l.add(stream, string(text))
	log.Info(ln.Text, "stream", stream)
}
