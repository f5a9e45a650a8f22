package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tinyedge/tinyedge/hub/hubsim"
)

const hubsimUsage = `tinyedge hubsim — an IoT Hub emulator

  tinyedge hubsim serve [--data-dir D] [--listen :8883] [--http 127.0.0.1:8080] [--hostname H]
      Run it: MQTT over TLS for devices and modules, and the service API
      on loopback. Clients trust D/ca.pem.
  tinyedge hubsim identity add DEVICE [MODULE]
      Register a device or a module; prints its connection string.
  tinyedge hubsim identity list
  tinyedge hubsim twin get TARGET
  tinyedge hubsim twin patch TARGET 'JSON'
      Read a twin, or patch its desired properties.
  tinyedge hubsim method invoke TARGET NAME ['JSON'] [--timeout SECONDS]
      Call a direct method and print {status, payload}.
  tinyedge hubsim monitor [--from N]
      Print events as they arrive (--from 0: every stored one first), as
      az iot hub monitor-events --properties all shows them.

TARGET is DEVICE/MODULE, or a name: a module named exactly so, else a
device named so, else the one module whose name contains it (ignoring
case), else the one module whose name has its letters in order — so
'filter' finds filtermodule and 'simtemp' SimulatedTemperatureSensor.
Every command takes --data-dir (default $XDG_STATE_HOME/tinyedge/hubsim or
~/.local/state/tinyedge/hubsim); the client commands find the running
hubsim there.
`

// cmdHubsim runs `tinyedge hubsim …`.
func cmdHubsim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, hubsimUsage)
		return fmt.Errorf("%w: want a hubsim subcommand", errUsage)
	}
	name := args[0]
	if (name == "identity" || name == "twin" || name == "method") && len(args) > 1 {
		name += " " + args[1]
		args = args[1:]
	}
	fs := flag.NewFlagSet("hubsim "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	defDir, err := hubsim.DefaultDataDir()
	if err != nil {
		defDir = ""
	}
	dataDir := fs.String("data-dir", defDir, "hubsim's data `DIR`")
	switch name {
	case "serve":
		listen := fs.String("listen", hubsim.DefaultMQTTAddr, "MQTT over TLS listen `ADDR`")
		httpAddr := fs.String("http", "127.0.0.1:8080", "service API listen `ADDR` (loopback only)")
		hostname := fs.String("hostname", "localhost", "the IoT Hub host `NAME` in connection strings, tokens and the certificate")
		logFormat := fs.String("log-format", "text", "log format: text or json")
		if _, err := parseInterleaved(fs, args[1:], 0, 0); err != nil {
			return err
		}
		return hubsimServe(ctx, *dataDir, *listen, *httpAddr, *hostname, *logFormat, stdout, stderr)
	case "identity add":
		pos, err := parseInterleaved(fs, args[1:], 1, 2)
		if err != nil {
			return err
		}
		c, err := dialHubsim(*dataDir)
		if err != nil {
			return err
		}
		module := ""
		if len(pos) == 2 {
			module = pos[1]
		}
		id, err := c.AddIdentity(ctx, pos[0], module)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, id.ConnectionString)
		return nil
	case "identity list":
		if _, err := parseInterleaved(fs, args[1:], 0, 0); err != nil {
			return err
		}
		c, err := dialHubsim(*dataDir)
		if err != nil {
			return err
		}
		ids, err := c.Identities(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "IDENTITY\tAUTH\tSTATE\tCONNECTION STRING")
		for _, id := range ids {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", joinID(id.DeviceID, id.ModuleID), id.Authentication.Type, id.ConnectionState, id.ConnectionString)
		}
		return tw.Flush()
	case "twin get", "twin patch":
		want := 1
		if name == "twin patch" {
			want = 2
		}
		pos, err := parseInterleaved(fs, args[1:], want, want)
		if err != nil {
			return err
		}
		c, d, m, err := resolveTarget(ctx, *dataDir, pos[0])
		if err != nil {
			return err
		}
		var doc json.RawMessage
		if name == "twin get" {
			doc, err = c.Twin(ctx, d, m)
		} else {
			if !json.Valid([]byte(pos[1])) {
				return fmt.Errorf("%w: the patch %q is not JSON (quote it: '{\"key\": 1}')", errUsage, pos[1])
			}
			doc, err = c.PatchDesired(ctx, d, m, json.RawMessage(pos[1]))
		}
		if err != nil {
			return err
		}
		return printJSON(stdout, doc)
	case "method invoke":
		timeout := fs.Int("timeout", 30, "response timeout in `SECONDS` (5 to 300)")
		pos, err := parseInterleaved(fs, args[1:], 2, 3)
		if err != nil {
			return err
		}
		var payload json.RawMessage
		if len(pos) == 3 {
			if !json.Valid([]byte(pos[2])) {
				return fmt.Errorf("%w: the payload %q is not JSON (a string is '\"text\"')", errUsage, pos[2])
			}
			payload = json.RawMessage(pos[2])
		}
		c, d, m, err := resolveTarget(ctx, *dataDir, pos[0])
		if err != nil {
			return err
		}
		res, err := c.InvokeMethod(ctx, d, m, pos[1], payload, time.Duration(*timeout)*time.Second)
		if err != nil {
			return err
		}
		b, _ := json.Marshal(res)
		return printJSON(stdout, b)
	case "monitor":
		from := fs.Int64("from", -1, "start at event `N` (0 = all stored); only new events when negative")
		if _, err := parseInterleaved(fs, args[1:], 0, 0); err != nil {
			return err
		}
		c, err := dialHubsim(*dataDir)
		if err != nil {
			return err
		}
		fmt.Fprintln(stderr, "hubsim: monitoring events; Ctrl-C stops")
		return c.Monitor(ctx, *from, func(line []byte) error {
			_, err := fmt.Fprintf(stdout, "%s\n", line)
			return err
		})
	case "help", "-h", "--help":
		fmt.Fprint(stdout, hubsimUsage)
		return nil
	}
	fmt.Fprint(stderr, hubsimUsage)
	return fmt.Errorf("%w: unknown hubsim command %q", errUsage, name)
}

