package upstream

import (
	"context"
	"errors"
	"time"
)

// Leaf devices' own connections.
//
// A leaf device with a shared access key (IoTHubConfig.Leaves) is a
// device of its own in IoT Hub, and the key the gateway checks its local
// connections with is its IoT Hub key. So the link connects to IoT Hub as
// the leaf, as edgeHub does: the leaf's telemetry goes up on the leaf's
// connection (IoT Hub stamps the leaf's $connectionDeviceId), its twin
// is synced with the cloud and its direct methods are served from the
// cloud, as a module identity's are (twin.go).
//
// A gateway may serve many leaves that seldom talk, so a leaf's
// connection is open only while it is needed: from the first message of
// the leaf the pump hands over, or from when the leaf connects to the
// local endpoint (the hub's ConnectedLeaves), until the leaf has been
// gone from the local endpoint and silent for Options.LeafIdle with
// nothing in flight. While the leaf is connected locally its connection
// stays open, so the cloud's direct methods and desired properties reach
// it, as they would reach it connected to IoT Hub directly; a leaf that is
// not connected is offline for IoT Hub too (its methods answer 404 there).
// Each new local session of the leaf has its twin fetched from the cloud,
// and the leaf's first twin GET is answered once that copy is in (see
// hub.SyncedTwin; the local endpoint waits a few seconds at most).
//
// When IoT Hub refuses the leaf's credentials (CONNACK 4 or 5: the device
// is not registered there, or with another key), the leaf's messages go
// up on the gateway device's connection instead, as the gateway's, and a
// warning says so: they are neither lost nor allowed to hold up every
// other identity's messages behind them in the pump, which sends in
// order. The leaf's connection keeps retrying with backoff while it is
// needed; once it connects, the leaf's messages go as the leaf again.
// Other failures (network, TLS, timeouts) are the gateway's as much as
// the leaf's, since both go to the same host: the leaf's messages wait
// for its connection, as a module identity's do.

// errRefused is what a module or leaf identity's publish returns when
// the message is to go on the device's connection instead (the same
// fallback serves module identities IoT Hub refuses).
var errRefused = errors.New("identity refused by the broker; using the device's connection")

// acquire marks the leaf identity as used by a Publish, connecting it if
// it is not.
func (l *Link) acquire(id *identity) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id.busy++
	id.lastUsed = time.Now()
	l.startLocked(id)
}

// release ends a Publish's use of the leaf identity.
func (l *Link) release(id *identity) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id.busy--
	id.lastUsed = time.Now()
}

// startLocked starts the leaf identity's connection loop if it is not
// running; l.mu is held. Before Start it only marks the identity wanted.
func (l *Link) startLocked(id *identity) {
	if id.running || !l.start || l.ctx.Err() != nil {
		return
	}
	id.running = true
	ctx, cancel := context.WithCancel(l.ctx)
	prev, done := id.done, make(chan struct{})
	id.stop, id.done = cancel, done
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer close(done)
		if prev != nil {
			<-prev // the run before has closed its session
		}
		id.log.Info("leaf device connects to the cloud as itself")
		id.run(ctx)
	}()
}

// tendLeaves keeps the connections of leaves connected to the local
// endpoint open and closes those idle for Options.LeafIdle, until ctx
// ends.
func (l *Link) tendLeaves(ctx context.Context) {
	tick := time.NewTicker(max(l.opts.LeafIdle/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		var (
			connected map[string]uint64
			changed   <-chan struct{}
		)
		if l.cloud != nil {
			connected, changed = l.cloud.ConnectedLeaves()
		}
		var idle []context.CancelFunc
		now := time.Now()
		l.mu.Lock()
		for name, id := range l.leaves {
			session, held := connected[name]
			if id.held && !held {
				id.lastUsed = now // idle from the local disconnect on
			}
			id.held = held
			switch {
			case held:
				if session != id.session && id.running {
					// A new local session: its twin GET waits for a
					// fresh copy from the cloud (hub.SyncedTwin). A
					// connection that starts now fetches it anyway.
					id.fetchTwin()
				}
				id.session = session
				l.startLocked(id)
			case id.running && id.busy == 0 && now.Sub(id.lastUsed) >= l.opts.LeafIdle && id.snapshot().InFlight == 0:
				id.running = false
				idle = append(idle, id.stop)
			}
		}
		l.mu.Unlock()
		for _, stop := range idle {
			stop() // a new start waits for this run to end
		}
		select {
		case <-changed:
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}
