// Package identity keeps the keys of the identities tinyedge issues
// itself: one per module of the deployment and one per leaf device the
// device config declares without a key. Each has a generation id, as IoT
// Hub gives module identities: a module removed and added again is a new
// identity with a new generation id and a new key, so a token signed for
// the old one stops working.
//
// The identities live in one small JSON file in the data directory,
// readable by its owner only (0600) and rewritten atomically on every
// change: a temporary file, fsync, rename, fsync of the directory. A power
// cut leaves either the old file or the new one.
//
// # Caveats
//
//   - Keys are kept in the clear in that file, as IoT Edge's keyd keeps
//     them in a file when no HSM is configured; protect the data directory.
//   - A file that cannot be read is moved aside and replaced by an empty
//     store (Open returns a *RecoveredError with it): modules get new keys
//     at their next start, which they fetch through the workload API, but
//     leaf devices whose keys were generated here must be given their new
//     keys.
package identity

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// KeySize is the length of generated keys in bytes, as IoT Hub's.
const KeySize = 32

// Identity is a device or module identity and its key.
type Identity struct {
	DeviceID     string
	ModuleID     string // "" for a device identity
	GenerationID string // changes when the identity is created again or rotated
	Key          []byte // the raw key (what a connection string holds base64-encoded)
	Created      time.Time
}

// Errors returned by the Store.
var (
	// ErrNotFound means the store holds no such identity.
	ErrNotFound = errors.New("no such identity")
	// ErrInvalidID means an empty device id, or a module id with a
	// character IoT Hub does not allow in identities.
	ErrInvalidID = errors.New("invalid identity id")
)

// RecoveredError is returned by Open together with a usable, empty Store
// when the file was unreadable: it has been moved to MovedTo.
type RecoveredError struct {
	Path    string
	MovedTo string
	Cause   error
}

func (e *RecoveredError) Error() string {
	return fmt.Sprintf("identity store %s was unreadable (%v); moved it to %s and started empty: modules get new keys, leaf devices with generated keys need theirs again", e.Path, e.Cause, e.MovedTo)
}

// Unwrap returns why the file was unreadable.
func (e *RecoveredError) Unwrap() error { return e.Cause }

// Store is the identity file. It is safe for concurrent use.
type Store struct {
	path string

	mu  sync.RWMutex
	ids map[string]Identity // by key(deviceID, moduleID)
}

func key(deviceID, moduleID string) string { return deviceID + "/" + moduleID }

// Open reads the identity file at path, or starts an empty store when
// there is none (the file is written at the first change). An unreadable
// file is moved aside: Open then returns the empty store and a
// *RecoveredError.
func Open(path string) (*Store, error) {
	s := &Store{path: path, ids: map[string]Identity{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open identity store: %w", err)
	}
	ids, err := decode(data)
	if err != nil {
		moved := fmt.Sprintf("%s.corrupt-%s", path, time.Now().UTC().Format("20060102T150405Z"))
		if rerr := os.Rename(path, moved); rerr != nil {
			return nil, fmt.Errorf("open identity store %s: %w (and moving it aside failed: %v)", path, err, rerr)
		}
		return s, &RecoveredError{Path: path, MovedTo: moved, Cause: err}
	}
	for _, id := range ids {
		s.ids[key(id.DeviceID, id.ModuleID)] = id
	}
	return s, nil
}

// Read returns the identities in the file at path without opening a
// Store: it changes nothing, not even a corrupt file. For tools that
// look while tinyedge runs.
func Read(path string) ([]Identity, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read identity store: %w", err)
	}
	ids, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("read identity store %s: %w", path, err)
	}
	sortIDs(ids)
	return ids, nil
}

// Path is the file the store lives in.
func (s *Store) Path() string { return s.path }

// Module returns the identity of module moduleID of device deviceID,
// creating it with a new generation id and key when the store has none.
func (s *Store) Module(deviceID, moduleID string) (Identity, error) {
	if moduleID == "" {
		return Identity{}, fmt.Errorf("module identity of %q: %w: the module id is empty", deviceID, ErrInvalidID)
	}
	return s.get(deviceID, moduleID)
}

// Device returns the identity of a (leaf) device, creating it with a new
// generation id and key when the store has none.
func (s *Store) Device(deviceID string) (Identity, error) {
	return s.get(deviceID, "")
}