// parseInterleaved parses flags that may come before, between or after
// the positional arguments, and checks their count.
func parseInterleaved(fs *flag.FlagSet, args []string, min, max int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) < min || len(pos) > max {
		want := fmt.Sprint(min)
		if max != min {
			want = fmt.Sprintf("%d to %d", min, max)
		}
		return nil, fmt.Errorf("%w: hubsim %s takes %s argument(s), got %d: %s", errUsage, fs.Name()[len("hubsim "):], want, len(pos), strings.Join(pos, " "))
	}
	return pos, nil
}

func hubsimServe(ctx context.Context, dataDir, listen, httpAddr, hostname, logFormat string, stdout, stderr io.Writer) error {
	if dataDir == "" {
		return fmt.Errorf("%w: give --data-dir", errUsage)
	}
	log, err := newLogger(logFormat, stderr)
	if err != nil {
		return err
	}
	s, err := hubsim.New(hubsim.Options{DataDir: dataDir, MQTTAddr: listen, HTTPAddr: httpAddr, Hostname: hostname, Logger: log})
	if err != nil {
		return err
	}
	if err := s.Start(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "hubsim: IoT Hub %s on mqtts://%s, service API on http://%s, CA %s\n",
		hostname, s.Addr(), s.HTTPAddr(), filepath.Join(dataDir, "ca.pem"))
	<-ctx.Done()
	return s.Close()
}

func dialHubsim(dataDir string) (*hubsim.Client, error) {
	if dataDir == "" {
		return nil, fmt.Errorf("%w: give --data-dir", errUsage)
	}
	return hubsim.Dial(dataDir)
}

// resolveTarget finds the identity a TARGET names (see hubsim.Resolve).
func resolveTarget(ctx context.Context, dataDir, target string) (c *hubsim.Client, device, module string, err error) {
	if c, err = dialHubsim(dataDir); err != nil {
		return nil, "", "", err
	}
	ids, err := c.Identities(ctx)
	if err != nil {
		return nil, "", "", err
	}
	var names []string
	for _, id := range ids {
		names = append(names, joinID(id.DeviceID, id.ModuleID))
	}
	device, module, err = hubsim.Resolve(names, target)
	if errors.Is(err, hubsim.ErrAmbiguous) || errors.Is(err, hubsim.ErrNotFound) {
		err = fmt.Errorf("target %w", err)
	}
	return c, device, module, err
}

func joinID(device, module string) string {
	if module == "" {
		return device
	}
	return device + "/" + module
}

func printJSON(w io.Writer, b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	out, _ := json.MarshalIndent(v, "", "  ")
	_, err := fmt.Fprintf(w, "%s\n", out)
	return err
}
