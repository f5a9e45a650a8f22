//go:build !linux

package store

import (
	"os"

	bolt "go.etcd.io/bbolt"
)

// dropCache is a no-op where the page cache is not known to use large
// folios (see cache_linux.go).
func dropCache(*bolt.DB, string, int64) {}

// dropRange is a no-op, like dropCache.
func dropRange(*os.File, int64, int64) {}

func fdatasync(f *os.File) error { return f.Sync() }
