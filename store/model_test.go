package store

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// readModel is what Read must return: per endpoint the messages not
// acknowledged, and the read position of each priority.
type readModel struct {
	msgs map[string][]modelMsg // in sequence order
	pos  map[string]*[NumPriorities]uint64
	now  time.Time
}

type modelMsg struct {
	seq     uint64
	prio    uint32
	expires time.Time // zero: never
}

func (m *readModel) next(ep string, max int) []uint64 {
	pos := m.pos[ep]
	if pos == nil {
		pos = new([NumPriorities]uint64)
		m.pos[ep] = pos
	}
	var out []uint64
	for p := range uint32(NumPriorities) {
		for _, msg := range m.msgs[ep] {
			if len(out) == max {
				return out
			}
			if msg.prio == p && msg.seq > pos[p] && (msg.expires.IsZero() || m.now.Before(msg.expires)) {
				out = append(out, msg.seq)
				pos[p] = msg.seq
			}
		}
	}
	return out
}

func (m *readModel) ack(ep string, seqs []uint64) {
	m.msgs[ep] = slices.DeleteFunc(m.msgs[ep], func(msg modelMsg) bool { return slices.Contains(seqs, msg.seq) })
}

// TestReadModel runs random appends (to one or two endpoints, at random
// priorities, some with a TTL of 90 s), reads of random sizes,
// acknowledgements of random messages (read or not), rewinds,
// checkpoints, a clock that moves on by a minute, and clean and crashed
// reopens against readModel. Messages are in memory or in bbolt, or
// both while a checkpoint commits them, as the operations fall.
func TestReadModel(t *testing.T) {
	eps := []string{"a", "b", "$upstream"}
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 1))
			path := filepath.Join(t.TempDir(), "s.db")
			c := newClock(trustedT)
			o := testOptions(c)
			o.JournalBytes = MinJournalBytes // wraps, and fills: some batches go to bbolt
			s := openT(t, path, o)
			m := &readModel{msgs: map[string][]modelMsg{}, pos: map[string]*[NumPriorities]uint64{}, now: c.Now()}
			target := func(ep string) Target {
				tg := Target{Endpoint: ep, Priority: uint32(r.IntN(4)), TTL: -1}
				if r.IntN(4) == 0 {
					tg.TTL = 90 * time.Second
				}
				return tg
			}
			for step := range 1500 {
				k := r.IntN(100)
				if testing.Verbose() {
					t.Logf("step %d: op %d", step, k)
				}
				switch {
				case k < 45:
					first := eps[r.IntN(len(eps))]
					targets := []Target{target(first)}
					if r.IntN(3) == 0 {
						if second := eps[r.IntN(len(eps))]; second != first {
							targets = append(targets, target(second))
						}
					}
					seq := appendT(t, s, fmt.Sprint(step), targets...)
					if testing.Verbose() {
						t.Logf("append %d to %+v", seq, targets)
					}
					for _, tg := range targets {
						msg := modelMsg{seq: seq, prio: tg.Priority}
						if tg.TTL > 0 {
							msg.expires = m.now.Add(tg.TTL)
						}
						m.msgs[tg.Endpoint] = append(m.msgs[tg.Endpoint], msg)
					}
				case k < 75:
					ep, max := eps[r.IntN(len(eps))], 1+r.IntN(8)
					got, want := seqs(readT(t, s, ep, max)), m.next(ep, max)
					if testing.Verbose() {
						t.Logf("Read(%s, %d) = %v, model %v", ep, max, got, want)
					}
					if !slices.Equal(got, want) {
						t.Fatalf("step %d: Read(%s, %d) = %v, want %v", step, ep, max, got, want)
					}
				case k < 90:
					ep := eps[r.IntN(len(eps))]
					var acks []uint64
					for _, msg := range m.msgs[ep] {
						if r.IntN(3) == 0 {
							acks = append(acks, msg.seq)
						}
					}
					if len(acks) == 0 {
						continue
					}
					if testing.Verbose() {
						t.Logf("Ack(%s, %v)", ep, acks)
					}
					if err := s.Ack(ep, acks...); err != nil {
						t.Fatalf("step %d: Ack: %v", step, err)
					}
					m.ack(ep, acks)
				case k < 94:
					ep := eps[r.IntN(len(eps))]
					if err := s.Rewind(ep); err != nil {
						t.Fatal(err)
					}
					delete(m.pos, ep)
				case k < 96:
					s.checkpointNow()
				case k < 97:
					c.Add(time.Minute)
					m.now = c.Now()
				default:
					if r.IntN(2) == 0 {
						crashClose(t, s)
					} else if err := s.Close(); err != nil {
						t.Fatal(err)
					}
					s = openT(t, path, o)
					clear(m.pos)
				}
			}
			for _, ep := range eps {
				s.Rewind(ep)
				delete(m.pos, ep)
				if got, want := seqs(readT(t, s, ep, 1<<20)), m.next(ep, 1<<20); !slices.Equal(got, want) {
					t.Errorf("at the end: %s has %v, want %v", ep, got, want)
				}
			}
		})
	}
}
