// Package crashtest is the writer and the checker of the store's crash
// test. The writer appends numbered messages as fast as it can while a
// consumer reads and acknowledges them, and prints what it did; it is
// meant to be killed (SIGKILL, or by killing the VM it runs in for a true
// power cut). The checker drains the store afterwards and verifies the
// at-least-once guarantee against the writers' output.
//
// Output lines, one event each, written before (D) or after (C, A) the
// event they report is durable:
//
//	C <n>  message n was committed (Append returned nil)
//	D <n>  message n was delivered to the consumer (before it is acked)
//	A <n>  the acknowledgement of n was committed
package crashtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/tinyedge/tinyedge/store"
)

// Endpoint is the queue the crash test uses.
const Endpoint = "$upstream"

// Options for a crash-test store: fsync on, the sweep off, and a small
// journal, so that a run wraps it many times and kills land at every
// stage of a frame's life.
func Options() *store.Options {
	return &store.Options{SweepInterval: -1, DefaultTTL: -1, JournalBytes: 4 * store.MinJournalBytes}
}

// out serialises lines to w; each line is flushed before the call
// returns, so a kill loses at most the line being written.
type out struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (o *out) lines(kind byte, ns ...uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, n := range ns {
		o.w.WriteByte(kind)
		o.w.WriteByte(' ')
		o.w.WriteString(strconv.FormatUint(n, 10))
		o.w.WriteByte('\n')
	}
	return o.w.Flush()
}

// Write runs the writer against the store file path until ctx is done:
// producers goroutines append messages numbered run<<32|i, and a consumer
// reads batches and acknowledges them.
func Write(ctx context.Context, path string, run uint32, producers int, w io.Writer) error {
	s, err := store.Open(path, Options())
	if err != nil {
		return err
	}
	defer s.Close()
	o := &out{w: bufio.NewWriter(w)}
	var next uint64
	var mu sync.Mutex
	number := func() uint64 {
		mu.Lock()
		defer mu.Unlock()
		next++
		return uint64(run)<<32 | next
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, producers+1)
	var wg sync.WaitGroup
	for range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				n := number()
				if _, err := s.Append(ctx, []store.Target{{Endpoint: Endpoint}}, []byte(strconv.FormatUint(n, 10)), store.Meta{}); err != nil {
					if ctx.Err() == nil {
						errc <- err
					}
					return
				}
				if err := o.lines('C', n); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			items, err := s.Read(Endpoint, 64)
			if err != nil {
				errc <- err
				return
			}
			if len(items) == 0 {
				continue
			}
			var ns, seqs []uint64
			for _, it := range items {
				n, err := strconv.ParseUint(string(it.Payload), 10, 64)
				if err != nil {
					errc <- fmt.Errorf("payload %q: %w", it.Payload, err)
					return
				}
				ns = append(ns, n)
				seqs = append(seqs, it.Seq)
			}
			if err := o.lines('D', ns...); err != nil {
				errc <- err
				return
			}
			if err := s.Ack(Endpoint, seqs...); err != nil {
				errc <- err
				return
			}
			if err := o.lines('A', ns...); err != nil {
				errc <- err
				return
			}
		}
	}()
	select {
	case <-ctx.Done():
	case err = <-errc:
		cancel()
	}
	wg.Wait()
	return err
}

// Drain opens the store at path, reads and acknowledges everything left
// and returns the message numbers in delivery order.
func Drain(path string) ([]uint64, error) {
	s, err := store.Open(path, Options())
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var got []uint64
	for {
		items, err := s.Read(Endpoint, 1024)
		if err != nil {
			return got, err
		}
		if len(items) == 0 {
			return got, nil
		}
		var seqs []uint64
		for _, it := range items {
			n, err := strconv.ParseUint(string(it.Payload), 10, 64)
			if err != nil {
				return got, fmt.Errorf("payload %q: %w", it.Payload, err)
			}
			got = append(got, n)
			seqs = append(seqs, it.Seq)
		}
		if err := s.Ack(Endpoint, seqs...); err != nil {
			return got, err
		}
	}
}

// Result summarises a check.
type Result struct {
	Committed, Delivered, Drained, Redelivered int
}

// Check verifies the writers' logs, one per run in order, against the
// numbers drained at the end: every committed message was delivered (by
// a writer's consumer or by the drain), no message whose acknowledgement
// committed was delivered again, and the drain holds no duplicates.
func Check(logs []string, drained []uint64) (Result, error) {
	var r Result
	committed := map[uint64]bool{}
	delivered := map[uint64]bool{}
	acked := map[uint64]bool{}
	var errs []error
	for run, log := range logs {
		sc := bufio.NewScanner(strings.NewReader(log))
		for sc.Scan() {
			kind, num, ok := strings.Cut(sc.Text(), " ")
			n, err := strconv.ParseUint(num, 10, 64)
			if !ok || err != nil {
				// The last line may be cut by the kill.
				continue
			}
			switch kind {
			case "C":
				committed[n] = true
			case "D":
				if acked[n] {
					errs = append(errs, fmt.Errorf("run %d: message %d delivered again after its ack committed", run, n))
				}
				if delivered[n] {
					r.Redelivered++
				}
				delivered[n] = true
			case "A":
				acked[n] = true
			}
		}
	}
	seen := map[uint64]bool{}
	for _, n := range drained {
		if seen[n] {
			errs = append(errs, fmt.Errorf("drain: message %d returned twice", n))
		}
		seen[n] = true
		if acked[n] {
			errs = append(errs, fmt.Errorf("drain: message %d returned after its ack committed", n))
		}
		if delivered[n] {
			r.Redelivered++
		}
		delivered[n] = true
	}
	var missing []uint64
	for n := range committed {
		if !delivered[n] {
			missing = append(missing, n)
		}
	}
	sort.Slice(missing, func(i, j int) bool { return missing[i] < missing[j] })
	for i, n := range missing {
		if i == 10 {
			errs = append(errs, fmt.Errorf("... and %d more missing", len(missing)-10))
			break
		}
		errs = append(errs, fmt.Errorf("message %d (run %d, #%d) was committed and never delivered", n, n>>32, n&0xffffffff))
	}
	r.Committed, r.Delivered, r.Drained = len(committed), len(delivered), len(drained)
	return r, errors.Join(errs...)
}
