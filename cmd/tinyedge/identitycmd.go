package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/tinyedge/tinyedge/hub/identity"
)

// cmdIdentities lists the identities tinyedge generated: its modules' and
// those of leaf devices declared without a key. With --show-keys it
// prints each key, and for leaf devices the connection string to give the
// device.
func cmdIdentities(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "rotate" {
		return cmdRotate(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("identities", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", defaultDataDir(), "tinyedge's data `DIR`")
	showKeys := fs.Bool("show-keys", false, "print the keys (base64) and leaf devices' connection strings")
	gateway := fs.String("gateway-hostname", hostname(), "the gateway's `NAME` for leaf devices' connection strings")
	hubName := fs.String("iothub-hostname", "", "the IoT Hub `NAME` for connection strings (default: the gateway's)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: identities takes no arguments, got %q", errUsage, fs.Args())
	}
	path := identitiesPath(*dataDir)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no identities at %s: tinyedge has not run on this data directory (give --data-dir)", path)
	}
	list, err := identity.Read(path)
	if err != nil {
		return err
	}
	if *hubName == "" {
		*hubName = *gateway
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	head := "DEVICE\tMODULE\tGENERATION\tCREATED"
	if *showKeys {
		head += "\tKEY"
	}
	fmt.Fprintln(tw, head)
	var conns []string
	for _, id := range list {
		mod := id.ModuleID
		if mod == "" {
			mod = "-"
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%s", id.DeviceID, mod, id.GenerationID, id.Created.Format("2006-01-02 15:04:05Z"))
		if *showKeys {
			key := base64.StdEncoding.EncodeToString(id.Key)
			line += "\t" + key
			if id.ModuleID == "" {
				conns = append(conns, fmt.Sprintf("HostName=%s;DeviceId=%s;SharedAccessKey=%s;GatewayHostName=%s", *hubName, id.DeviceID, key, *gateway))
			}
		}
		fmt.Fprintln(tw, line)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, c := range conns {
		fmt.Fprintln(stdout, c)
	}
	return nil
}

// cmdRotate asks the running tinyedge to give a module, or a leaf device
// whose key it generated, a new key and generation id.
func cmdRotate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("identities rotate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", defaultDataDir(), "the running tinyedge's data `DIR`")
	device := fs.String("device", "", "rotate the generated key of leaf device `ID` instead of a module's")
	names, err := parseInterspersed(fs, args)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	req := rotateRequest{Device: *device}
	switch {
	case *device == "" && len(names) == 1:
		req.Module = names[0]
	case *device != "" && len(names) == 0:
	default:
		return fmt.Errorf("%w: want `tinyedge identities rotate MODULE` or `tinyedge identities rotate --device ID`", errUsage)
	}
	cc := newControlClient(*dataDir)
	defer cc.close()
	var out rotation
	if err := cc.postJSON(ctx, "/v1/identities/rotate", req, &out); err != nil {
		return err
	}
	who := out.DeviceID
	if out.ModuleID != "" {
		who += "/" + out.ModuleID
	}
	fmt.Fprintf(stdout, "%s: new key, generation %s\n", who, out.GenerationID)
	if out.Restarted {
		fmt.Fprintln(stdout, "restarted the module with its new generation id")
	}
	fmt.Fprintf(stdout, "closed %d connection(s) made with the old key\n", out.Closed)
	if out.ModuleID == "" {
		fmt.Fprintln(stdout, "give the device its new connection string: tinyedge identities --show-keys")
	}
	return nil
}
