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
			if r.Nodes != 1 || r.Via != "" {
				t.Fatalf("nodes %d via %q, want 1 and none", r.Nodes, r.Via)
			}
			for _, k := range []string{"steps_per_s", "baseline_pairs_per_s", "ratio", "p50_ms", "p99_ms", "nodes"} {
				if _, ok := back[k].(float64); !ok {
					t.Errorf("JSON has no number %q: %s", k, b)
				}
			}
		})
	}
}

// TestRunCluster runs a cluster of three servers in process, with the load
// through every server (the followers forward) and through the leader
// only: every instance completes on the cluster's one log, and the leader's
// store counts the commits.
func TestRunCluster(t *testing.T) {
	for _, tc := range []struct{ mode, via string }{{bench.ModePerCall, bench.ViaAll}, {bench.ModeRefill, bench.ViaAll}, {bench.ModePerCall, bench.ViaLeader}} {
		t.Run(tc.mode+"/"+tc.via, func(t *testing.T) {
			r, err := bench.Run(t.Context(), bench.Config{
				Mode: tc.mode, Nodes: 3, Via: tc.via, Instances: 30, Workers: 6, Batch: 4, Baseline: 50 * time.Millisecond,
				Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s", r)
			if r.Completed != 30 || r.Steps != 90 || r.Nodes != 3 || r.Via != tc.via {
				t.Fatalf("completed %d instances in %d steps on %d nodes via %q, want 30 in 90 on 3 via %q", r.Completed, r.Steps, r.Nodes, r.Via, tc.via)
			}
			if r.CommitsPerS <= 0 {
				t.Fatalf("no commits counted on the leader: %+v", r)
			}
			one := r
			one.StepsPerS = 2 * r.StepsPerS
			r.Compare(one)
			if r.VsOneNode != 0.5 {
				t.Fatalf("VsOneNode %v, want 0.5", r.VsOneNode)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []bench.Config{{Mode: "fast"}, {Instances: -1}, {Workers: -1}, {Batch: 257}, {Baseline: -time.Second}, {Nodes: -1}, {Nodes: 3, Addr: "127.0.0.1:1"}, {Via: "followers"}} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", c)
		}
	}
	if err := (bench.Config{}).Validate(); err != nil {
		t.Errorf("zero Config: %v", err)
	}
}
