// Command crashing is the system test's bad release: a "tinyedge 3.0.0"
// that exits as soon as it starts. As the gateway's PID 1 its exit panics
// the kernel, which reboots (panic=-1), and the boot stage counts a try
// until the update is rolled back.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "tinyedge 3.0.0: this release crashes at start")
	os.Exit(1)
}
