package simtemp

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestModelRampThenWander(t *testing.T) {
	p := defaultParams()
	for seed := uint64(1); seed <= 20; seed++ {
		m := newModel(p, rand.New(rand.NewPCG(seed, 42)))
		prev := p.machineTempMin
		crossed := -1
		lowAfter := math.Inf(1)
		for i := 0; i < 1500; i++ {
			rd := m.next()
			d := rd.machineTemp - prev
			if prev > p.machineTempMax {
				if d < -0.5 || d >= 0.5 {
					t.Fatalf("seed %d step %d: above %g the temperature moved by %g, want within [-0.5, 0.5)", seed, i, p.machineTempMax, d)
				}
			} else if d < -0.25 || d >= 1.25 {
				t.Fatalf("seed %d step %d: below %g the temperature moved by %g, want within [-0.25, 1.25)", seed, i, p.machineTempMax, d)
			}
			if crossed < 0 && rd.machineTemp > p.machineTempMax {
				crossed = i
			}
			if crossed >= 0 {
				lowAfter = min(lowAfter, rd.machineTemp)
			}
			prev = rd.machineTemp
		}
		// The ramp averages +0.5 per step: 79 °C take about 160 steps.
		if crossed < 0 || crossed > 400 {
			t.Fatalf("seed %d: temperature passed %g at step %d, want within 400 steps", seed, p.machineTempMax, crossed)
		}
		// Once past the maximum it hovers there: below it the ramp pushes
		// it back up.
		if lowAfter < p.machineTempMax-3 {
			t.Errorf("seed %d: after passing %g the temperature fell to %g", seed, p.machineTempMax, lowAfter)
		}
	}
}

func TestModelReadings(t *testing.T) {
	p := defaultParams()
	m := newModel(p, rand.New(rand.NewPCG(7, 7)))
	humidity := map[int]int{}
	for i := 0; i < 1000; i++ {
		rd := m.next()
		if i == 0 && (rd.machineTemp < 20.75 || rd.machineTemp >= 22.25) {
			t.Errorf("first temperature = %g, want one step from 21, in [20.75, 22.25)", rd.machineTemp)
		}
		want := 1 + (rd.machineTemp-21)*9/79
		if math.Abs(rd.machinePressure-want) > 1e-9 {
			t.Fatalf("pressure at %g °C = %g, want 1 + (t-21)*9/79 = %g", rd.machineTemp, rd.machinePressure, want)
		}
		if rd.ambientTemp < 20.5 || rd.ambientTemp >= 21.5 {
			t.Fatalf("ambient temperature = %g, want 21 ± 0.5", rd.ambientTemp)
		}
		humidity[rd.ambientHumidity]++
	}
	for h := range humidity {
		if h < 24 || h > 26 {
			t.Errorf("humidity %d, want 24–26", h)
		}
	}
	if len(humidity) != 3 {
		t.Errorf("humidities seen: %v, want each of 24, 25, 26", humidity)
	}
}

func TestPressure(t *testing.T) {
	p := defaultParams()
	for _, tc := range []struct{ temp, want float64 }{{21, 1}, {100, 10}, {60.5, 5.5}, {110, 1 + 89*9/79.0}} {
		if got := p.pressure(tc.temp); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("pressure(%g) = %g, want %g", tc.temp, got, tc.want)
		}
	}
}

func TestModelReset(t *testing.T) {
	p := defaultParams()
	m := newModel(p, rand.New(rand.NewPCG(3, 3)))
	for range 100 {
		m.next()
	}
	if m.temp < 40 {
		t.Fatalf("after 100 steps the temperature is %g, want well above the start", m.temp)
	}
	m.reset()
	if rd := m.next(); rd.machineTemp < 20.75 || rd.machineTemp >= 22.25 {
		t.Errorf("first temperature after reset = %g, want in [20.75, 22.25)", rd.machineTemp)
	}
}

func TestModelCustomRange(t *testing.T) {
	p := params{machineTempMin: 0, machineTempMax: 10, machinePressureMin: 2, machinePressureMax: 4, ambientTemp: 5, ambientHumidity: 60}
	m := newModel(p, rand.New(rand.NewPCG(9, 9)))
	for range 200 {
		rd := m.next()
		want := 2 + rd.machineTemp*2/10
		if math.Abs(rd.machinePressure-want) > 1e-9 {
			t.Fatalf("pressure at %g = %g, want %g", rd.machineTemp, rd.machinePressure, want)
		}
		if rd.ambientHumidity < 59 || rd.ambientHumidity > 61 {
			t.Fatalf("humidity = %d, want 60 ± 1", rd.ambientHumidity)
		}
		if rd.ambientTemp < 4.5 || rd.ambientTemp >= 5.5 {
			t.Fatalf("ambient = %g, want 5 ± 0.5", rd.ambientTemp)
		}
	}
}
