package hubtest

import (
	"context"
	"testing"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/message"
)

func TestRecorder(t *testing.T) {
	var r Recorder
	a := message.New([]byte("a"))
	a.System.ConnectionModuleID = "m1"
	b := message.New([]byte("b"))
	_ = r.Deliver(context.Background(), a, hub.Delivery{Priority: 3})
	_ = r.Deliver(context.Background(), b, hub.Delivery{})
	if r.Len() != 2 || len(r.Messages()) != 2 || r.Deliveries()[0].Priority != 3 {
		t.Errorf("recorded %d messages, deliveries %v", r.Len(), r.Deliveries())
	}
	if got := r.From("m1"); len(got) != 1 || string(got[0].Body) != "a" {
		t.Errorf("From(m1) = %v", got)
	}
	n := 0
	WaitFor(t, "the third poll", func() bool { n++; return n == 3 })
	if MustRoute(t, "r", "FROM /* INTO $upstream").Name != "r" {
		t.Error("MustRoute lost the name")
	}
}
