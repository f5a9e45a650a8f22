package simtemp

import "math/rand/v2"

// params are the simulator's parameters, the original's
// SimulatorParameters.
type params struct {
	machineTempMin     float64
	machineTempMax     float64
	machinePressureMin float64
	machinePressureMax float64
	ambientTemp        float64
	ambientHumidity    int
}

func defaultParams() params {
	return params{
		machineTempMin:     21,
		machineTempMax:     100,
		machinePressureMin: 1,
		machinePressureMax: 10,
		ambientTemp:        21,
		ambientHumidity:    25,
	}
}

// pressure is the machine pressure at a machine temperature: linear,
// from machinePressureMin at machineTempMin to machinePressureMax at
// machineTempMax.
func (p params) pressure(temp float64) float64 {
	slope := (p.machinePressureMax - p.machinePressureMin) / (p.machineTempMax - p.machineTempMin)
	return p.machinePressureMin + (temp-p.machineTempMin)*slope
}

// reading is one simulated measurement.
type reading struct {
	machineTemp     float64
	machinePressure float64
	ambientTemp     float64
	ambientHumidity int
}

// model is the temperature model. It is not safe for concurrent use: only
// the send loop of a run touches it.
type model struct {
	p    params
	rng  *rand.Rand
	temp float64
}

func newModel(p params, rng *rand.Rand) *model {
	return &model{p: p, rng: rng, temp: p.machineTempMin}
}

// reset restarts the ramp: the next reading starts again from the minimum.
func (m *model) reset() { m.temp = m.p.machineTempMin }

// next advances the machine temperature by one step and returns a reading.
// Like the original, it steps before it reads, so the first reading is
// already one step above (or below) the minimum.
func (m *model) next() reading {
	if m.temp > m.p.machineTempMax {
		m.temp += m.rng.Float64() - 0.5 // [-0.5, 0.5)
	} else {
		m.temp += -0.25 + m.rng.Float64()*1.5 // [-0.25, 1.25), +0.5 on average
	}
	return reading{
		machineTemp:     m.temp,
		machinePressure: m.p.pressure(m.temp),
		ambientTemp:     m.p.ambientTemp + m.rng.Float64() - 0.5,
		ambientHumidity: m.p.ambientHumidity - 1 + m.rng.IntN(3),
	}
}
