package main

import (
	"fmt"
	"io"
	"runtime"

	"github.com/tinyedge/tinyedge/build/ota"
)

func cmdVersion(w io.Writer) error {
	target := runtime.GOOS + "/" + runtime.GOARCH
	if arm := ota.BuildGOARM(); arm != "" {
		target += " GOARM=" + arm
	}
	fmt.Fprintf(w, "tinyedge %s\ncommit %s\n%s\n%s\n", version, commit, runtime.Version(), target)
	return nil
}
