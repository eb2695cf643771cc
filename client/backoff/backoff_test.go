package backoff_test

import (
	"math"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client/backoff"
)

func TestDelay(t *testing.T) {
	const s = time.Second
	tests := []struct {
		name  string
		p     backoff.Policy
		retry int64
		u     float64
		want  time.Duration
	}{
		{"no retry yet", backoff.Policy{Initial: s}, 0, 0, 0},
		{"zero initial means at once", backoff.Policy{Growth: backoff.Exponential, Max: time.Minute}, 5, 0, 0},
		{"fixed", backoff.Policy{Growth: backoff.Fixed, Initial: s}, 7, 0, s},
		{"zero growth is fixed", backoff.Policy{Initial: s}, 7, 0, s},
		{"linear", backoff.Policy{Growth: backoff.Linear, Initial: s}, 3, 0, 3 * s},
		{"exponential", backoff.Policy{Growth: backoff.Exponential, Initial: s}, 4, 0, 8 * s},
		{"capped", backoff.Policy{Growth: backoff.Exponential, Initial: s, Max: 5 * s}, 4, 0, 5 * s},
		{"jitter low", backoff.Policy{Initial: 10 * s, Jitter: 0.2}, 1, 0, 8 * s},
		{"jitter middle is none", backoff.Policy{Initial: 10 * s, Jitter: 0.2}, 1, 0.5, 10 * s},
		{"jitter high", backoff.Policy{Initial: 10 * s, Jitter: 0.2}, 1, 0.75, 11 * s},
		{"jitter then cap", backoff.Policy{Initial: 10 * s, Max: 10 * s, Jitter: 0.2}, 1, 0.99, 10 * s},
		{"saturates", backoff.Policy{Growth: backoff.Exponential, Initial: s}, 1000, 0, time.Duration(math.MaxInt64)},
		{"linear saturates", backoff.Policy{Growth: backoff.Linear, Initial: time.Hour}, math.MaxInt64, 0, time.Duration(math.MaxInt64)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Delay(tt.retry, tt.u); got != tt.want {
				t.Fatalf("Delay(%d, %v) = %v, want %v", tt.retry, tt.u, got, tt.want)
			}
		})
	}
}

// FuzzDelay: whatever the policy and draw, the delay is within the cap and
// never negative.
func FuzzDelay(f *testing.F) {
	f.Add(uint8(3), int64(time.Second), int64(time.Minute), 0.2, int64(5), 0.3)
	f.Fuzz(func(t *testing.T, g uint8, initial, maxD int64, jitter float64, retry int64, u float64) {
		if jitter < 0 || jitter > 1 || u < 0 || u >= 1 || math.IsNaN(u) || math.IsNaN(jitter) {
			return
		}
		p := backoff.Policy{Growth: backoff.Growth(g % 4), Initial: time.Duration(initial), Max: time.Duration(maxD), Jitter: jitter}
		d := p.Delay(retry, u)
		if d < 0 || (p.Max > 0 && d > p.Max) {
			t.Fatalf("%+v Delay(%d, %v) = %v", p, retry, u, d)
		}
	})
}
