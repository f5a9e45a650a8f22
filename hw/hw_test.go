package hw

import (
	"errors"
	"strings"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/host/v3/sysfs"

	"github.com/tinyedge/tinyedge/hw/pins"
	"github.com/tinyedge/tinyedge/hw/sim"
)

func TestInitIsIdempotentAndWorksWithoutHardware(t *testing.T) {
	s1, err := Init()
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	s2, err := Init()
	if err != nil {
		t.Fatalf("second Init: %v", err)
	}
	if s1 != s2 {
		t.Errorf("second Init returned a different State")
	}
	// No pin name may lead to the deprecated sysfs GPIO interface.
	for _, p := range append(gpioreg.All(), gpioreg.Aliases()...) {
		if r, ok := p.(gpio.RealPin); ok {
			p = r.Real()
		}
		if _, ok := p.(*sysfs.Pin); ok {
			t.Errorf("pin %s is served by sysfs-gpio after Init", p)
		}
	}
	if s1.GPIO == "" && len(s1.I2C) == 0 && !s1.NoHardware() {
		t.Errorf("NoHardware() = false with no GPIO and no I²C")
	}
	t.Logf("GPIO driver %q, I²C %v, loaded %v, failed %v, no hardware %t", s1.GPIO, s1.I2C, s1.Loaded, s1.Failed, s1.NoHardware())
}

func TestOpenI2CSim(t *testing.T) {
	for _, name := range []string{"sim", "SIM"} {
		b, err := OpenI2C(name)
		if err != nil {
			t.Fatalf("OpenI2C(%q): %v", name, err)
		}
		// BME280 chip ID register 0xD0 reads 0x60 (datasheet §5.4.1).
		id := make([]byte, 1)
		if err := b.Tx(SimBME280Addr, []byte{0xD0}, id); err != nil {
			t.Fatalf("read BME280 chip ID at %#x: %v", SimBME280Addr, err)
		}
		if id[0] != 0x60 {
			t.Errorf("BME280 chip ID = %#x, want 0x60", id[0])
		}
		// SHT3x read status 0xF32D answers a word and its CRC (datasheet §4.11, §4.12).
		if err := b.Tx(SimSHT3xAddr, []byte{0xF3, 0x2D}, nil); err != nil {
			t.Fatalf("SHT3x read status command at %#x: %v", SimSHT3xAddr, err)
		}
		st := make([]byte, 3)
		if err := b.Tx(SimSHT3xAddr, nil, st); err != nil {
			t.Fatalf("read SHT3x status: %v", err)
		}
		if got, want := st[2], crc8(st[:2]); got != want {
			t.Errorf("SHT3x status %x: CRC %#x, want %#x", st, got, want)
		}
		if err := b.Tx(0x40, nil, make([]byte, 1)); !errors.Is(err, sim.ErrNoDevice) {
			t.Errorf("Tx at 0x40, where nothing is: %v, want sim.ErrNoDevice", err)
		}
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	a, _ := OpenI2C("sim")
	b, _ := OpenI2C("sim")
	if a != b {
		t.Errorf("two OpenI2C(\"sim\") gave different buses; want one bus, as on real hardware")
	}
}

// crc8 is the SHT3x CRC: polynomial 0x31, initial 0xFF.
func crc8(b []byte) byte {
	c := byte(0xFF)
	for _, x := range b {
		c ^= x
		for range 8 {
			if c&0x80 != 0 {
				c = c<<1 ^ 0x31
			} else {
				c <<= 1
			}
		}
	}
	return c
}

func TestNewSimBusIsFresh(t *testing.T) {
	a, b := NewSimBus(nil), NewSimBus(&sim.Climate{Seed: 1})
	if a == b || a == sharedSimBus() {
		t.Fatal("NewSimBus returned a bus already in use; want a new one each call")
	}
	for _, bus := range []*sim.Bus{a, b} {
		for _, addr := range []uint16{SimBME280Addr, SimSHT3xAddr} {
			if err := bus.Tx(addr, []byte{0xF3, 0x2D}, nil); errors.Is(err, sim.ErrNoDevice) {
				t.Errorf("no device at %#x on NewSimBus", addr)
			}
		}
	}
}

func TestOpenI2CErrors(t *testing.T) {
	if _, err := Init(); err != nil {
		t.Fatal(err)
	}
	hostHasBus := len(i2creg.All()) > 0

	_, err := OpenI2C("I2C987")
	if err == nil {
		t.Fatal("OpenI2C(\"I2C987\") succeeded")
	}
	if !errors.Is(err, ErrUnknownBus) && !errors.Is(err, ErrNoBus) {
		t.Errorf("OpenI2C(\"I2C987\") error %v is neither ErrUnknownBus nor ErrNoBus", err)
	}
	for _, want := range []string{"hw: ", `"I2C987"`, `"sim"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("OpenI2C(\"I2C987\") error %q does not mention %s", err, want)
		}
	}

	_, err = OpenI2C("/dev/i2c-x")
	if !errors.Is(err, ErrBadName) || !strings.Contains(err.Error(), "/dev/i2c-x") || !strings.Contains(err.Error(), "I2C<n>") {
		t.Errorf("OpenI2C(\"/dev/i2c-x\") error = %v, want ErrBadName naming it and the forms accepted", err)
	}

	b, err := OpenI2C("")
	if hostHasBus {
		if err != nil {
			t.Errorf("OpenI2C(\"\") on a host with buses: %v", err)
		} else {
			b.Close()
		}
		return
	}
	if !errors.Is(err, ErrNoBus) || !strings.Contains(err.Error(), "sim") || !strings.Contains(err.Error(), "no /dev/i2c-*") {
		t.Errorf("OpenI2C(\"\") on a host without buses: error = %v, want ErrNoBus saying there is no /dev/i2c-* and that sim exists", err)
	}
}

func TestPinErrors(t *testing.T) {
	if _, err := Init(); err != nil {
		t.Fatal(err)
	}
	_, err := Pin("GPIO999")
	if !errors.Is(err, ErrUnknownPin) {
		t.Fatalf("Pin(\"GPIO999\") error = %v, want ErrUnknownPin", err)
	}
	for _, want := range []string{"hw: ", `"GPIO999"`, "gpioinfo", `"sim:GPIO999"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Pin(\"GPIO999\") error %q does not mention %s", err, want)
		}
	}
	if _, err := Pin(""); !errors.Is(err, ErrBadName) {
		t.Errorf("Pin(\"\") error = %v, want ErrBadName", err)
	}
	if _, err := SimPin("sim:"); !errors.Is(err, ErrBadName) {
		t.Errorf("SimPin(\"sim:\") error = %v, want ErrBadName", err)
	}
}

