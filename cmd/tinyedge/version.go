package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

func cmdVersion(w io.Writer) error {
	target := runtime.GOOS + "/" + runtime.GOARCH
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "GOARM" && runtime.GOARCH == "arm" {
				target += " GOARM=" + s.Value
			}
		}
	}
	fmt.Fprintf(w, "tinyedge %s\ncommit %s\n%s\n%s\n", version, commit, runtime.Version(), target)
	return nil
}
