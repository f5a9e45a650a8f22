package bme280

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
)

// Registers (§5.3 memory map).
const (
	regCalibTP  = 0x88 // calib00…calib25
	regID       = 0xD0
	regCalibH   = 0xE1 // calib26…calib32 as used by the formulas
	regCtrlHum  = 0xF2
	regCtrlMeas = 0xF4
	regConfig   = 0xF5
	regPress    = 0xF7 // press_msb; temp_msb is 0xFA, hum_msb 0xFD
	regTemp     = 0xFA
)

// Chip ids (§5.4.1; §5.2 table 17 for the BMP280).
const (
	idBME280        = 0x60
	idBMP280        = 0x58
	idBMP280Sample1 = 0x56
	idBMP280Sample2 = 0x57
)

// Modes in ctrl_meas bits 1:0 (§5.4.5).
const (
	modeSleep  = 0b00
	modeForced = 0b01
	modeNormal = 0b11
)

// Errors. They are returned wrapped, with the address or value at fault.
var (
	// ErrUnknownChip is returned by New when the chip id read is neither
	// a BME280's nor a BMP280's: another chip answers at the address.
	ErrUnknownChip = errors.New("not a BME280 or BMP280")
	// ErrBusy is returned by SenseContinuous while a previous continuous
	// sensing still runs.
	ErrBusy = errors.New("bme280: already sensing continuously; call Halt first")
)

// Dev is a BME280 or BMP280 on an I²C bus.
type Dev struct {
	d      i2c.Dev
	chip   string
	hasHum bool
	opts   Opts
	cal    calibration
	wait   time.Duration       // forced-mode measurement time, §9.1
	sleep  func(time.Duration) // time.Sleep; tests replace it
	sleepM byte                // ctrl_meas with oversampling and sleep mode

	// mu serializes the transactions of one reading, and owns the
	// buffers below so a reading allocates nothing.
	mu      sync.Mutex
	trigger []byte // the forced-mode write
	readReg [1]byte
	buf     [8]byte
	readLen int

	// cmu guards the continuous-sensing goroutine's state.
	cmu     sync.Mutex
	stop    chan struct{} // closed by Halt
	done    chan struct{} // closed by the goroutine when it returns
	contErr error
}

var _ physic.SenseEnv = (*Dev)(nil)

