// Command crashtest runs the store crash test's writer or checker on a
// data directory, so it can run inside a full-system VM whose sudden
// death is a true power cut for the store:
//
//	crashtest write -dir /data -run 3 > run3.log   # until killed
//	crashtest check -dir /data run1.log run2.log … # after the last kill
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/tinyedge/tinyedge/store/internal/crashtest"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crashtest write|check -dir DIR [-run N] [logs…]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", ".", "data directory holding store.db")
	run := fs.Uint("run", 1, "run number; numbers messages run<<32|i so runs never collide")
	producers := fs.Int("producers", 8, "concurrent appenders")
	fs.Parse(os.Args[2:])
	path := filepath.Join(*dir, "store.db")
	switch os.Args[1] {
	case "write":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := crashtest.Write(ctx, path, uint32(*run), *producers, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "crashtest write:", err)
			os.Exit(1)
		}
	case "check":
		var logs []string
		for _, name := range fs.Args() {
			b, err := os.ReadFile(name)
			if err != nil {
				fmt.Fprintln(os.Stderr, "crashtest check:", err)
				os.Exit(1)
			}
			logs = append(logs, string(b))
		}
		drained, err := crashtest.Drain(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "crashtest check: drain:", err)
			os.Exit(1)
		}
		r, err := crashtest.Check(logs, drained)
		fmt.Printf("committed %d, delivered %d, drained %d, redelivered %d\n", r.Committed, r.Delivered, r.Drained, r.Redelivered)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "usage: crashtest write|check -dir DIR [-run N] [logs…]")
		os.Exit(2)
	}
}
