package main

import (
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
func cmdIdentities(args []string, stdout, stderr io.Writer) error {
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