// New checks that a BME280 or BMP280 answers at addr on b, reads its
// calibration and configures it. addr is 0x76 (SDO to GND) or 0x77 (SDO
// to VDDIO). A nil opts means DefaultOpts.
func New(b i2c.Bus, addr uint16, opts *Opts) (*Dev, error) {
	if addr != 0x76 && addr != 0x77 {
		return nil, fmt.Errorf("bme280: address 0x%02x: a BME280 or BMP280 answers only at 0x76 (SDO to GND) or 0x77 (SDO to VDDIO)", addr)
	}
	if opts == nil {
		opts = &DefaultOpts
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	d := &Dev{d: i2c.Dev{Bus: b, Addr: addr}, opts: *opts, sleep: time.Sleep}

	var id [1]byte
	if err := d.d.Tx([]byte{regID}, id[:]); err != nil {
		return nil, fmt.Errorf("bme280: read chip id at 0x%02x: %w", addr, err)
	}
	standby := &standbyBME280
	switch id[0] {
	case idBME280:
		d.chip, d.hasHum = "BME280", true
	case idBMP280, idBMP280Sample1, idBMP280Sample2:
		d.chip, standby = "BMP280", &standbyBMP280
	default:
		return nil, fmt.Errorf("bme280: chip id 0x%02x at 0x%02x is %w", id[0], addr, ErrUnknownChip)
	}
	var tsb byte
	if d.opts.Mode == Normal {
		var err error
		if tsb, err = standbyCode(d.opts.Standby, standby, d.chip); err != nil {
			return nil, err
		}
	}
	if !d.hasHum {
		d.opts.Humidity = Off
	}

	var tp [calibTPLen]byte
	if err := d.d.Tx([]byte{regCalibTP}, tp[:]); err != nil {
		return nil, fmt.Errorf("bme280: read calibration 0x88…0xA1 at 0x%02x: %w", addr, err)
	}
	var h []byte
	if d.hasHum {
		h = make([]byte, calibHLen)
		if err := d.d.Tx([]byte{regCalibH}, h); err != nil {
			return nil, fmt.Errorf("bme280: read calibration 0xE1…0xE7 at 0x%02x: %w", addr, err)
		}
	}
	var err error
	if d.cal, err = parseCalibration(tp[:], h); err != nil {
		return nil, err
	}

	// ctrl_meas: osrs_t 7:5, osrs_p 4:2, mode 1:0 (§5.4.5); ctrl_hum:
	// osrs_h 2:0 (§5.4.3); config: t_sb 7:5, filter 4:2, spi3w_en 0 off
	// (§5.4.6).
	meas := byte(d.opts.Temperature)<<5 | byte(d.opts.Pressure)<<2
	d.sleepM = meas | modeSleep
	hum := byte(d.opts.Humidity)
	config := tsb<<5 | byte(d.opts.Filter)<<2

	// Sleep first: in normal mode the chip may ignore config (§5.4.6).
	// ctrl_hum takes effect with the next ctrl_meas write (§5.4.3).
	writes := [][]byte{{regCtrlMeas, d.sleepM}}
	if d.hasHum {
		writes = append(writes, []byte{regCtrlHum, hum})
	}
	writes = append(writes, []byte{regConfig, config})
	if d.opts.Mode == Normal {
		writes = append(writes, []byte{regCtrlMeas, meas | modeNormal})
	}
	for _, w := range writes {
		if err := d.d.Tx(w, nil); err != nil {
			return nil, fmt.Errorf("bme280: write register 0x%02x at 0x%02x: %w", w[0], addr, err)
		}
	}

	// One forced reading: ctrl_hum then ctrl_meas as register/data pairs
	// in a single write (§6.2.1).
	if d.hasHum {
		d.trigger = []byte{regCtrlHum, hum, regCtrlMeas, meas | modeForced}
	} else {
		d.trigger = []byte{regCtrlMeas, meas | modeForced}
	}
	d.wait = measureTime(d.opts.Temperature, d.opts.Pressure, d.opts.Humidity)

	// Read only the data registers in use: press 0xF7…0xF9, temp
	// 0xFA…0xFC, hum 0xFD…0xFE.
	d.readReg[0], d.readLen = regPress, 6
	if d.opts.Pressure == Off {
		d.readReg[0], d.readLen = regTemp, 3
	}
	if d.opts.Humidity != Off {
		d.readLen += 2
	}
	return d, nil
}

// Sense takes one reading and stores it in e; metrics the chip does not
// measure (humidity on a BMP280, a measurement set Off) are left as they
// were. In forced mode it starts a measurement and waits the datasheet's
// maximum measurement time (about 9.3 ms with DefaultOpts) before reading.
func (d *Dev) Sense(e *physic.Env) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.opts.Mode == Forced {
		if err := d.d.Tx(d.trigger, nil); err != nil {
			return fmt.Errorf("bme280: start forced measurement at 0x%02x: %w", d.d.Addr, err)
		}
		d.sleep(d.wait)
	}
	buf := d.buf[:d.readLen]
	if err := d.d.Tx(d.readReg[:], buf); err != nil {
		return fmt.Errorf("bme280: read data registers at 0x%02x: %w", d.d.Addr, err)
	}
	return d.compensate(buf, e)
}

