// Package pins turns GPIO pins into the two things a gateway wires to
// them: debounced inputs that report edges as events (a button, a PIR
// sensor, a door contact) and outputs that start at a safe level (a
// relay, a siren, a valve).
//
// Both take a gpio.PinIO, so they run the same on a Raspberry Pi pin, a
// gpiochip line and a simulated pin (hw.Pin("sim:GPIO17") or a
// gpiotest.Pin in tests).
//
// # Debounce
//
// A mechanical contact bounces for a few milliseconds when it closes or
// opens. An Input waits for the pin's level to stay unchanged for
// InputOpts.Debounce after the last edge before it believes it; a burst of
// bounces therefore gives one Event with the level the contact settled
// at, and a pulse shorter than the debounce time that ends where it
// started gives none.
//
// # Caveats
//
//   - Event channels are bounded (EventBuffer). A reader that falls behind
//     loses the oldest events, never the newest: the last event in the
//     channel always carries the current debounced level, and the watcher
//     never blocks on the reader. Input.Dropped counts the losses.
//   - Input.Halt takes up to about 100 ms: the watcher waits for edges with
//     a timeout, because periph's WaitForEdge cannot be interrupted safely
//     from another goroutine on every driver.
//   - Event.Time comes from InputOpts.Now, but the debounce interval is
//     measured on the monotonic clock, because it has to agree with the
//     pin's WaitForEdge timeout.
package pins
