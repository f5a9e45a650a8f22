package sht3x

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
)

// Repeatability selects the single shot command (datasheet §4.3, Table 9):
// higher repeatability means less noise and a longer measurement.
type Repeatability int

// The repeatabilities; the zero value is High.
const (
	High   Repeatability = iota // 0x2400, at most 15 ms
	Medium                      // 0x240B, at most 6 ms
	Low                         // 0x2416, at most 4 ms
)

// String names the repeatability.
func (r Repeatability) String() string {
	switch r {
	case High:
		return "high"
	case Medium:
		return "medium"
	case Low:
		return "low"
	}
	return fmt.Sprintf("Repeatability(%d)", int(r))
}

// command is the single shot command without clock stretching and
// duration the maximum measurement time (datasheet Table 9 and Table 4).
func (r Repeatability) command() (cmd uint16, duration time.Duration) {
	switch r {
	case Medium:
		return 0x240B, 6 * time.Millisecond
	case Low:
		return 0x2416, 4 * time.Millisecond
	}
	return 0x2400, 15 * time.Millisecond
}

// Commands (datasheet §4.9 to §4.11).
const (
	cmdSoftReset   = 0x30A2
	cmdHeaterOn    = 0x306D
	cmdHeaterOff   = 0x3066
	cmdReadStatus  = 0xF32D
	cmdClearStatus = 0x3041
)

// Timing.
const (
	// softResetTime is the maximum soft reset time tSR (datasheet Table 4).
	softResetTime = 1500 * time.Microsecond
	// readAttempts bounds the data reads of one measurement; the sensor
	// NACKs them until the measurement is done.
	readAttempts = 5
	// retryWait separates two read attempts.
	retryWait = time.Millisecond
)

// Bits of the status register (datasheet §4.11, Table 18).
const (
	StatusAlertPending   uint16 = 1 << 15 // at least one alert pending
	StatusHeaterOn       uint16 = 1 << 13 // heater on
	StatusRHAlert        uint16 = 1 << 11 // humidity tracking alert
	StatusTAlert         uint16 = 1 << 10 // temperature tracking alert
	StatusResetDetected  uint16 = 1 << 4  // reset since the last ClearStatus
	StatusCommandFailed  uint16 = 1 << 1  // last command invalid or bad checksum
	StatusWriteCRCFailed uint16 = 1 << 0  // checksum of the last write failed
)

// Opts configures a Dev. The zero value and a nil *Opts mean high
// repeatability and time.Sleep.
type Opts struct {
	// Repeatability of each measurement; High by default.
	Repeatability Repeatability
	// Sleep waits for the sensor; nil means time.Sleep. Tests inject a
	// fake clock here.
	Sleep func(time.Duration)
}

// Dev is an SHT3x on an I²C bus. Its methods are safe for concurrent use;
// each command and its read are kept together.
type Dev struct {
	c        i2c.Dev
	rep      Repeatability
	sleep    func(time.Duration)
	mu       sync.Mutex // held for a whole command sequence
	heaterOn bool       // set by Heater, cleared by Reset

	cmu  sync.Mutex  // guards cont
	cont *continuous // the running SenseContinuous, nil if none
}

var _ physic.SenseEnv = (*Dev)(nil)

// New soft-resets the SHT3x at addr on b (0x44 with ADDR low, 0x45 with
// ADDR high), waits for it and reads its status register to check that an
// SHT3x answers. A nil opts means defaults.
func New(b i2c.Bus, addr uint16, opts *Opts) (*Dev, error) {
	if addr != 0x44 && addr != 0x45 {
		return nil, fmt.Errorf("sht3x: address %#x is not an SHT3x address; use 0x44 (ADDR pin low) or 0x45 (ADDR pin high)", addr)
	}
	o := Opts{}
	if opts != nil {
		o = *opts
	}
	if o.Repeatability < High || o.Repeatability > Low {
		return nil, fmt.Errorf("sht3x: unknown repeatability %d; use sht3x.High, sht3x.Medium or sht3x.Low", int(o.Repeatability))
	}
	if o.Sleep == nil {
		o.Sleep = time.Sleep
	}
	d := &Dev{c: i2c.Dev{Bus: b, Addr: addr}, rep: o.Repeatability, sleep: o.Sleep}
	if err := d.Reset(); err != nil {
		return nil, fmt.Errorf("sht3x: no device answers at %#x on %s; check the wiring, the power and the ADDR pin: %w", addr, b, err)
	}
	if _, err := d.Status(); err != nil {
		return nil, fmt.Errorf("sht3x: no SHT3x answering at %#x on %s: %w", addr, b, err)
	}
	return d, nil
}

