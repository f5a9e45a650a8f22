package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// Format 1 (tinyedge before the flat queue layout) kept one bucket per
// endpoint and priority under queues, every message body in messages,
// and the trust marks in meta/trust. These names are read only here.
var (
	v1KeyState    = []byte("state")
	v1BucketTrust = []byte("trust")
)

// convertV1 rewrites the format 1 file at path in the current format: it
// copies it into path+".v2", in transactions of at most compactTxSize
// bytes, syncs that file and renames it over path. A crash during the
// conversion leaves the format 1 file as it was, and the next Open
// converts it again.
func convertV1(path string) error {
	tmp := path + ".v2"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store: convert %s: %w", path, err)
	}
	src, err := openBolt(path, false, true)
	if err != nil {
		return err
	}
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType, NoSync: true})
	if err != nil {
		src.Close()
		return fmt.Errorf("store: convert %s: %w", path, err)
	}
	err = src.View(func(stx *bolt.Tx) error { return copyV1(stx, dst) })
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	src.Close()
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store: convert %s from format 1 to %d: %w", path, formatVersion, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// copier writes into a bbolt file in transactions of bounded size.
type copier struct {
	db *bolt.DB
	tx *bolt.Tx
	n  int
}

func (c *copier) bucket(name []byte) (*bolt.Bucket, error) {
	if c.n > compactTxSize {
		if err := c.tx.Commit(); err != nil {
			return nil, err
		}
		c.tx, c.n = nil, 0
	}
	if c.tx == nil {
		tx, err := c.db.Begin(true)
		if err != nil {
			return nil, err
		}
		c.tx = tx
	}
	b := c.tx.Bucket(name)
	b.FillPercent = 1.0
	return b, nil
}

func (c *copier) put(bucket, k, v []byte) error {
	b, err := c.bucket(bucket)
	if err != nil {
		return err
	}
	c.n += len(k) + len(v)
	return b.Put(k, v)
}

// copyV1 copies the format 1 store read by stx into the empty file dst.
func copyV1(stx *bolt.Tx, dst *bolt.DB) (err error) {
	c := &copier{db: dst}
	defer func() {
		if c.tx != nil {
			if err != nil {
				c.tx.Rollback()
			} else {
				err = c.tx.Commit()
			}
		}
	}()
	smeta, smsgs, srefs, squeues := stx.Bucket(bucketMeta), stx.Bucket(bucketMessages), stx.Bucket(bucketRefs), stx.Bucket(bucketQueues)
	if smsgs == nil || srefs == nil || squeues == nil {
		return fmt.Errorf("%w: format 1 file without its buckets", ErrCorrupt)
	}
	if err := dst.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketTrust, bucketEndpoints, bucketQueues, bucketMessages, bucketRefs, bucketTwins, bucketPatches} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		rec, err := encodeRecord(formatRecord{V: formatVersion})
		if err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(keyFormat, rec); err != nil {
			return err
		}
		if v := smeta.Get(keyUntrusted); v != nil {
			if err := meta.Put(keyUntrusted, v); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMessages).SetSequence(smsgs.Sequence())
	}); err != nil {
		return err
	}
	if tb := smeta.Bucket(v1BucketTrust); tb != nil {
		if err := tb.ForEach(func(k, v []byte) error { return c.put(bucketTrust, k, v) }); err != nil {
			return err
		}
	}
	if tb := stx.Bucket(bucketTwins); tb != nil {
		if err := tb.ForEach(func(k, v []byte) error { return c.put(bucketTwins, k, v) }); err != nil {
			return err
		}
	}
	if pb := stx.Bucket(bucketPatches); pb != nil {
		if err := pb.ForEachBucket(func(module []byte) error {
			smod := pb.Bucket(module)
			b, err := c.bucket(bucketPatches)
			if err != nil {
				return err
			}
			mod, err := b.CreateBucket(module)
			if err != nil {
				return err
			}
			if err := mod.SetSequence(smod.Sequence()); err != nil {
				return err
			}
			return smod.ForEach(func(k, v []byte) error {
				b, err := c.bucket(bucketPatches)
				if err != nil {
					return err
				}
				mod := b.Bucket(module)
				mod.FillPercent = 1.0
				c.n += len(k) + len(v)
				return mod.Put(k, v)
			})
		}); err != nil {
			return err
		}
	}
	// Queues, in key order of the new layout: endpoints get ids in name
	// order. A message with more than one reference left stays in
	// messages; any other moves into the one queue that holds it.
	var id uint32
	if err := squeues.ForEachBucket(func(name []byte) error {
		id++
		eb := squeues.Bucket(name)
		r := endpointRecord{}
		if v := eb.Get(v1KeyState); v != nil {
			if err := decodeRecord(v, &r); err != nil {
				return fmt.Errorf("endpoint %q: %w", name, err)
			}
		}
		r.V, r.ID = recordVersion, id
		rec, err := encodeRecord(r)
		if err != nil {
			return err
		}
		if err := c.put(bucketEndpoints, name, rec); err != nil {
			return err
		}
		for p := uint32(0); p < NumPriorities; p++ {
			qb := eb.Bucket([]byte{byte(p)})
			if qb == nil {
				continue
			}
			if err := qb.ForEach(func(k, _ []byte) error {
				v := []byte{}
				if srefs.Get(k) == nil {
					if v = smsgs.Get(k); v == nil {
						return nil // a reference to nothing: nothing to deliver
					}
				}
				return c.put(bucketQueues, queueKey(id, p, getU64(k)), v)
			}); err != nil {
				return fmt.Errorf("endpoint %q priority %d: %w", name, p, err)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := srefs.ForEach(func(k, v []byte) error {
		m := smsgs.Get(k)
		if m == nil {
			return nil
		}
		if err := c.put(bucketMessages, k, m); err != nil {
			return err
		}
		return c.put(bucketRefs, k, v)
	}); err != nil {
		return err
	}
	b, err := c.bucket(bucketEndpoints)
	if err != nil {
		return err
	}
	return b.SetSequence(uint64(id))
}
