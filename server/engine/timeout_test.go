package engine_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/internal/clock"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
	"github.com/dfsmr/dfsmr/server/store/bolt"
)

const learnerYAML = `
id: learner
nodes:
  work:
    start: true
    timeout: {percentile: 90, min: 1s, max: 1m}
    transitions:
      ok: done
      error: work
      handoff: fixed
  fixed:
    timeout: 30s
    transitions:
      ok: done
  done: {final: true}
`

// learnerTimeout is the work node's timeout as compiled.
var learnerTimeout = fsm.Timeout{Percentile: 90, Min: time.Second, Max: time.Minute}

// openLearner opens (or reopens) the store at path with an engine on clk.
// The engine's due loop is not started: the test runs ProcessDue itself.
func openLearner(t *testing.T, path string, clk clock.Clock) (*engine.Engine, *bolt.Store) {
	t.Helper()
	var e *engine.Engine
	st, err := bolt.Open(path, bolt.Options{NoSync: true, CommitHook: func(c []fsm.Change) { e.OnCommit(c) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e = engine.New(st, engine.Options{Clock: clk, Rand: rand.New(rand.NewPCG(1, 2))})
	return e, st
}

// TestLearnedTimeoutConverges runs leases whose durations are drawn from a
// known distribution and checks that the lease Ready offers converges on
// the distribution's 90th percentile, and survives a restart.
func TestLearnedTimeoutConverges(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	path := filepath.Join(t.TempDir(), "dfsmr.db")
	e, st := openLearner(t, path, clk)
	if _, _, err := e.DefineMachine(ctx, "learner.yaml", []byte(learnerYAML), "test"); err != nil {
		t.Fatal(err)
	}

	n := 0
	// lease starts an instance, leases it and checks that Ready offered
	// want; it returns the instance.
	lease := func(e *engine.Engine, want time.Duration) fsm.Instance {
		t.Helper()
		n++
		id := fmt.Sprintf("i-%03d", n)
		if _, _, err := e.StartInstance(ctx, engine.StartArgs{ID: id, Machine: "learner"}); err != nil {
			t.Fatal(err)
		}
		in, ok, err := e.Ready(ctx, engine.ReadyArgs{Worker: "w", Machine: "learner", Node: "work"})
		if err != nil || !ok || in.ID != id {
			t.Fatalf("Ready = %s, %v, %v; want %s", in.ID, ok, err, id)
		}
		if got := in.Lease.ExpiresAt.Sub(clk.Now()); got != want {
			t.Fatalf("%s: Ready offered a lease of %v, want %v", id, got, want)
		}
		return in
	}
	// work holds the lease for d, heartbeating at half the lease as a
	// worker would (so the lease never expires, which ProcessDue would
	// enforce), then takes transition.
	work := func(e *engine.Engine, in fsm.Instance, d time.Duration, transition string) {
		t.Helper()
		offered := in.Lease.ExpiresAt.Sub(in.Lease.AcquiredAt)
		for left := d; left > 0; {
			step := min(left, offered/2)
			clk.Advance(step)
			left -= step
			if _, err := e.ProcessDue(ctx); err != nil {
				t.Fatal(err)
			}
			if left == 0 {
				break
			}
			exp, err := e.Heartbeat(ctx, in.ID, in.Lease.Token, "")
			if err != nil {
				t.Fatalf("%s: heartbeat: %v", in.ID, err)
			}
			if want := clk.Now().Add(offered); !exp.Equal(want) {
				t.Fatalf("%s: heartbeat extended to %v, want %v", in.ID, exp, want)
			}
		}
		if _, err := e.Transition(ctx, engine.TransitionArgs{ID: in.ID, Token: in.Lease.Token, Transition: transition}); err != nil {
			t.Fatalf("%s: %s: %v", in.ID, transition, err)
		}
	}

	// Lease durations uniform in [lo, hi): the 90th percentile is
	// lo + 0.9*(hi-lo), and the sample 90th percentile of a window of n
	// has a standard deviation of about sqrt(0.9*0.1/n) * (hi-lo).
	const lo, hi = 2 * time.Second, 10 * time.Second
	r := rand.New(rand.NewPCG(20251103, 42))
	var drawn []time.Duration
	for i := range 200 {
		// The model: Min until MinSamples, then the percentile of the
		// window of the most recent samples.
		window := drawn[max(0, len(drawn)-store.MaxDurationSamples):]
		want := learnerTimeout.Lease(window)
		if i < fsm.MinSamples && want != learnerTimeout.Min {
			t.Fatalf("model offers %v before %d samples", want, fsm.MinSamples)
		}
		d := lo + time.Duration(r.Int64N(int64(hi-lo)))
		work(e, lease(e, want), d, "ok")
		drawn = append(drawn, d)
	}

	want := learnerTimeout.Lease(drawn[len(drawn)-store.MaxDurationSamples:])
	p90 := lo + (hi-lo)*9/10
	tol := time.Duration(4 * math.Sqrt(0.9*0.1/store.MaxDurationSamples) * float64(hi-lo))
	if diff := (want - p90).Abs(); diff > tol {
		t.Fatalf("learned %v, %v from the true p90 %v (tolerance %v)", want, diff, p90, tol)
	}
	t.Logf("learned %v; true p90 %v, tolerance %v", want, p90, tol)

	// A failed attempt (an error edge back to the node) teaches nothing,
	// however long it took.
	in := lease(e, want)
	work(e, in, 50*time.Second, "error")
	if _, err := e.CancelInstance(ctx, in.ID, "test done", "test"); err != nil {
		t.Fatal(err)
	}
	// Nor is anything recorded for a node with a fixed timeout.
	in = lease(e, want)
	work(e, in, 3*time.Second, "handoff")
	drawn = append(drawn, 3*time.Second) // leaving work was a success
	in, ok, err := e.Ready(ctx, engine.ReadyArgs{Worker: "w", Machine: "learner", Node: "fixed"})
	if err != nil || !ok || in.Lease.ExpiresAt.Sub(clk.Now()) != 30*time.Second {
		t.Fatalf("Ready fixed = %+v, %v, %v; want a 30s lease", in.Lease, ok, err)
	}
	work(e, in, time.Second, "ok")
	want = learnerTimeout.Lease(drawn[len(drawn)-store.MaxDurationSamples:])
	if err := st.View(ctx, func(tx store.ReadTx) error {
		ds, err := tx.DurationSamples("learner", 1, "fixed")
		if err == nil && len(ds) != 0 {
			t.Errorf("samples recorded for a fixed timeout: %v", ds)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// A new engine on the reopened file offers the same learned lease.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	var exp time.Time
	e, _ = openLearner(t, path, clk)
	in = lease(e, want)
	clk.Advance(time.Second)
	exp, err = e.Heartbeat(ctx, in.ID, in.Lease.Token, "")
	if err != nil || !exp.Equal(clk.Now().Add(want)) {
		t.Fatalf("heartbeat after reopen = %v, %v; want %v", exp, err, clk.Now().Add(want))
	}
}
