package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// cmdList shows every module of the running tinyedge, like `iotedge list`.
func cmdList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", defaultDataDir(), "the running tinyedge's data `DIR`")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: list takes no arguments, got %q", errUsage, fs.Args())
	}
	cc := newControlClient(*dataDir)
	defer cc.close()
	var mods []moduleInfo
	if err := cc.getJSON(ctx, "/v1/modules", &mods); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(mods)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTYPE\tSTATE\tRESTARTS\tUPTIME\tDESCRIPTION")
	now := time.Now()
	for _, m := range mods {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", m.Name, m.Type, state(m, now), m.Restarts, uptime(m, now), m.Description)
	}
	return tw.Flush()
}

// cmdRestart stops a module of the running tinyedge and starts it again,
// like `iotedge restart`.
func cmdRestart(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("restart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", defaultDataDir(), "the running tinyedge's data `DIR`")
	names, err := parseInterspersed(fs, args)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if len(names) != 1 {
		return fmt.Errorf("%w: want `tinyedge restart MODULE`", errUsage)
	}
	cc := newControlClient(*dataDir)
	defer cc.close()
	var m moduleInfo
	if err := cc.postJSON(ctx, modulePath(names[0], "/restart"), struct{}{}, &m); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restarted %s\n", m.Name)
	return nil
}

// state is the STATE column: the state, and why a module is not running.
func state(m moduleInfo, now time.Time) string {
	s := m.State
	if m.State == "running" && !m.Healthy {
		s += " (unhealthy: " + m.Health + ")"
	}
	if m.State != "running" && m.LastExit != "" {
		s += " (" + m.LastExit + ")"
	}
	return s
}

// uptime is how long a running module has run, "-" for the others.
func uptime(m moduleInfo, now time.Time) string {
	if m.State != "running" || m.Since.IsZero() {
		return "-"
	}
	return humanDuration(now.Sub(m.Since))
}

// humanDuration writes d as `iotedge list` does: the largest unit or two.
func humanDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

// cmdStatus prints what the running tinyedge reports of itself, as JSON.
func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", defaultDataDir(), "the running tinyedge's data `DIR`")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: status takes no arguments, got %q", errUsage, fs.Args())
	}
	cc := newControlClient(*dataDir)
	defer cc.close()
	var st map[string]any
	if err := cc.getJSON(ctx, "/v1/status", &st); err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(st)
}
