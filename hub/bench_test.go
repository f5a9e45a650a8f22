package hub_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/message"
	"github.com/tinyedge/tinyedge/hub/route"
)

// The routed-throughput benchmark: a producer sends, a route with a WHERE
// condition selects, a consumer module receives — two hops, producer to
// router and router to consumer. BenchmarkPipeline/bare is the same
// pipeline built from bare Go channels (producer → channel → a router
// goroutine evaluating the same condition in Go → channel → consumer),
// measured in the same run as the baseline; scripts/bench.sh prints the
// ratio. BenchmarkPipeline/bare1hop, one channel with the condition
// checked by the consumer, is a stricter reference: the least any
// in-process handoff can cost.

var benchProps = map[string]string{"level": "alert", "site": "plant-7"}

func benchMessage() *message.Message {
	return &message.Message{Body: []byte(`{"machine":{"temperature":31.5}}`), Properties: benchProps}
}

func BenchmarkPipeline(b *testing.B) {
	b.Run("bare", func(b *testing.B) {
		in := make(chan *message.Message, 256)
		out := make(chan *message.Message, 256)
		done := make(chan struct{})
		var got int
		go func() { // the router
			defer close(out)
			for m := range in {
				if m.Properties["level"] == "alert" && m.System.ConnectionModuleID == "producer" {
					m.System.InputName = "in"
					out <- m
				}
			}
		}()
		go func() { // the consumer
			defer close(done)
			for m := range out {
				if m.System.InputName == "in" {
					got++
				}
			}
		}()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			m := benchMessage()
			m.System.ConnectionModuleID = "producer"
			in <- m
		}
		close(in)
		<-done
		b.StopTimer()
		if got != b.N {
			b.Fatalf("consumer got %d of %d", got, b.N)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("bare1hop", func(b *testing.B) {
		ch := make(chan *message.Message, 256)
		done := make(chan struct{})
		var got int
		go func() {
			defer close(done)
			for m := range ch {
				if m.Properties["level"] == "alert" && m.System.ConnectionModuleID == "producer" {
					got++
				}
			}
		}()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			m := benchMessage()
			m.System.ConnectionModuleID = "producer"
			ch <- m
		}
		close(ch)
		<-done
		b.StopTimer()
		if got != b.N {
			b.Fatalf("consumer got %d of %d", got, b.N)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("hub", func(b *testing.B) {
		var got atomic.Int64
		all := make(chan struct{})
		want := int64(b.N)
		consumer := hub.ModuleFunc(func(ctx context.Context, c *hub.Client) error {
			c.OnInput("in", func(context.Context, *message.Message) error {
				if got.Add(1) == want {
					close(all)
				}
				return nil
			})
			<-ctx.Done()
			return nil
		})
		h := hub.New(hub.Options{DeviceID: "bench"})
		defer h.Close()
		r, err := route.Parse("r", `FROM /messages/modules/producer/outputs/out WHERE level = 'alert' AND $connectionModuleId = 'producer' INTO BrokeredEndpoint("/modules/consumer/inputs/in")`)
		if err != nil {
			b.Fatal(err)
		}
		if err := h.Deploy(hub.Deployment{
			Modules: []hub.ModuleSpec{{Name: "consumer", Module: consumer}},
			Routes:  []*route.Route{r},
		}); err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if err := h.Send(ctx, "producer", "out", benchMessage()); err != nil {
				b.Fatal(err)
			}
		}
		<-all
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}
