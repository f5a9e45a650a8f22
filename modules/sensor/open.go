package sensor

import (
	"errors"
	"fmt"

	"periph.io/x/conn/v3/i2c"

	"github.com/tinyedge/tinyedge/hw"
	"github.com/tinyedge/tinyedge/hw/bme280"
	"github.com/tinyedge/tinyedge/hw/sht3x"
)

// OpenI2C is the default Opener: it opens cfg.Bus with hw.OpenI2C (an
// empty name is the host's first bus, or the simulator when the host has
// none) and the chip's driver on it.
func OpenI2C(cfg Config) (Device, func() error, error) {
	bus, err := hw.OpenI2C(cfg.Bus)
	if err != nil && cfg.Bus == "" && errors.Is(err, hw.ErrNoBus) {
		bus, err = hw.OpenI2C("sim")
	}
	if err != nil {
		return nil, nil, err
	}
	dev, err := openChip(bus, cfg)
	if err != nil {
		bus.Close()
		return nil, nil, err
	}
	return dev, bus.Close, nil
}

func openChip(bus i2c.Bus, cfg Config) (Device, error) {
	switch cfg.Chip {
	case "bme280", "bmp280":
		o := bmeOversampling(cfg.Oversampling)
		return bme280.New(bus, cfg.Address, &bme280.Opts{Temperature: o, Pressure: o, Humidity: o})
	case "sht3x":
		return sht3x.New(bus, cfg.Address, &sht3x.Opts{Repeatability: shtRepeatability(cfg.Oversampling)})
	}
	return nil, fmt.Errorf("sensor: no driver for chip %q", cfg.Chip)
}

// bmeOversampling maps the desired property's factor to the register
// setting.
func bmeOversampling(n int) bme280.Oversampling {
	switch n {
	case 2:
		return bme280.O2x
	case 4:
		return bme280.O4x
	case 8:
		return bme280.O8x
	case 16:
		return bme280.O16x
	}
	return bme280.O1x
}

// shtRepeatability maps oversampling onto the SHT3x's repeatability: 1 is
// low, 2–4 medium, 8–16 high.
func shtRepeatability(n int) sht3x.Repeatability {
	switch {
	case n >= 8:
		return sht3x.High
	case n >= 2:
		return sht3x.Medium
	}
	return sht3x.Low
}
