package sim

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"periph.io/x/conn/v3/physic"
)

// ErrBusy is returned (wrapped) when a simulated device does not
// acknowledge a transaction because it has nothing to say yet: an SHT3x
// measuring without clock stretching, or asked for data it does not have,
// NACKs its read header. A real bus reports the same NACK.
var ErrBusy = errors.New("sim: device busy, transaction not acknowledged")

// SHT3x commands and timings (Sensirion SHT3x-DIS datasheet §4.3 Table 9,
// §4.9 to §4.11, Table 4); see package hw/sht3x for the driver side.
const (
	sht3xCmdMeasureHigh   = 0x2400
	sht3xCmdMeasureMedium = 0x240B
	sht3xCmdMeasureLow    = 0x2416
	sht3xCmdSoftReset     = 0x30A2
	sht3xCmdHeaterOn      = 0x306D
	sht3xCmdHeaterOff     = 0x3066
	sht3xCmdReadStatus    = 0xF32D
	sht3xCmdClearStatus   = 0x3041

	sht3xSoftResetTime = 1500 * time.Microsecond

	// Status register bits (Table 18) and its value after a reset.
	sht3xStatusAlert      = 1 << 15
	sht3xStatusHeater     = 1 << 13
	sht3xStatusRHAlert    = 1 << 11
	sht3xStatusTAlert     = 1 << 10
	sht3xStatusReset      = 1 << 4
	sht3xStatusCmdFailed  = 1 << 1
	sht3xStatusAfterReset = sht3xStatusAlert | sht3xStatusReset
)

// SHT3xOpts configures a simulated SHT3x. A nil *SHT3xOpts means defaults.
type SHT3xOpts struct {
	// HeaterRise is how much warmer the sensor reads while its heater is
	// on; 0 means 2 °C. The datasheet says only "a few degrees".
	HeaterRise physic.Temperature
}

// SHT3x simulates a Sensirion SHT3x-DIS at the command level, in single
// shot mode without clock stretching: it answers the measurement commands
// 0x2400, 0x240B and 0x2416, soft reset 0x30A2, heater 0x306D and 0x3066,
// status 0xF32D and clear status 0x3041. A measurement takes the
// datasheet's maximum duration on the climate's clock; until then the
// device NACKs (ErrBusy). The result is the climate at the end of the
// measurement, plus HeaterRise while the heater is on, encoded as the chip
// does, each word followed by its CRC-8.
type SHT3x struct {
	climate *Climate
	rise    physic.Temperature

	mu         sync.Mutex
	status     uint16
	heater     bool
	busyUntil  time.Time // no acknowledge before this
	measuring  bool      // a measurement ends at busyUntil
	measHeated bool      // the heater was on when it started
	out        []byte    // what the next read returns; nil: NACK
	corrupt    int       // word whose CRC the next read corrupts, -1: none
}

var _ Device = (*SHT3x)(nil)

// NewSHT3x returns a powered-up SHT3x measuring c (a nil c is a Climate on
// the wall clock). Attach it to a Bus at 0x44 or 0x45.
func NewSHT3x(c *Climate, opts *SHT3xOpts) *SHT3x {
	if c == nil {
		c = &Climate{}
	}
	s := &SHT3x{climate: c, rise: 2 * physic.Celsius, status: sht3xStatusAfterReset, corrupt: -1}
	if opts != nil && opts.HeaterRise != 0 {
		s.rise = opts.HeaterRise
	}
	return s
}

// CorruptNextCRC makes the next read that returns data send a wrong CRC
// for its word number word: 0 is the temperature (or the status word), 1
// the humidity. It lets driver tests check that a bad CRC is an error.
func (s *SHT3x) CorruptNextCRC(word int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.corrupt = word
}

// Tx runs one transaction: w, if any, is a 16-bit command; r, if any, is
// filled with the data the last command produced.
func (s *SHT3x) Tx(w, r []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(w) > 0 {
		if err := s.busy(); err != nil {
			return err
		}
		if err := s.command(w); err != nil {
			return err
		}
	}
	if len(r) > 0 {
		if err := s.busy(); err != nil {
			return err
		}
		return s.read(r)
	}
	return nil
}

func (s *SHT3x) now() time.Time {
	if s.climate.Now != nil {
		return s.climate.Now()
	}
	return time.Now()
}

