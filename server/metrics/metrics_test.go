package metrics_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/internal/clock"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/metrics"
	"github.com/dfsmr/dfsmr/server/store/bolt"
)

const v1 = `id: mix
upgrade_strategy: continue
nodes:
  a:
    start: true
    timeout: 10s
    retry: {max_attempts: 3, backoff: fixed, initial: 1s, jitter: 0}
    transitions:
      ok: b
      error: a
      later: {to: a, delay: 5s}
      hold: {to: held, signal: true}
  held:
    transitions: {release: {to: a, signal: true}}
  b:
    timeout: 10s
    transitions: {ok: done, back: a}
  done: {final: true}
`

// v2 drops node b: an upgrade aborts the instances there.
const v2 = `id: mix
upgrade_strategy: upgrade
nodes:
  a:
    start: true
    timeout: 20s
    transitions: {ok: done, hold: {to: held, signal: true}}
  held:
    transitions: {release: {to: a, signal: true}}
  done: {final: true}
`

// TestCountsFollowCommits drives a seeded random mix of every operation
// (starts, immediate and delayed, leases, success, error and delayed
// transitions, signals, cancels, lease timeouts, wakes, retries used up, an
// upgrade that moves some instances and aborts others) through a real
// engine and store. The counts kept from the commit hook always equal a
// fresh count of the store.
func TestCountsFollowCommits(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	ctx := context.Background()
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	m := metrics.New(metrics.Sources{})
	var e *engine.Engine
	st, err := bolt.Open(filepath.Join(t.TempDir(), "dfsmr.db"), bolt.Options{NoSync: true, CommitHook: func(c []fsm.Change) {
		e.OnCommit(c)
		m.OnCommit(c)
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e = engine.New(st, engine.Options{Clock: clk, Rand: rand.New(rand.NewPCG(seed, 8))})
	if err := m.Load(ctx, st); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.DefineMachine(ctx, "mix.yaml", []byte(v1), "test"); err != nil {
		t.Fatal(err)
	}

	check := func(when string) {
		t.Helper()
		fresh := metrics.New(metrics.Sources{})
		if err := fresh.Load(ctx, st); err != nil {
			t.Fatal(err)
		}
		if got, want := m.Instances(), fresh.Instances(); !maps.Equal(got, want) {
			t.Fatalf("%s: counts kept from commits %v, counted in the store %v", when, got, want)
		}
		// No heartbeats in the mix: a lease's renewal is its grant.
		if got, want := m.Leases(), fresh.Leases(); !maps.EqualFunc(got, want, func(a, b [2]time.Time) bool {
			return a[0].Equal(b[0]) && a[1].Equal(b[1])
		}) {
			t.Fatalf("%s: leases followed from commits %v, read from the store %v", when, got, want)
		}
	}
	var ids []string
	step := func(i int) {
		switch op := rng.IntN(10); {
		case op < 3:
			id := fmt.Sprint("i-", i)
			a := engine.StartArgs{ID: id, Machine: "mix"}
			if rng.IntN(4) == 0 {
				a.Delay = time.Duration(1+rng.IntN(5)) * time.Second
			}
			if _, _, err := e.StartInstance(ctx, a); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		case op < 7:
			in, ok, err := e.Ready(ctx, engine.ReadyArgs{Worker: "w"})
			if err != nil {
				t.Fatal(err)
			}
			if !ok || rng.IntN(5) == 0 {
				return // no work, or left to time out
			}
			names := []string{"ok", "error", "later", "back"}
			tr := names[rng.IntN(len(names))]
			// Illegal transitions for the node are refused without a write.
			_, _ = e.Transition(ctx, engine.TransitionArgs{ID: in.ID, Token: in.Lease.Token, Transition: tr})
		case op < 8 && len(ids) > 0:
			id := ids[rng.IntN(len(ids))]
			name := []string{"hold", "release"}[rng.IntN(2)]
			_, _ = e.SignalInstance(ctx, id, name, nil, "op") // refused unless legal
		case op < 9 && len(ids) > 0:
			_, _ = e.CancelInstance(ctx, ids[rng.IntN(len(ids))], "test", "op") // refused if final
		default:
			clk.Advance(time.Duration(rng.IntN(8)) * time.Second)
			if _, err := e.ProcessDue(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 600 {
		step(i)
		if i%100 == 99 {
			check(fmt.Sprintf("after %d steps", i+1))
		}
	}
	if _, _, err := e.DefineMachine(ctx, "mix.yaml", []byte(v2), "test"); err != nil {
		t.Fatal(err)
	}
	check("after the upgrade")
	for i := 600; i < 800; i++ {
		step(i)
	}
	check("at the end")
	counts := m.Instances()
	t.Logf("final counts: %v", counts)
	if len(counts) < 4 {
		t.Fatalf("the mix reached only %d machine/node/status combinations", len(counts))
	}
}

// TestLeaseAges follows leases through the commit hook: the oldest lease's
// age counts from its grant or last heartbeat, a lease whose expiry passed
// is counted until it is timed out, and a lease that ends is forgotten.
func TestLeaseAges(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	m := metrics.New(metrics.Sources{Now: clk.Now})
	t0 := clk.Now()
	leased := func(id string, kind fsm.ChangeKind, expires time.Time) fsm.Change {
		return fsm.Change{At: clk.Now(), Kind: kind, Instance: id, Machine: "m", FromNode: "a", ToNode: "a",
			FromStatus: fsm.StatusReady, ToStatus: fsm.StatusLeased, DueAt: expires}
	}
	m.OnCommit([]fsm.Change{
		leased("a", fsm.ChangeLeased, t0.Add(10*time.Second)),
		leased("b", fsm.ChangeLeased, time.Time{}), // never expires
	})
	scrape := func() (oldest, past string) {
		t.Helper()
		rec := httptest.NewRecorder()
		m.Handler(false).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		for line := range strings.Lines(rec.Body.String()) {
			if v, ok := strings.CutPrefix(line, "dfsmr_lease_oldest_seconds "); ok {
				oldest = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(line, "dfsmr_leases_past_expiry "); ok {
				past = strings.TrimSpace(v)
			}
		}
		return oldest, past
	}
	if o, p := scrape(); o != "0" || p != "0" {
		t.Fatalf("fresh leases: oldest %s, past expiry %s", o, p)
	}
	clk.Advance(12 * time.Second)
	if o, p := scrape(); o != "12" || p != "1" {
		t.Fatalf("12s later: oldest %s, past expiry %s; want 12 and 1", o, p)
	}
	// a times out (READY again); b heartbeats (never expires).
	m.OnCommit([]fsm.Change{
		{At: clk.Now(), Kind: fsm.ChangeTimedOut, Instance: "a", Machine: "m", FromNode: "a", ToNode: "a",
			FromStatus: fsm.StatusLeased, ToStatus: fsm.StatusReady},
		leased("b", fsm.ChangeHeartbeat, time.Time{}),
	})
	clk.Advance(3 * time.Second)
	if o, p := scrape(); o != "3" || p != "0" {
		t.Fatalf("after a timeout and a heartbeat: oldest %s, past expiry %s; want 3 and 0", o, p)
	}
}
