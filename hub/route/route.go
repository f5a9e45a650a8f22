package route

import (
	"math"
	"time"
)

// DefaultPriority is the priority of a route that does not name one: lower
// than every explicit priority (0 is the highest, 9 the lowest that can be
// written).
const DefaultPriority uint32 = math.MaxUint32

// SinkKind tells the two sinks apart.
type SinkKind uint8

const (
	// Upstream is $upstream: the cloud.
	Upstream SinkKind = iota + 1
	// ModuleInput is BrokeredEndpoint("/modules/{m}/inputs/{i}").
	ModuleInput
)

// Sink is where a route sends what it matches.
type Sink struct {
	Kind   SinkKind
	Module string // ModuleInput only
	Input  string // ModuleInput only
}

// Route is one compiled route.
type Route struct {
	Name       string
	Text       string        // the route as written
	Source     string        // the source as written, e.g. /messages/modules/m/*
	Sink       Sink          // where matching messages go
	Priority   uint32        // 0 (highest) … 9, or DefaultPriority
	TimeToLive time.Duration // 0: inherit from storeAndForwardConfiguration; <0: forever

	prefix string     // lower-cased source with trailing "*" and "/" trimmed
	cond   *Condition // nil when there is no WHERE clause
}

// String returns the sink as it is written in a route: $upstream or
// BrokeredEndpoint("/modules/{m}/inputs/{i}").
func (s Sink) String() string {
	switch s.Kind {
	case Upstream:
		return "$upstream"
	case ModuleInput:
		return `BrokeredEndpoint("/modules/` + s.Module + `/inputs/` + s.Input + `")`
	}
	return "no sink"
}