// busy reports a NACK while a measurement or a reset runs, and turns a
// finished measurement into data to read.
func (s *SHT3x) busy() error {
	if now := s.now(); now.Before(s.busyUntil) {
		what := "resetting"
		if s.measuring {
			what = "measuring"
		}
		return fmt.Errorf("%w: sht3x %s for another %v", ErrBusy, what, s.busyUntil.Sub(now))
	}
	if s.measuring {
		s.measuring = false
		env := s.climate.At(s.busyUntil)
		if s.measHeated {
			env.Temperature += s.rise
		}
		s.out = sht3xWords(sht3xRawTemperature(env.Temperature), sht3xRawHumidity(env.Humidity))
	}
	return nil
}

func (s *SHT3x) command(w []byte) error {
	if len(w) != 2 {
		s.status |= sht3xStatusCmdFailed
		return fmt.Errorf("sim: sht3x: %d-byte write % x is not a command; writes with data (alert limits) are not simulated", len(w), w)
	}
	cmd := uint16(w[0])<<8 | uint16(w[1])
	var measure time.Duration
	switch cmd {
	case sht3xCmdMeasureHigh:
		measure = 15 * time.Millisecond
	case sht3xCmdMeasureMedium:
		measure = 6 * time.Millisecond
	case sht3xCmdMeasureLow:
		measure = 4 * time.Millisecond
	case sht3xCmdSoftReset:
		s.heater = false
		s.status = sht3xStatusAfterReset
		s.busyUntil = s.now().Add(sht3xSoftResetTime)
	case sht3xCmdHeaterOn:
		s.heater = true
	case sht3xCmdHeaterOff:
		s.heater = false
	case sht3xCmdReadStatus:
	case sht3xCmdClearStatus:
		s.status &^= sht3xStatusAlert | sht3xStatusRHAlert | sht3xStatusTAlert | sht3xStatusReset
	default:
		s.status |= sht3xStatusCmdFailed
		return fmt.Errorf("sim: sht3x: command %#04x is not simulated", cmd)
	}
	s.status &^= sht3xStatusCmdFailed
	if s.heater {
		s.status |= sht3xStatusHeater
	} else {
		s.status &^= sht3xStatusHeater
	}
	// A new command discards data not read yet.
	s.out = nil
	if cmd == sht3xCmdReadStatus {
		s.out = sht3xWords(s.status)
	}
	if measure > 0 {
		s.measuring = true
		s.measHeated = s.heater
		s.busyUntil = s.now().Add(measure)
	}
	return nil
}

func (s *SHT3x) read(r []byte) error {
	if s.out == nil {
		return fmt.Errorf("%w: sht3x has no data to send; send a measurement or status command first", ErrBusy)
	}
	if s.corrupt >= 0 && 3*s.corrupt+2 < len(s.out) {
		s.out[3*s.corrupt+2] ^= 0x01
	}
	s.corrupt = -1
	n := copy(r, s.out)
	// Past the data the master reads a released bus.
	for i := n; i < len(r); i++ {
		r[i] = 0xFF
	}
	s.out = nil
	return nil
}

// sht3xWords encodes words as the chip sends them: MSB, LSB, CRC-8.
func sht3xWords(words ...uint16) []byte {
	b := make([]byte, 0, 3*len(words))
	for _, w := range words {
		b = append(b, byte(w>>8), byte(w), sht3xCRC(byte(w>>8), byte(w)))
	}
	return b
}

// sht3xCRC is the datasheet's CRC-8 (§4.12): polynomial 0x31, initial
// value 0xFF, no reflection, no final XOR.
func sht3xCRC(msb, lsb byte) byte {
	crc := byte(0xFF)
	for _, b := range [2]byte{msb, lsb} {
		crc ^= b
		for range 8 {
			if crc&0x80 != 0 {
				crc = crc<<1 ^ 0x31
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// sht3xRawTemperature inverts T = -45 °C + 175 °C·S/65535 (§4.13),
// rounding to the nearest step and clamping to the sensor's range.
func sht3xRawTemperature(t physic.Temperature) uint16 {
	lo := physic.ZeroCelsius - 45*physic.Celsius
	span := 175 * physic.Celsius
	switch {
	case t <= lo:
		return 0
	case t >= lo+span:
		return 65535
	}
	return uint16((int64(t-lo)*65535 + int64(span)/2) / int64(span))
}

// sht3xRawHumidity inverts RH = 100 %·S/65535 (§4.13), rounding and
// clamping to 0…100 %.
func sht3xRawHumidity(h physic.RelativeHumidity) uint16 {
	span := 100 * physic.PercentRH
	switch {
	case h <= 0:
		return 0
	case h >= span:
		return 65535
	}
	return uint16((int64(h)*65535 + int64(span)/2) / int64(span))
}
