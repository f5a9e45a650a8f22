package bundle

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strings"
)

// GenerateKey returns a new Ed25519 key pair for signing bundles.
func GenerateKey() (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		// crypto/rand.Reader does not fail (Go 1.24 and later).
		panic(err)
	}
	return pub, priv
}

// KeyID returns the short name of a public key used in messages and in
// the bundle's kid header: the first 8 bytes of its SHA-256, in hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

func keyIDs(keys []ed25519.PublicKey) string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = KeyID(k)
	}
	return strings.Join(ids, ", ")
}

// MarshalPrivateKey encodes a private key as PKCS#8 in a PEM block of type
// "PRIVATE KEY".
func MarshalPrivateKey(priv ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("bundle: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// MarshalPublicKey encodes a public key as PKIX in a PEM block of type
// "PUBLIC KEY".
func MarshalPublicKey(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("bundle: encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePrivateKey decodes the first "PRIVATE KEY" PEM block of b, which
// must hold an Ed25519 key. name is for errors.
func ParsePrivateKey(name string, b []byte) (ed25519.PrivateKey, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, newError(ErrKey, "%s has no PRIVATE KEY PEM block; make one with `tinyedge bundle keygen`", name)
		}
		if block.Type != "PRIVATE KEY" {
			continue
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, wrapError(ErrKey, err, "%s: %v", name, err)
		}
		priv, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, newError(ErrKey, "%s holds a %T, not an Ed25519 private key", name, k)
		}
		return priv, nil
	}
}

// ParsePublicKeys decodes every "PUBLIC KEY" PEM block of b; each must be
// an Ed25519 key. A file may hold several, e.g. the current and the next
// signing key. name is for errors.
func ParsePublicKeys(name string, b []byte) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type == "PRIVATE KEY" {
			return nil, newError(ErrKey, "%s is a private key; give the .pub file, and keep the private key off the device", name)
		}
		if block.Type != "PUBLIC KEY" {
			continue
		}
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, wrapError(ErrKey, err, "%s: %v", name, err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, newError(ErrKey, "%s holds a %T, not an Ed25519 public key", name, k)
		}
		keys = append(keys, pub)
	}
	if len(keys) == 0 {
		return nil, newError(ErrKey, "%s has no PUBLIC KEY PEM block; it is the .pub file `tinyedge bundle keygen` writes", name)
	}
	return keys, nil
}

// LoadPrivateKey reads a private key file. It refuses a file that group or
// others may read or write: a signing key that leaked signs updates for
// the whole fleet.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bundle: private key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("bundle: private key: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, newError(ErrKey, "private key %s has mode %04o, open to group or others; run `chmod 600 %s` (and consider the key leaked if others could read it)", path, perm, path)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, fmt.Errorf("bundle: private key: %w", err)
	}
	return ParsePrivateKey(path, buf.Bytes())
}

// LoadPublicKeys reads the public keys of every file in paths.
func LoadPublicKeys(paths ...string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("bundle: public key: %w", err)
		}
		k, err := ParsePublicKeys(p, b)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k...)
	}
	return keys, nil
}

// WriteKeyFiles writes priv to name+".key" (mode 0600) and pub to
// name+".pub" (mode 0644). It refuses to overwrite either file.
func WriteKeyFiles(name string, pub ed25519.PublicKey, priv ed25519.PrivateKey) (keyPath, pubPath string, err error) {
	keyPath, pubPath = name+".key", name+".pub"
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return "", "", fmt.Errorf("bundle: %s exists; refusing to overwrite a key (move it away or pick another name)", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", "", fmt.Errorf("bundle: %w", err)
		}
	}
	privPEM, err := MarshalPrivateKey(priv)
	if err != nil {
		return "", "", err
	}
	pubPEM, err := MarshalPublicKey(pub)
	if err != nil {
		return "", "", err
	}
	if err := writeNew(keyPath, privPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := writeNew(pubPath, pubPEM, 0o644); err != nil {
		os.Remove(keyPath)
		return "", "", err
	}
	return keyPath, pubPath, nil
}

// writeNew creates path, which must not exist, with perm and content b.
func writeNew(path string, b []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("bundle: write %s: %w", path, err)
	}
	return nil
}
