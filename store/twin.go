package store

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TwinRecord is the cached twin of a module: its last known desired and
// reported properties (opaque JSON to the store) and their versions.
type TwinRecord struct {
	Module          string
	Desired         []byte
	Reported        []byte
	DesiredVersion  int64
	ReportedVersion int64
}

// Patch is a reported-properties patch made while offline, waiting to be
// sent upstream.
type Patch struct {
	Seq    uint64
	Patch  []byte
	Queued time.Time
}

func checkModule(op, module string) error {
	if module == "" || len(module) > maxEndpointLen {
		return fmt.Errorf("%w: %s: module name must be 1 to %d bytes, got %d", ErrInvalid, op, maxEndpointLen, len(module))
	}
	return nil
}

// write runs fn, the operation name, in the writer's next batch and waits for its commit.
func (s *Store) write(name string, fn func(w *wtx) error) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	return s.submit(context.Background(), &op{name: name, fn: fn})
}

// view runs fn in a read transaction.
func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	return s.db.View(fn)
}

// PutTwin replaces the cached twin of module. Twin writes are small and
// are not subject to the size limit.
func (s *Store) PutTwin(module string, desired, reported []byte, desiredVersion, reportedVersion int64) error {
	if err := checkModule("put twin", module); err != nil {
		return err
	}
	rec, err := encodeRecord(twinRecord{V: recordVersion, Desired: desired, Reported: reported, DesiredVersion: desiredVersion, ReportedVersion: reportedVersion})
	if err != nil {
		return err
	}
	return s.write("put twin", func(w *wtx) error {
		return w.tx.Bucket(bucketTwins).Put([]byte(module), rec)
	})
}

// Twin returns the cached twin of module, and false when there is none.
func (s *Store) Twin(module string) (TwinRecord, bool, error) {
	var t TwinRecord
	found := false
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketTwins).Get([]byte(module))
		if v == nil {
			return nil
		}
		var r twinRecord
		if err := decodeRecord(v, &r); err != nil {
			return fmt.Errorf("store: twin %q: %w", module, err)
		}
		found = true
		t = TwinRecord{Module: module, Desired: r.Desired, Reported: r.Reported, DesiredVersion: r.DesiredVersion, ReportedVersion: r.ReportedVersion}
		return nil
	})
	return t, found, err
}

// QueueReportedPatch keeps a reported-properties patch of module for the
// upstream sync and returns its sequence number; patches of a module are
// kept in the order they were queued.
func (s *Store) QueueReportedPatch(module string, patch []byte) (uint64, error) {
	if err := checkModule("queue reported patch", module); err != nil {
		return 0, err
	}
	rec, err := encodeRecord(patchRecord{V: recordVersion, Patch: patch, Queued: s.opts.Now().UnixNano()})
	if err != nil {
		return 0, err
	}
	var seq uint64
	err = s.write("queue reported patch", func(w *wtx) error {
		b, err := w.tx.Bucket(bucketPatches).CreateBucketIfNotExists([]byte(module))
		if err != nil {
			return err
		}
		b.FillPercent = 1.0
		if seq, err = b.NextSequence(); err != nil {
			return err
		}
		return b.Put(u64(seq), rec)
	})
	if err != nil {
		return 0, err
	}
	return seq, nil
}

// ReportedPatches returns the queued patches of module, oldest first.
func (s *Store) ReportedPatches(module string) ([]Patch, error) {
	var out []Patch
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPatches).Bucket([]byte(module))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var r patchRecord
			if err := decodeRecord(v, &r); err != nil {
				return fmt.Errorf("store: reported patch %q seq %d: %w", module, getU64(k), err)
			}
			out = append(out, Patch{Seq: getU64(k), Patch: r.Patch, Queued: time.Unix(0, r.Queued)})
			return nil
		})
	})
	return out, err
}

// AckReportedPatch removes a patch of module once the upstream accepted
// it. An unknown seq is ignored.
func (s *Store) AckReportedPatch(module string, seq uint64) error {
	if err := checkModule("ack reported patch", module); err != nil {
		return err
	}
	return s.write("ack reported patch", func(w *wtx) error {
		b := w.tx.Bucket(bucketPatches).Bucket([]byte(module))
		if b == nil {
			return nil
		}
		return b.Delete(u64(seq))
	})
}