func (s *Store) get(deviceID, moduleID string) (Identity, error) {
	if err := checkIDs(deviceID, moduleID); err != nil {
		return Identity{}, err
	}
	k := key(deviceID, moduleID)
	s.mu.RLock()
	id, ok := s.ids[k]
	s.mu.RUnlock()
	if ok {
		return clone(id), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.ids[k]; ok {
		return clone(id), nil
	}
	id, err := newIdentity(deviceID, moduleID)
	if err != nil {
		return Identity{}, err
	}
	if err := s.commit(func(m map[string]Identity) { m[k] = id }); err != nil {
		return Identity{}, err
	}
	return clone(id), nil
}

// Lookup returns an identity without creating it.
func (s *Store) Lookup(deviceID, moduleID string) (Identity, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	id, ok := s.ids[key(deviceID, moduleID)]
	if !ok {
		return Identity{}, false
	}
	return clone(id), true
}

// Key returns the raw key of an identity (moduleID "" for a device), for
// checking SAS tokens. It never creates an identity.
func (s *Store) Key(deviceID, moduleID string) (key []byte, ok bool) {
	id, ok := s.Lookup(deviceID, moduleID)
	if !ok {
		return nil, false
	}
	return id.Key, true
}

// Rotate gives an identity a new generation id and a new key, creating
// it if missing, and returns it.
func (s *Store) Rotate(deviceID, moduleID string) (Identity, error) {
	if err := checkIDs(deviceID, moduleID); err != nil {
		return Identity{}, err
	}
	id, err := newIdentity(deviceID, moduleID)
	if err != nil {
		return Identity{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.commit(func(m map[string]Identity) { m[key(deviceID, moduleID)] = id }); err != nil {
		return Identity{}, err
	}
	return clone(id), nil
}

// Remove deletes an identity; the next Module or Device call creates it
// again with a new generation id and key. Removing what is not there is
// no error.
func (s *Store) Remove(deviceID, moduleID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(deviceID, moduleID)
	if _, ok := s.ids[k]; !ok {
		return nil
	}
	return s.commit(func(m map[string]Identity) { delete(m, k) })
}

// Retain removes the module identities of deviceID whose module is not
// in modules, as a deployment that drops a module removes its identity,
// and returns the ids it removed, sorted. Device identities stay.
func (s *Store) Retain(deviceID string, modules []string) ([]string, error) {
	keep := map[string]bool{}
	for _, m := range modules {
		keep[m] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var gone []string
	for _, id := range s.ids {
		if id.DeviceID == deviceID && id.ModuleID != "" && !keep[id.ModuleID] {
			gone = append(gone, id.ModuleID)
		}
	}
	if len(gone) == 0 {
		return nil, nil
	}
	sort.Strings(gone)
	err := s.commit(func(m map[string]Identity) {
		for _, g := range gone {
			delete(m, key(deviceID, g))
		}
	})
	if err != nil {
		return nil, err
	}
	return gone, nil
}

// List returns every identity, sorted by device and module id.
func (s *Store) List() []Identity {
	s.mu.RLock()
	out := make([]Identity, 0, len(s.ids))
	for _, id := range s.ids {
		out = append(out, clone(id))
	}
	s.mu.RUnlock()
	sortIDs(out)
	return out
}

// commit applies change to a copy of the identities, writes the copy and
// only then makes it current, so a failed write changes nothing. s.mu
// must be held for writing.
func (s *Store) commit(change func(map[string]Identity)) error {
	next := make(map[string]Identity, len(s.ids)+1)
	for k, v := range s.ids {
		next[k] = v
	}
	change(next)
	list := make([]Identity, 0, len(next))
	for _, id := range next {
		list = append(list, id)
	}
	sortIDs(list)
	data, err := encode(list)
	if err != nil {
		return fmt.Errorf("write identity store %s: %w", s.path, err)
	}
	if err := writeAtomic(s.path, data); err != nil {
		return fmt.Errorf("write identity store: %w", err)
	}
	s.ids = next
	return nil
}

// writeAtomic replaces path with data so that a crash leaves the old
// file or the new one, never a mix.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func newIdentity(deviceID, moduleID string) (Identity, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return Identity{}, fmt.Errorf("new key for %s: %w", key(deviceID, moduleID), err)
	}
	gen, err := newGenerationID()
	if err != nil {
		return Identity{}, fmt.Errorf("new generation id for %s: %w", key(deviceID, moduleID), err)
	}
	return Identity{DeviceID: deviceID, ModuleID: moduleID, GenerationID: gen, Key: k, Created: time.Now().UTC().Truncate(time.Second)}, nil
}

// genSpace is the number of generation ids: 10^17, so ids are "6"
// followed by 17 digits, the shape of IoT Hub's (e.g. "637781234567890123").
var genSpace = new(big.Int).Exp(big.NewInt(10), big.NewInt(17), nil)

// newGenerationID returns a random generation id. Random rather than a
// clock reading: a gateway without a real-time clock may read the same
// time after every boot.
func newGenerationID() (string, error) {
	n, err := rand.Int(rand.Reader, genSpace)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("6%017d", n), nil
}

func clone(id Identity) Identity {
	id.Key = append([]byte(nil), id.Key...)
	return id
}

func sortIDs(ids []Identity) {
	sort.Slice(ids, func(i, j int) bool {
		if ids[i].DeviceID != ids[j].DeviceID {
			return ids[i].DeviceID < ids[j].DeviceID
		}
		return ids[i].ModuleID < ids[j].ModuleID
	})
}

// checkIDs applies IoT Hub's rules for identity ids: at most 128
// characters of ASCII letters, digits and - . + % _ # * ? ! ( ) , = @ ; $ '
// (module ids also allow :).
func checkIDs(deviceID, moduleID string) error {
	if err := checkID("device", deviceID, ""); err != nil {
		return err
	}
	if moduleID == "" {
		return nil
	}
	return checkID("module", moduleID, ":")
}

func checkID(what, id, extra string) error {
	if id == "" {
		return fmt.Errorf("%w: the %s id is empty", ErrInvalidID, what)
	}
	if len(id) > 128 {
		return fmt.Errorf("%w: %s id %.20q… is %d characters long, IoT Hub allows 128", ErrInvalidID, what, id, len(id))
	}
	for _, r := range id {
		ok := 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("-.+%_#*?!(),=@;$'"+extra, r)
		if !ok {
			return fmt.Errorf("%w: %s id %q contains %q", ErrInvalidID, what, id, r)
		}
	}
	return nil
}

// The file format.

const fileVersion = 1

type fileDoc struct {
	Version    int          `json:"version"`
	Identities []fileRecord `json:"identities"`
}

type fileRecord struct {
	DeviceID     string    `json:"deviceId"`
	ModuleID     string    `json:"moduleId,omitempty"`
	GenerationID string    `json:"generationId"`
	Key          string    `json:"key"` // base64, standard encoding
	Created      time.Time `json:"created"`
}

func encode(ids []Identity) ([]byte, error) {
	doc := fileDoc{Version: fileVersion, Identities: make([]fileRecord, 0, len(ids))}
	for _, id := range ids {
		doc.Identities = append(doc.Identities, fileRecord{
			DeviceID: id.DeviceID, ModuleID: id.ModuleID, GenerationID: id.GenerationID,
			Key: base64.StdEncoding.EncodeToString(id.Key), Created: id.Created,
		})
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// decode reads the identity file, refusing anything it would not have
// written: an unknown version, invalid ids, a duplicate, an empty
// generation id or a key that is not base64 of 16 to 64 bytes.
func decode(data []byte) ([]Identity, error) {
	var doc fileDoc
	d := json.NewDecoder(strings.NewReader(string(data)))
	d.DisallowUnknownFields()
	if err := d.Decode(&doc); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if d.More() {
		return nil, errors.New("decode: data after the document")
	}
	if doc.Version != fileVersion {
		return nil, fmt.Errorf("decode: version %d, this tinyedge reads version %d", doc.Version, fileVersion)
	}
	seen := map[string]bool{}
	out := make([]Identity, 0, len(doc.Identities))
	for i, r := range doc.Identities {
		if err := checkIDs(r.DeviceID, r.ModuleID); err != nil {
			return nil, fmt.Errorf("decode: identities[%d]: %w", i, err)
		}
		k := key(r.DeviceID, r.ModuleID)
		if seen[k] {
			return nil, fmt.Errorf("decode: identities[%d]: %s is listed twice", i, k)
		}
		seen[k] = true
		if r.GenerationID == "" {
			return nil, fmt.Errorf("decode: identities[%d]: %s has no generation id", i, k)
		}
		raw, err := base64.StdEncoding.Strict().DecodeString(r.Key)
		if err != nil || len(raw) < 16 || len(raw) > 64 {
			return nil, fmt.Errorf("decode: identities[%d]: the key of %s is not base64 of 16 to 64 bytes", i, k)
		}
		out = append(out, Identity{DeviceID: r.DeviceID, ModuleID: r.ModuleID, GenerationID: r.GenerationID, Key: raw, Created: r.Created})
	}
	return out, nil
}
