package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/tinyedge/tinyedge/hub/process"
)

// cmdLogs prints a module's recent output, as `iotedge logs`: what a
// process module wrote to stdout on stdout, to stderr on stderr, and a
// built-in module's log lines on stdout; with --follow, new lines as they
// come until interrupted.
func cmdLogs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("logs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", defaultDataDir(), "the running tinyedge's data `DIR`")
	follow := fs.Bool("follow", false, "keep printing new lines until interrupted")
	fs.BoolVar(follow, "f", false, "short for --follow")
	tail := fs.Int("tail", -1, "print only the last `N` lines kept (default: all)")
	timestamps := fs.Bool("timestamps", false, "start each line with its time")
	// The module name may come before or after the flags.
	names, err := parseInterspersed(fs, args)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if len(names) != 1 || names[0] == "" {
		return fmt.Errorf("%w: want `tinyedge logs MODULE [--follow] [--tail N]`", errUsage)
	}
	module := names[0]
	path := modulePath(module, "/logs")
	q := ""
	if *tail >= 0 {
		q += "&tail=" + strconv.Itoa(*tail)
	}
	if *follow {
		q += "&follow=true"
	}
	if q != "" {
		path += "?" + q[1:]
	}
	cc := newControlClient(*dataDir)
	defer cc.close()
	resp, err := cc.get(ctx, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// Closing the body when ctx ends (Ctrl-C) ends the scan below.
	stopRead := context.AfterFunc(ctx, func() { resp.Body.Close() })
	defer stopRead()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var ln process.Line
		if err := json.Unmarshal(sc.Bytes(), &ln); err != nil {
			return fmt.Errorf("logs of %s: a line the control socket sent is not JSON: %w", module, err)
		}
		w := stdout
		if ln.Stream == "stderr" {
			w = stderr
		}
		if *timestamps {
			fmt.Fprintf(w, "%s %s\n", ln.Time.UTC().Format(time.RFC3339Nano), ln.Text)
		} else {
			fmt.Fprintln(w, ln.Text)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("logs of %s: %w", module, err)
	}
	return nil
}
