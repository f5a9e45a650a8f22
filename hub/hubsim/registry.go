package hubsim

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tinyedge/tinyedge/hub/twin"
)

// Identity is a device (ModuleID "") or a module in the registry.
// A SAS identity has keys (base64, 32 random bytes when generated); an
// X.509 identity has the thumbprints (hex SHA-256 or SHA-1 of the DER
// certificate) of the client certificates it may present.
type Identity struct {
	DeviceID        string   `json:"deviceId"`
	ModuleID        string   `json:"moduleId,omitempty"`
	PrimaryKey      string   `json:"primaryKey,omitempty"`
	SecondaryKey    string   `json:"secondaryKey,omitempty"`
	X509Thumbprints []string `json:"x509Thumbprints,omitempty"`
	// IoTEdge marks a device as an IoT Edge device (capabilities.iotEdge).
	IoTEdge bool `json:"iotEdge,omitempty"`

	// ConnectionString is filled in by the Sim methods that return an
	// Identity (see Sim.ConnectionString); it is not stored.
	ConnectionString string `json:"-"`
}

// ID is "device" or "device/module": the MQTT client id of the identity.
func (id Identity) ID() string {
	if id.ModuleID == "" {
		return id.DeviceID
	}
	return id.DeviceID + "/" + id.ModuleID
}

// Errors of the registry.
var (
	ErrNotFound = errors.New("no such identity")
	ErrExists   = errors.New("identity exists")
	ErrBadID    = errors.New("bad device or module id")
)

// checkID enforces IoT Hub's device and module id rules: 1 to 128
// characters, ASCII letters, digits and -.%_*?!(),:=@$'. IoT Hub also
// allows + and #, which are MQTT wildcards: such an identity could never
// subscribe to its own topics, so hubsim refuses them.
func checkID(kind, id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("%w: %s id %q must be 1 to 128 characters", ErrBadID, kind, id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-.%_*?!(),:=@$'", c) >= 0 {
			continue
		}
		return fmt.Errorf("%w: %s id %q: character %q is not allowed (letters, digits and -.%%_*?!(),:=@$' are)", ErrBadID, kind, id, c)
	}
	return nil
}

// newKey is a fresh 32-byte SAS key, base64.
func newKey() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return base64.StdEncoding.EncodeToString(b)
}

// entry is an identity with its twin, as kept in memory and on disk.
type entry struct {
	Identity
	twin *twin.Twin
}

// stateVersion is the version of state.json this binary writes.
const stateVersion = 1

type stateFile struct {
	Version    int           `json:"version"`
	Identities []entryRecord `json:"identities"`
}

type entryRecord struct {
	Identity
	Twin twinRecord `json:"twin"`
}

type twinRecord struct {
	Desired         map[string]any `json:"desired"`
	DesiredVersion  int64          `json:"desiredVersion"`
	Reported        map[string]any `json:"reported"`
	ReportedVersion int64          `json:"reportedVersion"`
}

// registry holds the identities by ID(); the Sim's mutex guards it.
type registry map[string]*entry

// validate checks an identity for the registry.
func validate(id Identity) error {
	if err := checkID("device", id.DeviceID); err != nil {
		return err
	}
	if id.ModuleID != "" {
		if err := checkID("module", id.ModuleID); err != nil {
			return err
		}
	}
	for name, k := range map[string]string{"primaryKey": id.PrimaryKey, "secondaryKey": id.SecondaryKey} {
		if k == "" {
			continue
		}
		if b, err := base64.StdEncoding.DecodeString(k); err != nil || len(b) < 16 || len(b) > 64 {
			return fmt.Errorf("%s %s: want base64 of 16 to 64 bytes", id.ID(), name)
		}
	}
	for i, tp := range id.X509Thumbprints {
		if b, err := hex.DecodeString(tp); err != nil || (len(b) != 20 && len(b) != 32) {
			return fmt.Errorf("%s x509Thumbprints[%d]: want the hex SHA-1 or SHA-256 of a certificate", id.ID(), i)
		}
	}
	if id.PrimaryKey == "" && id.SecondaryKey == "" && len(id.X509Thumbprints) == 0 {
		return fmt.Errorf("%s: no key and no certificate thumbprint: it could never connect", id.ID())
	}
	if id.ModuleID != "" && id.IoTEdge {
		return fmt.Errorf("%s: only a device can be an IoT Edge device", id.ID())
	}
	return nil
}

// decodeState parses state.json: every identity valid, no duplicates, a
// module's device present, twins within IoT Hub's limits.
func decodeState(b []byte) (registry, error) {
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("decode state: %w", err)
	}
	switch {
	case f.Version > stateVersion:
		return nil, fmt.Errorf("decode state: version %d is newer than this tinyedge (%d); upgrade it", f.Version, stateVersion)
	case f.Version < 1:
		return nil, fmt.Errorf("decode state: no version")
	}
	reg := registry{}
	for i, r := range f.Identities {
		if err := validate(r.Identity); err != nil {
			return nil, fmt.Errorf("decode state: identities[%d]: %w", i, err)
		}
		if _, dup := reg[r.ID()]; dup {
			return nil, fmt.Errorf("decode state: identities[%d]: %s is listed twice", i, r.ID())
		}
		t, err := twin.New(nil)
		if err != nil {
			return nil, err
		}
		for _, sec := range []struct {
			name    string
			p       *twin.Properties
			doc     map[string]any
			version int64
		}{{"desired", &t.Desired, r.Twin.Desired, r.Twin.DesiredVersion}, {"reported", &t.Reported, r.Twin.Reported, r.Twin.ReportedVersion}} {
			if sec.doc != nil {
				if _, err := sec.p.Apply(sec.doc); err != nil {
					return nil, fmt.Errorf("decode state: identities[%d] (%s) twin %s: %w", i, r.ID(), sec.name, err)
				}
			}
			if sec.version < 1 {
				return nil, fmt.Errorf("decode state: identities[%d] (%s) twin %s version %d, want 1 or more", i, r.ID(), sec.name, sec.version)
			}
			sec.p.Version = sec.version
		}
		reg[r.ID()] = &entry{Identity: r.Identity, twin: t}
	}
	for id, e := range reg {
		if e.ModuleID != "" && reg[e.DeviceID] == nil {
			return nil, fmt.Errorf("decode state: module %s has no device %s", id, e.DeviceID)
		}
	}
	return reg, nil
}

// encode is the state.json form of reg, identities sorted.
func (reg registry) encode() ([]byte, error) {
	f := stateFile{Version: stateVersion, Identities: []entryRecord{}}
	for _, id := range reg.sortedIDs() {
		e := reg[id]
		f.Identities = append(f.Identities, entryRecord{Identity: e.Identity, Twin: twinRecord{
			Desired: e.twin.Desired.Doc, DesiredVersion: e.twin.Desired.Version,
			Reported: e.twin.Reported.Doc, ReportedVersion: e.twin.Reported.Version,
		}})
	}
	return json.MarshalIndent(f, "", "  ")
}

func (reg registry) sortedIDs() []string {
	ids := make([]string, 0, len(reg))
	for id := range reg {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// writeFileAtomic replaces path with b: a temporary file, fsync, rename,
// fsync of the directory, so a crash leaves the old or the new file.
func writeFileAtomic(path string, b []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename it is gone already
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
