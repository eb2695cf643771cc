package fsm

import (
	"slices"
	"testing"
	"time"
)

// seconds returns 1s, 2s, ... ns in a scrambled order, so that Lease has to
// sort.
func seconds(n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range n {
		out[i] = time.Duration((i*7)%n+1) * time.Second
	}
	return out
}

func TestTimeoutLease(t *testing.T) {
	s := time.Second
	p90 := Timeout{Percentile: 90, Min: s, Max: time.Minute}
	cases := []struct {
		name    string
		timeout Timeout
		samples []time.Duration
		want    time.Duration
	}{
		{"fixed", Timeout{Fixed: 30 * s}, seconds(100), 30 * s},
		{"never", Timeout{}, seconds(100), 0},
		{"no samples", p90, nil, s},
		{"too few samples", p90, seconds(MinSamples - 1), s},
		{"just enough samples", p90, seconds(MinSamples), 18 * s},
		// Nearest rank: ceil(0.9*100) = 90th of 1s..100s; clamped by Max.
		{"p90 of 100 clamped to max", p90, seconds(100), time.Minute},
		{"p90 of 50", p90, seconds(50), 45 * s},
		// ceil(0.95*30) = 29 (28.5 rounds up).
		{"rank rounds up", Timeout{Percentile: 95, Min: s, Max: time.Hour}, seconds(30), 29 * s},
		{"tiny percentile takes the smallest", Timeout{Percentile: 0.01, Min: s / 2, Max: time.Hour}, seconds(40), s},
		{"huge percentile takes the largest", Timeout{Percentile: 99.99, Min: s, Max: time.Hour}, seconds(40), 40 * s},
		{"clamped to min", Timeout{Percentile: 50, Min: 30 * s, Max: time.Hour}, seconds(40), 30 * s},
		{"zero max is unbounded", Timeout{Percentile: 50, Min: s}, seconds(40), 20 * s},
		{"all equal", p90, slices.Repeat([]time.Duration{7 * s}, 25), 7 * s},
		{"zero durations clamp to min", p90, make([]time.Duration, 25), s},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := slices.Clone(c.samples)
			if got := c.timeout.Lease(c.samples); got != c.want {
				t.Errorf("Lease = %v, want %v", got, c.want)
			}
			if !slices.Equal(in, c.samples) {
				t.Errorf("Lease modified its samples")
			}
		})
	}
}
