package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tinyedge/tinyedge/store"
)

// cmdStore runs `tinyedge store stat|compact`. Both work on a stopped
// tinyedge: the running one holds the store.
func cmdStore(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "stat" && args[0] != "compact") {
		return fmt.Errorf("%w: want `tinyedge store stat` or `tinyedge store compact`", errUsage)
	}
	fs := flag.NewFlagSet("store "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", defaultDataDir(), "tinyedge's data `DIR`")
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	path := storePath(*dataDir)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("no store at %s: %w", path, err)
	}
	unlock, err := lockDataDir(*dataDir)
	if err != nil {
		return err
	}
	defer unlock()
	if args[0] == "compact" {
		return compactStore(path, stdout)
	}
	return statStore(path, stdout)
}

func statStore(path string, w io.Writer) error {
	st, err := store.Open(path, &store.Options{SweepInterval: -1})
	if rec, ok := errors.AsType[*store.RecoveredError](err); ok {
		return fmt.Errorf("%w (the old file is kept at %s)", rec, rec.MovedTo)
	}
	if err != nil {
		return err
	}
	defer st.Close()
	s, err := st.Stats()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "store %s\n", s.Path)
	fmt.Fprintf(w, "file %d bytes, in use %d bytes, limit %d bytes; %d message(s) stored\n", s.FileBytes, s.UsedBytes, s.LimitBytes, s.Messages)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tQUEUED\tBY PRIORITY\tOLDEST\tDROPPED")
	for _, e := range s.Endpoints {
		var prios []string
		for p, n := range e.Depth {
			if n > 0 {
				name := fmt.Sprint(p)
				if uint32(p) == store.LowestPriority {
					name = "default"
				}
				prios = append(prios, fmt.Sprintf("%s:%d", name, n))
			}
		}
		oldest := "-"
		if e.OldestAge > 0 {
			oldest = e.OldestAge.Round(time.Second).String()
		}
		var drops []string
		for r, n := range e.Dropped {
			drops = append(drops, fmt.Sprintf("%s:%d", r, n))
		}
		sort.Strings(drops)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", e.Endpoint, e.Queued, orDash(strings.Join(prios, " ")), oldest, orDash(strings.Join(drops, " ")))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func compactStore(path string, w io.Writer) error {
	before, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp := path + ".compact"
	_ = os.Remove(tmp) // left by an interrupted compaction
	if err := store.Compact(path, tmp); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("compact %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("compact %s: %w", path, err)
	}
	after, err := os.Stat(path)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "compacted %s: %d bytes -> %d bytes\n", path, before.Size(), after.Size())
	return nil
}
