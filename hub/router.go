package hub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/route"
	"github.com/tinyedge/tinyedge/store"
)

// router is one compiled routing table with each route's sink resolved to
// its endpoint. It is immutable; the hub swaps in a new one when the
// routes or the modules change.
type router struct {
	routes []*route.Route
	ends   []*inbox    // per route: the module input's endpoint; nil for $upstream or an unknown module
	ext    []*extQueue // per route: the external module input's queue, or nil
}

// compileRouter resolves the routes' module sinks against the modules
// table. h.mu must be held.
func (h *Hub) compileRouter(routes []*route.Route) *router {
	r := &router{routes: append([]*route.Route(nil), routes...), ends: make([]*inbox, len(routes)), ext: make([]*extQueue, len(routes))}
	for i, rt := range r.routes {
		if rt.Sink.Kind == route.ModuleInput {
			if md := h.modules[rt.Sink.Module]; md != nil {
				if md.spec.External {
					r.ext[i] = h.extQueue(rt.Sink.Module, rt.Sink.Input)
				} else {
					r.ends[i] = md.inbox
				}
			}
		}
	}
	return r
}

// hit is one sink a message goes to, with the best priority and the time
// to live of the routes that chose it.
type hit struct {
	sink     *route.Sink // of the first route that chose it
	end      *inbox      // for in-process module inputs
	ext      *extQueue   // for external module inputs
	priority uint32
	ttl      time.Duration
}

// match evaluates every route once against m and returns the sinks, one per
// sink however many routes name it. hits is scratch space, so routing
// a message to a handful of sinks does not allocate.
func (r *router) match(m *message.Message, keys message.PropertyKeys, hits []hit) []hit {
	env := route.NewEnvKeys(m, keys)
	for i, rt := range r.routes {
		if !rt.Match(&env) {
			continue
		}
		dup := false
		for i := range hits {
			if *hits[i].sink == rt.Sink {
				dup = true
				// The highest priority (lowest number) of the routes that
				// hit the same sink wins, and its time to live with it.
				if rt.Priority < hits[i].priority {
					hits[i].priority = rt.Priority
					hits[i].ttl = rt.TimeToLive
				}
				break
			}
		}
		if !dup {
			hits = append(hits, hit{sink: &rt.Sink, end: r.ends[i], ext: r.ext[i], priority: rt.Priority, ttl: rt.TimeToLive})
		}
	}
	return hits
}

// route delivers m to every sink its routes select. A message that no
// route selects is counted as dropped with reason "no_route", as edgeHub
// does.
func (h *Hub) route(ctx context.Context, m *message.Message, keys message.PropertyKeys) error {
	durable, err := h.routeMemory(ctx, m, keys)
	if len(durable) > 0 {
		// Stored once for all durable sinks, committed before we return.
		if derr := h.appendDurable(ctx, m, durable); derr != nil {
			err = errors.Join(err, fmt.Errorf("store for %s: %w", durableNames(durable), derr))
		} else {
			h.durableDone(durable)
		}
	}
	return err
}

// routeMemory delivers m to the sinks its routes select that are not
// durable and returns the store targets of the durable ones ($upstream
// and external module inputs, with a store), for the caller to commit.
func (h *Hub) routeMemory(ctx context.Context, m *message.Message, keys message.PropertyKeys) ([]store.Target, error) {
	var scratch [8]hit
	hits := h.router.Load().match(m, keys, scratch[:0])
	if len(hits) == 0 {
		h.drop("no_route")
		return nil, nil
	}
	var errs []error
	var durable []store.Target
	for i := range hits {
		if hits[i].sink.Kind == route.Upstream && h.durable() {
			durable = append(durable, store.Target{Endpoint: UpstreamQueue, Priority: hits[i].priority, TTL: h.ttlFor(hits[i].ttl)})
			continue
		}
		if hits[i].ext != nil && h.durable() {
			// The input name is stamped when the queue is read.
			durable = append(durable, store.Target{Endpoint: hits[i].ext.name, Priority: hits[i].priority, TTL: h.ttlFor(hits[i].ttl)})
			continue
		}
		hm := m
		if hits[i].sink.Kind == route.ModuleInput && len(hits) > 1 {
			// Each input sees its own $inputName; the other sinks keep the
			// message as sent.
			hm = m.Clone()
		}
		if err := h.deliver(ctx, hm, &hits[i]); err != nil {
			errs = append(errs, fmt.Errorf("deliver to %s: %w", hits[i].sink, err))
			continue
		}
		h.sent.Add(1)
	}
	return durable, errors.Join(errs...)
}

// durableDone counts committed deliveries and wakes the readers of the
// external modules' queues among them.
func (h *Hub) durableDone(targets []store.Target) {
	h.sent.Add(uint64(len(targets)))
	for _, t := range targets {
		if module, ok := externalModuleOf(t.Endpoint); ok {
			h.wakeModule(module)
		}
	}
}

func (h *Hub) deliver(ctx context.Context, m *message.Message, ht *hit) error {
	d := Delivery{Priority: ht.priority, TimeToLive: ht.ttl}
	switch ht.sink.Kind {
	case route.Upstream:
		if h.opts.Upstream == nil {
			h.drop("no_upstream")
			return ErrNoUpstream
		}
		return h.opts.Upstream.Deliver(ctx, m, d)
	case route.ModuleInput:
		if ht.ext != nil {
			m.System.InputName = ht.sink.Input
			if err := ht.ext.Deliver(ctx, m, d); err != nil {
				return err
			}
			h.wakeModule(ht.ext.module)
			return nil
		}
		if ht.end == nil {
			h.drop("unknown_module")
			return fmt.Errorf("%w %q", ErrUnknownModule, ht.sink.Module)
		}
		m.System.InputName = ht.sink.Input
		return ht.end.Deliver(ctx, m, d)
	}
	return fmt.Errorf("unknown sink %v", ht.sink)
}

func durableNames(ts []store.Target) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.Endpoint
	}
	return strings.Join(names, ", ")
}

// lookupModule reads the copy-on-write module table without a lock: it is
// on every delivery's path.
func (h *Hub) lookupModule(id string) *module {
	return (*h.mods.Load())[id]
}