func TestSimPinNames(t *testing.T) {
	want, err := SimPin("GPIO23")
	if err != nil {
		t.Fatal(err)
	}
	if want.Name() != "GPIO23" || want.Number() != 23 {
		t.Errorf("SimPin(\"GPIO23\") is %s number %d, want GPIO23 number 23", want.Name(), want.Number())
	}
	for _, name := range []string{"sim:GPIO23", "sim:23", "SIM:gpio23"} {
		p, err := Pin(name)
		if err != nil {
			t.Fatalf("Pin(%q): %v", name, err)
		}
		if p != gpio.PinIO(want) {
			t.Errorf("Pin(%q) is not the same pin as SimPin(\"GPIO23\")", name)
		}
	}
	for _, name := range []string{"23", "sim:GPIO23"} {
		p, err := SimPin(name)
		if err != nil || p != want {
			t.Errorf("SimPin(%q) = %v, %v; want the same pin as SimPin(\"GPIO23\")", name, p, err)
		}
	}
}

// TestSimPinDrivesDebouncedInput is the laptop demo path: a module's
// input on sim:GPIO24 sees edges injected on the simulated pin, and an
// output on sim:GPIO25 can be read back.
func TestSimPinDrivesDebouncedInput(t *testing.T) {
	p, err := Pin("sim:GPIO24")
	if err != nil {
		t.Fatal(err)
	}
	in, err := pins.NewInput(p, &pins.InputOpts{Pull: gpio.PullDown, Debounce: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Halt()
	sp, _ := SimPin("GPIO24")
	sp.EdgesChan <- gpio.High
	select {
	case ev := <-in.Events():
		if ev.Pin != "GPIO24" || ev.Level != gpio.High {
			t.Errorf("event = %+v, want GPIO24 High", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event from the simulated pin within 5s")
	}

	q, err := Pin("sim:25")
	if err != nil {
		t.Fatal(err)
	}
	out, err := pins.NewOutput(q, gpio.High)
	if err != nil {
		t.Fatal(err)
	}
	sq, _ := SimPin("GPIO25")
	if sq.Read() != gpio.High {
		t.Errorf("simulated output after NewOutput(High) reads %s", sq.Read())
	}
	if err := out.Set(gpio.Low); err != nil || sq.Read() != gpio.Low {
		t.Errorf("simulated output after Set(Low) reads %s (err %v)", sq.Read(), err)
	}
}

func TestDropPinsReplacesLegacyPins(t *testing.T) {
	legacy := map[gpio.PinIO]bool{}
	newLegacy := func(name string, n int) gpio.PinIO {
		p := &gpiotest.Pin{N: name, Num: n}
		legacy[p] = true
		return p
	}
	// GPIO900 has a character-device line of the same name, GPIO901 has
	// none; GPIO902 is not legacy and must stay.
	replacement := &gpiotest.Pin{N: "GPIO900", Num: 0}
	keep := &gpiotest.Pin{N: "GPIO902", Num: 902}
	for _, p := range []gpio.PinIO{newLegacy("GPIO900", 900), newLegacy("GPIO901", 901), keep} {
		if err := gpioreg.Register(p); err != nil {
			t.Fatal(err)
		}
		num := strings.TrimPrefix(p.Name(), "GPIO")
		if err := gpioreg.RegisterAlias(num, p.Name()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = gpioreg.Unregister(p.Name())
			_ = gpioreg.Unregister(num)
		})
	}
	removed := dropPins(func(p gpio.PinIO) bool { return legacy[p] }, func(name string) gpio.PinIO {
		if name == "GPIO900" {
			return replacement
		}
		return nil
	})
	if removed != 2 {
		t.Errorf("removed %d pins, want 2", removed)
	}
	for _, name := range []string{"GPIO900", "900"} {
		p := gpioreg.ByName(name)
		if r, ok := p.(gpio.RealPin); ok {
			p = r.Real()
		}
		if p != gpio.PinIO(replacement) {
			t.Errorf("%s resolves to %v, want the character-device line", name, p)
		}
	}
	for _, name := range []string{"GPIO901", "901"} {
		if p := gpioreg.ByName(name); p != nil {
			t.Errorf("%s still resolves to %v after its legacy pin was dropped", name, p)
		}
	}
	if p := gpioreg.ByName("902"); p == nil {
		t.Errorf("alias 902 of a pin that is not legacy was dropped")
	}
}
