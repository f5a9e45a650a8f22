//go:build race

package route

// raceEnabled: the race detector makes sync.Pool drop items, so pooled
// buffers (json.Valid's scanner) allocate.
const raceEnabled = true
