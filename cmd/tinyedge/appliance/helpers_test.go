package appliance

import (
	"os"
	"os/signal"
	"syscall"
	"time"
)

func sigterm() <-chan os.Signal {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM)
	return c
}

func after(ms int) <-chan time.Time { return time.After(time.Duration(ms) * time.Millisecond) }
