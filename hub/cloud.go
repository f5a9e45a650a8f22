package hub

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/tinyedge/tinyedge/hub/twin"
	"github.com/tinyedge/tinyedge/store"
)

// Twin sync with the cloud. The upstream link fetches each module twin
// after every (re)connect and hands the hub the cloud's desired document;
// the hub keeps the last one it saw (with its $version) in the store's
// twin cache and applies only what changed since as a desired patch, so
// the desired properties the local manifest gave are not wiped by an
// empty cloud twin, and a change made in the cloud while offline is not
// missed. Reported patches of the modules in Options.CloudModules, and of
// the leaf devices in Options.CloudLeaves, are queued in the store as they
// are made and sent by the link in order.
//
// A leaf device's twin is synced the same way as a module's, on the leaf's
// own connection to the cloud: its desired properties are the cloud's
// (plus any set here with PatchLeafDesired), its reported properties go
// to the cloud. Versions are the hub's own, counted here, as for modules.

// cloudSync reports whether md's twin is synced with the cloud.
func (h *Hub) cloudSync(md *module) bool {
	if !h.durable() {
		return false
	}
	if leaf, ok := strings.CutPrefix(md.id, leafTwinPrefix); ok {
		return slices.Contains(h.opts.CloudLeaves, leaf)
	}
	return slices.Contains(h.opts.CloudModules, md.id)
}

// twinKey is the store key of an identity's twin and reported-patch
// queue: the module's name, or devices/{id} for a leaf device (module
// names cannot hold '/').
func twinKey(id Identity) string {
	if id.ModuleID == "" {
		return leafTwinPrefix + id.DeviceID
	}
	return id.ModuleID
}

// leafTwinPrefix starts the store key of a leaf device's twin.
const leafTwinPrefix = "devices/"

// loadCloudTwin reads the cloud's last desired document of md from the
// store; md is new and not yet shared.
func (h *Hub) loadCloudTwin(md *module) {
	if !h.durable() {
		return
	}
	rec, found, err := h.opts.Store.Twin(md.id)
	if err != nil || !found {
		return
	}
	var b twinBlob
	if json.Unmarshal(rec.Desired, &b) == nil {
		md.cloud, md.cloudVersion = b.Cloud, b.CloudVersion
	}
}

// ApplyCloudDesired takes the cloud's full desired document of a module of
// this device or of a leaf device (from a twin GET) and its $version. What changed since the last cloud
// document the hub saw is applied to the module's twin as a desired patch
// and the running module is told; desired properties the cloud never
// set (those of the local manifest) stay. A version older than the one
// already applied is ignored. It returns the module's desired version.
func (h *Hub) ApplyCloudDesired(id Identity, doc map[string]any, version int64) (int64, error) {
	md, err := h.identityTwin(id)
	if err != nil {
		return 0, err
	}
	next := twin.Clone(doc)
	for k := range next {
		if len(k) > 0 && k[0] == '$' { // $version, $metadata
			delete(next, k)
		}
	}
	return md.applyCloud(func(cur map[string]any) (map[string]any, error) { return next, nil }, version, true)
}

// ApplyCloudDesiredPatch applies a desired-properties notification from
// the cloud, with the $version it carries: a patch no newer than the last
// applied is ignored. It returns the module's desired version.
func (h *Hub) ApplyCloudDesiredPatch(id Identity, patch map[string]any, version int64) (int64, error) {
	md, err := h.identityTwin(id)
	if err != nil {
		return 0, err
	}
	return md.applyCloud(func(cur map[string]any) (map[string]any, error) {
		p := twin.Properties{Doc: cur}
		if _, err := p.Apply(patch); err != nil {
			return nil, err
		}
		return p.Doc, nil
	}, version, false)
}

// applyCloud replaces the module's cloud desired document with what next
// makes of it and applies the difference to the twin.
func (md *module) applyCloud(next func(cur map[string]any) (map[string]any, error), version int64, full bool) (int64, error) {
	md.twinMu.Lock()
	if fresh := md.cloudFresh; full && fresh != nil {
		// A twin GET's document: SyncedTwin may answer once it is
		// applied, when this returns.
		defer close(fresh)
		md.cloudFresh = nil
	}
	stale := version != 0 && (version < md.cloudVersion || !full && version == md.cloudVersion)
	if stale {
		v := md.tw.Desired.Version
		md.twinMu.Unlock()
		return v, nil
	}
	doc, err := next(twin.Clone(md.cloud))
	if err != nil {
		md.twinMu.Unlock()
		return 0, fmt.Errorf("cloud desired properties of %s: %w", md.id, err)
	}
	patch := twin.Diff(md.cloud, doc)
	md.cloud, md.cloudVersion = doc, version
	if len(patch) == 0 {
		md.hub.saveTwin(md)
		v := md.tw.Desired.Version
		md.twinMu.Unlock()
		return v, nil
	}
	md.twinMu.Unlock()
	// patchDesired saves the twin, the new cloud document with it.
	return md.patchDesired(patch)
}

// PendingReported returns the identity's reported-properties patches not
// yet accepted by the cloud, oldest first.
func (h *Hub) PendingReported(id Identity) ([]store.Patch, error) {
	if !h.durable() {
		return nil, nil
	}
	return h.opts.Store.ReportedPatches(twinKey(id))
}

// AckReported forgets a reported patch once the cloud accepted it.
func (h *Hub) AckReported(id Identity, seq uint64) error {
	if !h.durable() {
		return nil
	}
	return h.opts.Store.AckReportedPatch(twinKey(id), seq)
}

// ReportedChanged returns a channel closed when the next reported patch
// of a cloud-synced module or leaf device is queued.
func (h *Hub) ReportedChanged() <-chan struct{} {
	h.repMu.Lock()
	defer h.repMu.Unlock()
	if h.repCh == nil {
		h.repCh = make(chan struct{})
	}
	return h.repCh
}

// queueReported keeps patch for the cloud; md.twinMu is held, which keeps
// the queue in the order the patches were applied.
func (md *module) queueReported(patch map[string]any) error {
	h := md.hub
	if !h.cloudSync(md) {
		return nil
	}
	b, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	if _, err := h.opts.Store.QueueReportedPatch(md.id, b); err != nil {
		return err
	}
	h.repMu.Lock()
	if h.repCh != nil {
		close(h.repCh)
		h.repCh = nil
	}
	h.repMu.Unlock()
	return nil
}
