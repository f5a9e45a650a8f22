// Package broker holds what the embedded mochi-mqtt servers of tinyedge
// share: a listener whose Close cannot deadlock.
//
// mochi's own listeners close by calling back into Server, which
// disconnects their clients through Clients.GetByListener. That takes the
// clients' read lock twice (it calls Len under its own RLock). A client
// that connects or disconnects in between queues a write lock, the second
// RLock waits behind it, and Server.Close never returns:
// mochi-mqtt/server issue 488, unfixed in v2.7.9. A gateway stopping while
// a module disconnects would hang there; a test under qemu did.
//
// Listener ends its own connections instead, so Server.Close with only
// Listeners never calls GetByListener.
//
// # Caveats
//
// A server must not mix Listener with mochi's listeners: one of theirs
// brings the deadlock back.
package broker
