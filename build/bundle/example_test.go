package bundle_test

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/tinyedge/tinyedge/build/bundle"
)

// A device installs each payload into a temporary file and renames it
// into place only when the copy returned no error: the payload reader
// returns an error instead of io.EOF when the bytes do not match the
// signed manifest, so altered bytes are never committed.
func ExampleReader_Next() {
	pub, priv := bundle.GenerateKey()
	var file bytes.Buffer // a bundle, as `tinyedge bundle create` makes it
	binary := "#!/bin/true\n"
	err := bundle.Create(&file, priv, bundle.Manifest{Version: "1.4.0", GOARCH: "arm64"}, []bundle.PayloadSource{{
		Name: "tinyedge",
		Size: int64(len(binary)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(binary)), nil },
	}})
	if err != nil {
		fmt.Println(err)
		return
	}

	r, err := bundle.Open(&file, []ed25519.PublicKey{pub}) // checks the signature
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := r.Manifest().CheckTarget("arm64", ""); err != nil {
		fmt.Println(err)
		return
	}
	slot, _ := os.MkdirTemp("", "slot")
	defer os.RemoveAll(slot)
	for {
		p, payload, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Println(err)
			return
		}
		tmp, _ := os.CreateTemp(slot, p.Name+".tmp*")
		_, err = io.Copy(tmp, payload) // hashes; fails at the end on a mismatch
		tmp.Close()
		if err != nil {
			os.Remove(tmp.Name())
			fmt.Println("not installed:", err)
			return
		}
		os.Rename(tmp.Name(), filepath.Join(slot, p.Name))
		fmt.Printf("installed %s %s (%d bytes)\n", p.Name, r.Manifest().Version, p.Size)
	}
	// Output: installed tinyedge 1.4.0 (12 bytes)
}
