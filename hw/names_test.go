package hw

import (
	"errors"
	"strconv"
	"testing"
)

var busNameTests = []struct {
	in      string
	want    busName
	wantErr bool
}{
	{in: "I2C1", want: busName{number: 1}},
	{in: "i2c1", want: busName{number: 1}},
	{in: "1", want: busName{number: 1}},
	{in: "/dev/i2c-1", want: busName{number: 1}},
	{in: "/DEV/I2C-1", want: busName{number: 1}},
	{in: "I2C20", want: busName{number: 20}},
	{in: "/dev/i2c-0", want: busName{number: 0}},
	{in: "01", want: busName{number: 1}},
	{in: "sim", want: busName{sim: true, number: -1}},
	{in: "SIM", want: busName{sim: true, number: -1}},
	{in: "", want: busName{number: -1}},
	{in: "FT232H(1234)", want: busName{number: -1, other: "FT232H(1234)"}},
	{in: "/dev/i2c-x", wantErr: true},
	{in: "/dev/i2c-", wantErr: true},
	{in: "I2C", wantErr: true},
	{in: "I2C-1", wantErr: true},
	{in: "-1", want: busName{number: -1, other: "-1"}},
	{in: "99999999999999999999", wantErr: true},
	{in: " I2C1", wantErr: true},
	{in: "bus\x00", wantErr: true},
}

func TestParseBusName(t *testing.T) {
	for _, tt := range busNameTests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseBusName(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrBadName) {
					t.Fatalf("parseBusName(%q) = %+v, %v; want an ErrBadName error", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseBusName(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

func FuzzParseBusName(f *testing.F) {
	for _, tt := range busNameTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseBusName(s)
		if err != nil {
			if !errors.Is(err, ErrBadName) {
				t.Fatalf("parseBusName(%q) error %v is not ErrBadName", s, err)
			}
			return
		}
		if n.number < -1 || n.number > maxNumber {
			t.Fatalf("parseBusName(%q) number %d out of range", s, n.number)
		}
		if n.number >= 0 {
			// Every spelling of a numbered bus means the same bus.
			for _, form := range []string{strconv.Itoa(n.number), "I2C" + strconv.Itoa(n.number), "/dev/i2c-" + strconv.Itoa(n.number)} {
				m, err := parseBusName(form)
				if err != nil || m.number != n.number || m.sim {
					t.Fatalf("parseBusName(%q) = %d but parseBusName(%q) = %+v, %v", s, n.number, form, m, err)
				}
			}
		}
		if n.sim && (n.number != -1 || n.other != "") {
			t.Fatalf("parseBusName(%q) = %+v: sim with a number or name", s, n)
		}
	})
}

var pinNameTests = []struct {
	in      string
	want    pinName
	wantErr bool
}{
	{in: "GPIO17", want: pinName{number: 17, name: "GPIO17", given: "GPIO17"}},
	{in: "gpio17", want: pinName{number: 17, name: "GPIO17", given: "gpio17"}},
	{in: "17", want: pinName{number: 17, name: "GPIO17", given: "17"}},
	{in: "017", want: pinName{number: 17, name: "GPIO17", given: "017"}},
	{in: "GPIO0", want: pinName{number: 0, name: "GPIO0", given: "GPIO0"}},
	{in: "ID_SDA", want: pinName{number: -1, name: "ID_SDA", given: "ID_SDA"}},
	{in: "GPIO_GCLK", want: pinName{number: -1, name: "GPIO_GCLK", given: "GPIO_GCLK"}},
	{in: "PWR_LED_OFF", want: pinName{number: -1, name: "PWR_LED_OFF", given: "PWR_LED_OFF"}},
	{in: "gpiochip0-2712_WAKE", want: pinName{number: -1, name: "gpiochip0-2712_WAKE", given: "gpiochip0-2712_WAKE"}},
	{in: "sim:GPIO17", want: pinName{sim: true, number: 17, name: "GPIO17", given: "GPIO17"}},
	{in: "SIM:17", want: pinName{sim: true, number: 17, name: "GPIO17", given: "17"}},
	{in: "sim:button", want: pinName{sim: true, number: -1, name: "button", given: "button"}},
	{in: "sim", want: pinName{number: -1, name: "sim", given: "sim"}},
	{in: "", wantErr: true},
	{in: "sim:", wantErr: true},
	{in: "sim:sim:", wantErr: true},
	{in: "sim:SIM:GPIO4", wantErr: true},
	{in: "GPIO17 ", wantErr: true},
	{in: "GPIO99999999999", wantErr: true},
	{in: "pin\n", wantErr: true},
	{in: "\xff", wantErr: true},
}

func TestParsePinName(t *testing.T) {
	for _, tt := range pinNameTests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parsePinName(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrBadName) {
					t.Fatalf("parsePinName(%q) = %+v, %v; want an ErrBadName error", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parsePinName(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

func FuzzParsePinName(f *testing.F) {
	for _, tt := range pinNameTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parsePinName(s)
		if err != nil {
			if !errors.Is(err, ErrBadName) {
				t.Fatalf("parsePinName(%q) error %v is not ErrBadName", s, err)
			}
			return
		}
		if n.name == "" || n.given == "" {
			t.Fatalf("parsePinName(%q) = %+v: empty name", s, n)
		}
		if n.number >= 0 {
			if n.name != "GPIO"+strconv.Itoa(n.number) {
				t.Fatalf("parsePinName(%q) = %+v: numbered pin not named GPIO<n>", s, n)
			}
			// The canonical name parses back to the same pin.
			m, err := parsePinName(n.name)
			if err != nil || m.number != n.number || m.name != n.name {
				t.Fatalf("parsePinName(%q) = %+v but its name parses to %+v, %v", s, n, m, err)
			}
		}
		if n.sim {
			// sim: adds nothing but the simulation.
			m, err := parsePinName(n.given)
			if err != nil || m.name != n.name || m.number != n.number {
				t.Fatalf("parsePinName(%q) = %+v but without sim: %+v, %v", s, n, m, err)
			}
		}
	})
}
