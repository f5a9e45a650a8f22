package hw

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// SimName is the name of the simulated I²C bus, and with a colon the
// prefix of simulated pins: "sim", "sim:GPIO17".
const SimName = "sim"

// busName is what an I²C bus name given by a user means.
type busName struct {
	sim bool
	// number is the bus number for I2C<n>, <n> and /dev/i2c-<n>, else -1.
	number int
	// other is any other name, looked up as a registered bus name or
	// alias (a USB adapter's bus, say); "" means the host's first bus.
	other string
}

// parseBusName reads I2C1, i2c1, 1 and /dev/i2c-1 as bus 1, "sim" as the
// simulated bus and "" as the first bus; any other name is kept as is
// for the registry.
func parseBusName(s string) (busName, error) {
	switch {
	case strings.EqualFold(s, SimName):
		return busName{sim: true, number: -1}, nil
	case s == "":
		return busName{number: -1}, nil
	case isDigits(s):
		n, err := atoi(s)
		if err != nil {
			return busName{}, fmt.Errorf("%w: I²C bus %q: %v", ErrBadName, s, err)
		}
		return busName{number: n}, nil
	}
	for _, prefix := range []string{"/dev/i2c-", "i2c"} {
		if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
			continue
		}
		rest := s[len(prefix):]
		if !isDigits(rest) {
			return busName{}, fmt.Errorf("%w: I²C bus %q: want I2C<n>, <n>, /dev/i2c-<n> or %s", ErrBadName, s, SimName)
		}
		n, err := atoi(rest)
		if err != nil {
			return busName{}, fmt.Errorf("%w: I²C bus %q: %v", ErrBadName, s, err)
		}
		return busName{number: n}, nil
	}
	if err := checkPrintable(s); err != nil {
		return busName{}, fmt.Errorf("%w: I²C bus %q: %v", ErrBadName, s, err)
	}
	return busName{number: -1, other: s}, nil
}

// pinName is what a GPIO pin name given by a user means.
type pinName struct {
	sim bool
	// number is n for GPIO<n> and <n>, else -1.
	number int
	// name is GPIO<n> for a numbered pin, else the line name as given.
	name string
	// given is the name without its sim: prefix, as written.
	given string
}

// parsePinName reads GPIO17, gpio17 and 17 as pin 17, anything else as a
// gpiochip line name (ID_SDA, PWR_LED_OFF), and a "sim:" prefix as a
// simulated pin.
func parsePinName(s string) (pinName, error) {
	var p pinName
	rest := s
	if hasSimPrefix(s) {
		p.sim = true
		rest = s[len(SimName)+1:]
		if hasSimPrefix(rest) {
			// Without the first, the second would be the prefix: no
			// line name can start so.
			return pinName{}, fmt.Errorf("%w: GPIO pin %q: the %s: prefix is given twice", ErrBadName, s, SimName)
		}
	}
	p.given = rest
	p.number = -1
	if rest == "" {
		return pinName{}, fmt.Errorf("%w: empty GPIO pin name %q: want GPIO<n>, <n>, a gpiochip line name, or sim:GPIO<n>", ErrBadName, s)
	}
	digits := ""
	switch {
	case isDigits(rest):
		digits = rest
	case len(rest) > 4 && strings.EqualFold(rest[:4], "gpio") && isDigits(rest[4:]):
		digits = rest[4:]
	}
	if digits != "" {
		n, err := atoi(digits)
		if err != nil {
			return pinName{}, fmt.Errorf("%w: GPIO pin %q: %v", ErrBadName, s, err)
		}
		p.number = n
		p.name = "GPIO" + strconv.Itoa(n)
		return p, nil
	}
	if err := checkPrintable(rest); err != nil {
		return pinName{}, fmt.Errorf("%w: GPIO pin %q: %v", ErrBadName, s, err)
	}
	p.name = rest
	return p, nil
}

// hasSimPrefix says whether s starts with "sim:", in any case.
func hasSimPrefix(s string) bool {
	return len(s) > len(SimName) && strings.EqualFold(s[:len(SimName)+1], SimName+":")
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// maxNumber bounds bus and pin numbers; real ones are far smaller, and the
// bound keeps them in an int on 32-bit ARM.
const maxNumber = 1 << 20

// atoi reads a string of digits (leading zeros allowed) as a number up to
// maxNumber.
func atoi(s string) (int, error) {
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
		if n > maxNumber {
			return 0, fmt.Errorf("number %s is too large", s)
		}
	}
	return n, nil
}

// checkPrintable refuses names that cannot be what a user meant: with
// leading or trailing space, or with control or invalid characters.
func checkPrintable(s string) error {
	if strings.TrimSpace(s) != s {
		return fmt.Errorf("leading or trailing space")
	}
	for _, r := range s {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) && r != ' ' {
			return fmt.Errorf("character %q is not allowed", r)
		}
	}
	return nil
}
