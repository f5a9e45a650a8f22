package store

// pendIndex is what pendingFor needs of pend, found without walking every
// batch in it: a Read of one endpoint used to go through all batches of
// all endpoints still in memory, which with a backlog of thousands was a
// tenth of the hub's CPU. It holds, in the order of pend:
//
//   - fresh: the journaled appends, by target endpoint and priority, as
//     references to the target (sequence numbers increase along each);
//   - slow: the appends that were not journaled (answered once bbolt has
//     them, or failed), which end what may be read until then;
//   - acks: the journaled acknowledgements (their numbers increase).
//
// An entry stays until its batch leaves pend (drop); whether it is still
// of use (settled, acknowledged, applied) is checked where it is read.
// Guarded by pendMu; Open makes fresh.
type pendIndex struct {
	fresh map[string]*[NumPriorities]fifo[pendRef]
	slow  fifo[*op]
	acks  fifo[*op]
}

// pendRef is target t of a journaled append.
type pendRef struct {
	o *op
	t int
}

// add indexes a batch appended to pend.
func (x *pendIndex) add(it applyItem) {
	for _, o := range it.batch {
		switch {
		case o.app != nil && o.journaled:
			for i, t := range o.app.targets {
				qs := x.fresh[t.Endpoint]
				if qs == nil {
					qs = new([NumPriorities]fifo[pendRef])
					x.fresh[t.Endpoint] = qs
				}
				qs[t.Priority].push(pendRef{o: o, t: i})
			}
		case o.app != nil:
			x.slow.push(o)
		case o.ack != nil && o.journaled:
			x.acks.push(o)
		}
	}
}

// drop forgets items, the batches taken from the front of pend: what is
// indexed up to their highest sequence number and acknowledgement number
// (both are given in the order batches enter pend). An endpoint's queues
// are kept when they empty: endpoints are few, and come back.
func (x *pendIndex) drop(items []applyItem) {
	var seq, ackNo uint64
	for _, it := range items {
		for _, o := range it.batch {
			if o.app != nil {
				seq = max(seq, o.app.seq)
			}
			if o.ack != nil && o.journaled {
				ackNo = max(ackNo, o.ackNo)
			}
		}
	}
	if seq > 0 {
		for _, qs := range x.fresh {
			for p := range qs {
				qs[p].popWhile(func(r pendRef) bool { return r.o.app.seq <= seq })
			}
		}
		x.slow.popWhile(func(o *op) bool { return o.app.seq <= seq })
	}
	if ackNo > 0 {
		x.acks.popWhile(func(o *op) bool { return o.ackNo <= ackNo })
	}
}

// fifo is a queue that reuses its array: items are pushed at the back
// and popped from the front.
type fifo[T any] struct {
	s    []T
	head int
}

func (q *fifo[T]) push(v T) { q.s = append(q.s, v) }

// items returns what the queue holds, front first.
func (q *fifo[T]) items() []T { return q.s[q.head:] }

// popWhile pops items from the front while f says so.
func (q *fifo[T]) popWhile(f func(T) bool) {
	var zero T
	for q.head < len(q.s) && f(q.s[q.head]) {
		q.s[q.head] = zero
		q.head++
	}
	switch {
	case q.head == len(q.s):
		q.s, q.head = q.s[:0], 0
	case q.head >= 64 && q.head > len(q.s)/2:
		n := copy(q.s, q.s[q.head:])
		clear(q.s[n:])
		q.s, q.head = q.s[:n], 0
	}
}
