// Package hw sets up the host's hardware through periph.io and finds I²C
// buses and GPIO pins by the names users write in manifests: I2C1, 1 or
// /dev/i2c-1 for a bus, GPIO17, 17 or a gpiochip line name for a pin, and
// "sim" or "sim:GPIO17" for simulated ones, so that modules run unchanged
// on a laptop, in CI and under QEMU.
//
// Chip drivers live in their own packages (hw/bme280, hw/sht3x), the
// register-level simulators in hw/sim and debounced inputs and safe
// outputs in hw/pins; they take an i2c.Bus or a gpio.PinIO and never
// depend on this package.
//
// # Which GPIO driver serves a pin
//
// Init calls periph's host.Init, which starts every registered driver in
// stages ordered by their prerequisites; drivers in one stage start
// concurrently. On Linux:
//
//   - stage 1: ioctl-gpio (the GPIO character device, /dev/gpiochip*)
//     registers every named line of every chip, Raspberry Pi chips
//     (label pinctrl-*) first; sysfs-i2c registers /dev/i2c-N as
//     "/dev/i2c-N" with alias "I2CN" and number N.
//   - stage 2, both needing ioctl-gpio: bcm283x-gpio, on a Broadcom SoC
//     (every Raspberry Pi), replaces GPIO0…GPIO53 and their numeric aliases
//     with pins that use /dev/gpiomem registers for level, direction and
//     pull and the character device's line for edge detection; sysfs-gpio
//     registers the legacy /sys/class/gpio pins as GPIO<base+n>.
//
// So on a Raspberry Pi, GPIO17 is the bcm283x-gpio pin (edges from the
// character device); elsewhere it is the character-device line of that
// name. The sysfs GPIO driver cannot be left out of host.Init: it is
// registered by the init function of periph's sysfs package, which also
// holds the I²C driver we need, and periph has no way to deregister a
// driver. Init therefore removes every sysfs pin from the pin registry
// after host.Init (putting back the character-device line of the same
// name where periph's concurrent stage 2 let a sysfs pin take it), so no
// name resolves to the deprecated interface. State.GPIO says which driver
// serves pins.
//
// # Caveats
//
//   - Only cmd/tinyedge calls Init, once, before modules start; libraries
//     and tests of other packages never do. Importing this package runs
//     periph's driver registrations (plain init functions that touch no
//     hardware) and links periph's host drivers into the binary.
//   - OpenI2C and Pin find nothing on the host before Init has run; their
//     errors say so.
//   - The simulated bus and pins are shared by the whole process, as a real
//     bus and real pins are: every OpenI2C("sim") returns the same bus and
//     every Pin("sim:GPIO17") the same pin.
package hw

import "errors"

// Errors returned (wrapped) by this package, to test with errors.Is.
var (
	// ErrBadName means a bus or pin name is malformed, such as
	// /dev/i2c-x or an empty pin name.
	ErrBadName = errors.New("hw: bad name")
	// ErrNoBus means the host has no I²C bus at all.
	ErrNoBus = errors.New("hw: no I²C bus")
	// ErrUnknownBus means no I²C bus has the name asked for.
	ErrUnknownBus = errors.New("hw: unknown I²C bus")
	// ErrUnknownPin means no GPIO pin has the name asked for.
	ErrUnknownPin = errors.New("hw: unknown GPIO pin")
)