// compensate turns the data registers read by Sense into e. It leaves e
// alone and returns an error when the pressure comes out negative, which
// only a corrupted raw value can cause.
func (d *Dev) compensate(buf []byte, e *physic.Env) error {
	raw20 := func(b []byte) int32 { return int32(b[0])<<12 | int32(b[1])<<4 | int32(b[2])>>4 }
	var adcP int32
	if d.opts.Pressure != Off {
		adcP = raw20(buf)
		buf = buf[3:]
	}
	adcT := raw20(buf)
	centiC, tFine := d.cal.temperature(adcT)
	var pa256 int64
	if d.opts.Pressure != Off {
		if pa256 = d.cal.pressure(adcP, tFine); pa256 < 0 {
			return fmt.Errorf("bme280: raw pressure 0x%05x at raw temperature 0x%05x compensates to %.1f Pa, less than zero: the reading is corrupt", adcP, adcT, float64(pa256)/256)
		}
	}
	e.Temperature = physic.ZeroCelsius + physic.Temperature(centiC)*10*physic.MilliKelvin
	if d.opts.Pressure != Off {
		// Q24.8 Pa; physic.Pascal/256 is exact in nanopascals.
		e.Pressure = physic.Pressure(pa256) * (physic.Pascal / 256)
	}
	if d.opts.Humidity != Off {
		adcH := int32(buf[3])<<8 | int32(buf[4])
		q := int64(d.cal.humidity(adcH, tFine)) // Q22.10 %RH
		e.Humidity = physic.RelativeHumidity((q*int64(physic.PercentRH) + 512) / 1024)
	}
	return nil
}

// SenseContinuous takes a reading every interval and sends it on the
// returned channel, the first one at once. The channel is unbuffered: a
// reader slower than interval gets readings as fast as it takes them, and
// the ticks missed meanwhile are skipped, so nothing queues. The channel
// is closed by Halt, or after a reading fails; Err then tells why.
// In forced mode an interval shorter than the measurement time is
// stretched to it.
func (d *Dev) SenseContinuous(interval time.Duration) (<-chan physic.Env, error) {
	if interval <= 0 {
		return nil, fmt.Errorf("bme280: SenseContinuous interval %s: must be positive", interval)
	}
	d.cmu.Lock()
	defer d.cmu.Unlock()
	if d.done != nil {
		if d.contErr == nil {
			return nil, ErrBusy
		}
		<-d.done // it failed and is returning; start afresh
	}
	out := make(chan physic.Env)
	d.stop, d.done, d.contErr = make(chan struct{}), make(chan struct{}), nil
	go d.senseLoop(interval, out, d.stop, d.done)
	return out, nil
}

func (d *Dev) senseLoop(interval time.Duration, out chan<- physic.Env, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	defer close(out)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		var e physic.Env
		if err := d.Sense(&e); err != nil {
			d.cmu.Lock()
			d.contErr = err
			d.cmu.Unlock()
			return
		}
		select {
		case out <- e:
		case <-stop:
			return
		}
		select {
		case <-t.C:
		case <-stop:
			return
		}
	}
}

// Err returns the error that ended the last continuous sensing, or nil.
func (d *Dev) Err() error {
	d.cmu.Lock()
	defer d.cmu.Unlock()
	return d.contErr
}

// Precision sets e to the resolution of the values Sense returns: 0.01 °C,
// 1/256 Pa and 1/1024 %RH (§4.2.3); metrics not measured are zero.
func (d *Dev) Precision(e *physic.Env) {
	e.Temperature = 10 * physic.MilliKelvin
	e.Pressure, e.Humidity = 0, 0
	if d.opts.Pressure != Off {
		e.Pressure = physic.Pascal / 256
	}
	if d.opts.Humidity != Off {
		e.Humidity = (physic.PercentRH + 512) / 1024
	}
}

// Chip returns "BME280" or "BMP280", as told by the chip id.
func (d *Dev) Chip() string { return d.chip }

// String names the chip and where it is, as "BME280{sim(118)}".
func (d *Dev) String() string { return d.chip + "{" + d.d.String() + "}" }

// Halt stops continuous sensing, waiting for its goroutine to return, and
// puts the chip in sleep mode. A later Sense in forced mode works again;
// in normal mode it would return the last measurement.
func (d *Dev) Halt() error {
	d.cmu.Lock()
	stop, done := d.stop, d.done
	d.stop, d.done = nil, nil
	d.cmu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.d.Tx([]byte{regCtrlMeas, d.sleepM}, nil); err != nil {
		return fmt.Errorf("bme280: halt: write ctrl_meas at 0x%02x: %w", d.d.Addr, err)
	}
	return nil
}
