package sht3x

import (
	"errors"
	"fmt"
	"time"

	"periph.io/x/conn/v3/physic"
)

// continuous is one run of SenseContinuous.
type continuous struct {
	stop chan struct{} // closed by Halt
	done chan struct{} // closed by the goroutine when it returns
	err  error         // why it ended early; read only after done is closed
}

// SenseContinuous starts a goroutine, owned by d, that takes a reading
// right away and then every interval, and sends it on the returned
// channel. The channel is unbuffered: a receiver slower than interval
// gets fewer readings, never stale ones. A failed reading ends the run and
// closes the channel; Halt then returns the error. Halt stops a run and
// waits for its goroutine; a new run needs a Halt first.
func (d *Dev) SenseContinuous(interval time.Duration) (<-chan physic.Env, error) {
	if _, wait := d.rep.command(); interval < wait {
		return nil, fmt.Errorf("sht3x: interval %v is shorter than a %v repeatability measurement (%v)", interval, d.rep, wait)
	}
	d.cmu.Lock()
	defer d.cmu.Unlock()
	if d.cont != nil {
		return nil, errors.New("sht3x: continuous sensing is already running; call Halt first")
	}
	c := &continuous{stop: make(chan struct{}), done: make(chan struct{})}
	out := make(chan physic.Env)
	d.cont = c
	go d.senseEvery(interval, out, c)
	return out, nil
}

func (d *Dev) senseEvery(interval time.Duration, out chan<- physic.Env, c *continuous) {
	defer close(c.done)
	defer close(out)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		var e physic.Env
		if err := d.Sense(&e); err != nil {
			c.err = err
			return
		}
		select {
		case out <- e:
		case <-c.stop:
			return
		}
		select {
		case <-t.C:
		case <-c.stop:
			return
		}
	}
}

// stopContinuous ends the current run, if any, and returns why it had
// ended early.
func (d *Dev) stopContinuous() error {
	d.cmu.Lock()
	c := d.cont
	d.cont = nil
	d.cmu.Unlock()
	if c == nil {
		return nil
	}
	close(c.stop)
	<-c.done
	return c.err
}
