package hub

import (
	"context"
	"time"

	"github.com/tinyedge/tinyedge/hub/message"
)

// Delivery says how a route wants a message delivered.
type Delivery struct {
	// Priority is the highest priority (lowest number) of the routes that
	// sent the message to this endpoint.
	Priority uint32
	// TimeToLive is the route's time to live; 0 inherits the deployment's
	// storeAndForwardConfiguration, negative means forever.
	TimeToLive time.Duration
}

// Endpoint is where the router delivers messages: an in-process module's
// input, $upstream, and later the durable queues of the store.
//
// Deliver returns once the endpoint has taken responsibility for m (for a
// durable endpoint: once it is committed). It blocks rather than drop when
// the endpoint is full, until ctx is done. Deliver must not modify m.
type Endpoint interface {
	Name() string
	Deliver(ctx context.Context, m *message.Message, d Delivery) error
}
