package bench_test

import (
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/internal/bench"
)

// TestRun runs every mode on a small scale: each must complete every
// instance, report every step once and produce figures that JSON can
// carry. Timing is printed, not asserted.
func TestRun(t *testing.T) {
	for _, mode := range bench.Modes {
		t.Run(mode, func(t *testing.T) {
			r, err := bench.Run(t.Context(), bench.Config{
				Mode: mode, Instances: 60, Workers: 8, Batch: 4, Baseline: 50 * time.Millisecond,
				Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s", r)
			if r.Completed != 60 || r.Steps != 180 {
				t.Fatalf("completed %d instances in %d steps, want 60 in 180", r.Completed, r.Steps)
			}
			if r.ReadyCalls == 0 || r.ReadyCalls > r.Steps {
				t.Fatalf("%d Ready calls for %d steps", r.ReadyCalls, r.Steps)
			}
			if r.StepsPerS <= 0 || r.BaselinePairsPerS <= 0 || r.CommitsPerS <= 0 || r.FsyncsPerS != 2*r.CommitsPerS {
				t.Fatalf("figures missing: %+v", r)
			}
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			var back map[string]any
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"steps_per_s", "baseline_pairs_per_s", "ratio", "p50_ms", "p99_ms"} {
				if _, ok := back[k].(float64); !ok {
					t.Errorf("JSON has no number %q: %s", k, b)
				}
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []bench.Config{{Mode: "fast"}, {Instances: -1}, {Workers: -1}, {Batch: 257}, {Baseline: -time.Second}} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", c)
		}
	}
	if err := (bench.Config{}).Validate(); err != nil {
		t.Errorf("zero Config: %v", err)
	}
}
