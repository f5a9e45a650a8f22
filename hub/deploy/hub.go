package deploy

import (
	"errors"
	"math"
	"strings"
	"time"

	"github.com/tinyedge/tinyedge/hub/route"
)

// hub checks $edgeHub's desired properties.
func (p *parser) hub(path string, d *node) {
	rp := member(path, "routes")
	if routes := d.get("routes"); routes != nil {
		if routes.kind != kObject {
			p.errorf(rp, "routes must be an object of route name → route, not %s", routes.kind)
		} else {
			for _, name := range routes.keys {
				p.route(name, member(rp, name), routes.members[name])
			}
		}
	}
	if sf := d.get("storeAndForwardConfiguration"); sf != nil {
		p.storeAndForward(member(path, "storeAndForwardConfiguration"), sf)
	}
}

// route checks one route, a string or (schema 1.1 and later) an object
// {"route": "…", "priority": 0-9, "timeToLiveSecs": n}.
func (p *parser) route(name, path string, n *node) {
	if strings.TrimSpace(name) == "" {
		p.errorf(path, "route name is empty; name the route")
		return
	}
	var (
		text     string
		textPath = path
		priority = route.DefaultPriority
		ttl      time.Duration
	)
	switch n.kind {
	case kString:
		text = n.str
	case kObject:
		if p.hubMinor == 0 {
			p.errorf(path, "route objects need $edgeHub schemaVersion \"1.1\" or later; change schemaVersion or write the route as a string")
			return
		}
		textPath = member(path, "route")
		r := n.get("route")
		switch {
		case r == nil:
			p.errorf(path, "\"route\" is missing; write {\"route\": \"FROM … INTO …\"}")
			return
		case r.kind != kString:
			p.errorf(textPath, "route must be a string \"FROM … INTO …\", not %s", r.kind)
			return
		}
		text = r.str
		ok := true
		if pr := n.get("priority"); pr != nil {
			i, isInt := pr.integer()
			if !isInt || (i < 0 || i > 9) && i != int64(route.DefaultPriority) {
				p.errorf(member(path, "priority"), "priority must be a whole number from 0 (highest) to 9 (lowest), not %s", show(pr))
				ok = false
			} else {
				priority = uint32(i)
			}
		}
		if t := n.get("timeToLiveSecs"); t != nil {
			i, isInt := t.integer()
			if !isInt || i < 0 || i > math.MaxUint32 {
				p.errorf(member(path, "timeToLiveSecs"), "timeToLiveSecs must be a whole number of seconds from 0 (use storeAndForwardConfiguration's) to %d, not %s", uint32(math.MaxUint32), show(t))
				ok = false
			} else {
				ttl = time.Duration(i) * time.Second
			}
		}
		if !ok {
			return
		}
	default:
		what := "a string \"FROM … INTO …\""
		if p.hubMinor != 0 {
			what += " or an object {\"route\": \"FROM … INTO …\", \"priority\": 0, \"timeToLiveSecs\": 86400}"
		}
		p.errorf(path, "a route is %s, not %s", what, n.kind)
		return
	}
	if strings.TrimSpace(text) == "" {
		p.errorf(textPath, "route is empty; write FROM … INTO … or delete it")
		return
	}
	r, err := route.Parse(name, text)
	if err != nil {
		var se *route.SyntaxError
		if errors.As(err, &se) {
			p.probs = append(p.probs, Problem{Path: textPath, Column: se.Column, Msg: se.Msg})
		} else {
			p.errorf(textPath, "%v", err)
		}
		return
	}
	r.Priority = priority
	r.TimeToLive = ttl
	p.m.Routes = append(p.m.Routes, r)
	p.routePaths = append(p.routePaths, path)
}

// storeAndForward checks storeAndForwardConfiguration.
func (p *parser) storeAndForward(path string, n *node) {
	if n.kind != kObject {
		p.errorf(path, "storeAndForwardConfiguration must be an object {\"timeToLiveSecs\": 7200}, not %s", n.kind)
		return
	}
	if t := n.get("timeToLiveSecs"); t != nil {
		tp := member(path, "timeToLiveSecs")
		// edgeHub reads it into a 32-bit int.
		i, ok := t.integer()
		switch {
		case !ok || i < math.MinInt32 || i > math.MaxInt32:
			p.errorf(tp, "timeToLiveSecs must be a whole number of seconds up to %d (negative: keep messages forever), not %s", math.MaxInt32, show(t))
		case i < 0:
			p.m.StoreAndForward.TimeToLive = Forever
		default:
			if i == 0 {
				p.warnf(tp, "timeToLiveSecs 0 drops every message that cannot be delivered at once; the default is 7200")
			}
			p.m.StoreAndForward.TimeToLive = time.Duration(i) * time.Second
		}
	}
	sl := n.get("storeLimits")
	if sl == nil {
		return
	}
	slp := member(path, "storeLimits")
	if sl.kind != kObject {
		p.errorf(slp, "storeLimits must be an object {\"maxSizeBytes\": n}, not %s", sl.kind)
		return
	}
	if mb := sl.get("maxSizeBytes"); mb != nil {
		i, ok := mb.integer()
		if !ok || i <= 0 {
			p.errorf(member(slp, "maxSizeBytes"), "maxSizeBytes must be a positive whole number of bytes, not %s", show(mb))
			return
		}
		p.m.StoreAndForward.MaxSizeBytes = i
	}
}