// Sense runs one single shot measurement and sets e.Temperature and
// e.Humidity; e.Pressure is left alone. On any error, a CRC mismatch
// included, e is not modified.
func (d *Dev) Sense(e *physic.Env) error {
	cmd, wait := d.rep.command()
	var buf [6]byte
	d.mu.Lock()
	err := d.command(cmd, "start measurement")
	if err == nil {
		d.sleep(wait)
		err = d.readData(buf[:])
	}
	d.mu.Unlock()
	if err != nil {
		return err
	}
	st, err := decodeWord(buf[0:3], "temperature")
	if err != nil {
		return err
	}
	srh, err := decodeWord(buf[3:6], "humidity")
	if err != nil {
		return err
	}
	e.Temperature = temperature(st)
	e.Humidity = humidity(srh)
	return nil
}

// readData reads the measurement, retrying while the sensor NACKs because
// it is still measuring (see Caveats in the package documentation).
func (d *Dev) readData(buf []byte) error {
	var err error
	for i := range readAttempts {
		if i > 0 {
			d.sleep(retryWait)
		}
		if err = d.c.Tx(nil, buf); err == nil {
			return nil
		}
	}
	return fmt.Errorf("sht3x: read measurement at %#x: no data after %d attempts %v apart: %w", d.c.Addr, readAttempts, retryWait, err)
}

// temperature converts a raw temperature (datasheet §4.13):
// T = -45 °C + 175 °C · S / 65535, rounded to the nearest nanokelvin.
func temperature(s uint16) physic.Temperature {
	const span = int64(175 * physic.Celsius)
	return physic.ZeroCelsius - 45*physic.Celsius + physic.Temperature((span*int64(s)+65535/2)/65535)
}

// humidity converts a raw humidity (datasheet §4.13):
// RH = 100 % · S / 65535, rounded to the nearest unit of physic.RelativeHumidity.
func humidity(s uint16) physic.RelativeHumidity {
	const span = int64(100 * physic.PercentRH)
	return physic.RelativeHumidity((span*int64(s) + 65535/2) / 65535)
}

// Heater switches the built-in heater on or off (datasheet §4.10). It is
// meant for plausibility checks: readings taken while it is on are a few
// degrees too warm.
func (d *Dev) Heater(on bool) error {
	cmd, what := uint16(cmdHeaterOff), "heater off"
	if on {
		cmd, what = cmdHeaterOn, "heater on"
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.command(cmd, what); err != nil {
		return err
	}
	d.heaterOn = on
	return nil
}

// Reset soft-resets the sensor (datasheet §4.9) and waits the maximum
// soft reset time. The heater is off afterwards and the status register
// reports the reset.
func (d *Dev) Reset() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.command(cmdSoftReset, "soft reset"); err != nil {
		return err
	}
	d.heaterOn = false
	d.sleep(softResetTime)
	return nil
}

// Status reads the status register (datasheet §4.11); test it with the
// Status… bit masks.
func (d *Dev) Status() (uint16, error) {
	var buf [3]byte
	d.mu.Lock()
	err := d.command(cmdReadStatus, "read status")
	if err == nil {
		if err = d.c.Tx(nil, buf[:]); err != nil {
			err = fmt.Errorf("sht3x: read status at %#x: %w", d.c.Addr, err)
		}
	}
	d.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return decodeWord(buf[:], "status")
}

// ClearStatus clears the alert and reset flags of the status register
// (datasheet §4.11, Table 19), so that a later StatusResetDetected means
// the sensor lost power or was reset since.
func (d *Dev) ClearStatus() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.command(cmdClearStatus, "clear status")
}

// command writes one 16-bit command, MSB first. The caller holds d.mu.
func (d *Dev) command(cmd uint16, what string) error {
	if err := d.c.Tx([]byte{byte(cmd >> 8), byte(cmd)}, nil); err != nil {
		return fmt.Errorf("sht3x: %s (command %#04x) at %#x: %w", what, cmd, d.c.Addr, err)
	}
	return nil
}

// Precision sets the resolution of one raw step: 175 °C/65535 ≈ 2.7 mK and
// 100 %/65535 ≈ 0.0015 %rH. The datasheet's repeatability and accuracy are
// coarser (Tables 1 and 2). e.Pressure, which the SHT3x does not
// measure, is left alone.
func (d *Dev) Precision(e *physic.Env) {
	e.Temperature = physic.Temperature(int64(175*physic.Celsius) / 65535)
	e.Humidity = physic.RelativeHumidity(int64(100*physic.PercentRH) / 65535)
}

// String names the device and its bus address.
func (d *Dev) String() string {
	return fmt.Sprintf("SHT3x{%s %#x}", d.c.Bus, d.c.Addr)
}

// Halt stops continuous sensing, waiting for its goroutine to end, and
// switches the heater off if Heater switched it on. It returns the error
// that ended continuous sensing early, if any, and the heater's.
func (d *Dev) Halt() error {
	err := d.stopContinuous()
	d.mu.Lock()
	on := d.heaterOn
	d.mu.Unlock()
	if on {
		err = errors.Join(err, d.Heater(false))
	}
	return err
}
