package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/tinyedge/tinyedge/hub/deploy"
)

// cmdCheck validates a manifest and lists every problem; exit status 1 when
// there is any.
func cmdCheck(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	manifest := fs.String("manifest", "", "deployment manifest `FILE` to check")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *manifest == "" {
		if fs.NArg() != 1 {
			return fmt.Errorf("%w: check needs --manifest FILE", errUsage)
		}
		*manifest = fs.Arg(0)
	}
	m, name, err := loadManifest(*manifest)
	var probs deploy.Problems
	if errors.As(err, &probs) {
		for _, p := range probs {
			fmt.Fprintf(stdout, "%s: error: %s\n", name, p)
		}
		return &exitError{code: 1, err: fmt.Errorf("%s: %d problem(s)", name, len(probs))}
	}
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	for _, w := range m.Warnings {
		fmt.Fprintf(stdout, "%s: warning: %s\n", name, w)
	}
	fmt.Fprintf(stdout, "%s: ok: %d module(s), %d route(s), %d warning(s)\n", name, len(m.Modules), len(m.Routes), len(m.Warnings))
	return nil
}
