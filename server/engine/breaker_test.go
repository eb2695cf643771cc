package engine_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/internal/clock"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

const flakyYAML = `
id: flaky
nodes:
  work:
    start: true
    timeout: 10s
    retry: {backoff: fixed, initial: 1s, jitter: 0}
    transitions:
      ok: done
      error: work
  done: {final: true}
`

// TestBreakerOpensAndCloses drives a burst of failed attempts of one
// machine: the breaker opens, later retries wait the extra delay (error
// edges and lease timeouts alike), the flip is in the changelog and in
// GetMachine; successes then close it and retries are quick again.
func TestBreakerOpensAndCloses(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	e, st := openLearner(t, filepath.Join(t.TempDir(), "dfsmr.db"), clk)
	if _, _, err := e.DefineMachine(ctx, "flaky.yaml", []byte(flakyYAML), "test"); err != nil {
		t.Fatal(err)
	}
	const n = fsm.BreakerMinOutcomes + 10
	for i := range n {
		if _, _, err := e.StartInstance(ctx, engine.StartArgs{ID: fmt.Sprintf("f-%02d", i), Machine: "flaky"}); err != nil {
			t.Fatal(err)
		}
	}
	// attempt leases the next READY instance and reports transition; it
	// returns the instance after the report.
	attempt := func(transition string) fsm.Instance {
		t.Helper()
		if _, err := e.ProcessDue(ctx); err != nil {
			t.Fatal(err)
		}
		in, ok, err := e.Ready(ctx, engine.ReadyArgs{Worker: "w", Machine: "flaky"})
		if err != nil || !ok {
			t.Fatalf("Ready = %v, %v", ok, err)
		}
		out, err := e.Transition(ctx, engine.TransitionArgs{ID: in.ID, Token: in.Lease.Token, Transition: transition})
		if err != nil {
			t.Fatalf("%s %s: %v", in.ID, transition, err)
		}
		return out
	}
	breaker := func() fsm.Breaker {
		t.Helper()
		info, _, err := e.GetMachine(ctx, "flaky", 0)
		if err != nil {
			t.Fatal(err)
		}
		return info.Breaker
	}
	breakerChanges := func() []fsm.Change {
		t.Helper()
		var out []fsm.Change
		err := st.View(ctx, func(tx store.ReadTx) error {
			out = out[:0]
			all, err := tx.Changes(1, 10000)
			for _, c := range all {
				if c.Kind == fsm.ChangeBreakerOpened || c.Kind == fsm.ChangeBreakerClosed {
					out = append(out, c)
				}
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	// The burst: every attempt fails. Until the breaker opens, retries
	// wait the node's 1s backoff alone.
	for i := range fsm.BreakerMinOutcomes {
		out := attempt("error")
		if want := clk.Now().Add(time.Second); !out.DueAt.Equal(want) {
			t.Fatalf("failure %d: due %v, want %v (no extra delay yet)", i+1, out.DueAt, want)
		}
		if got := breaker().Open; got != (i+1 == fsm.BreakerMinOutcomes) {
			t.Fatalf("after %d failures breaker open = %v", i+1, got)
		}
	}
	b := breaker()
	if b.State() != fsm.BreakerOpen || b.FailureShare() != 1 || !b.OpenedAt.Equal(clk.Now()) || b.ExtraDelay(fsm.BreakerPolicy{}) != fsm.BreakerDelay {
		t.Fatalf("breaker after the burst: %+v", b)
	}
	cs := breakerChanges()
	if len(cs) != 1 || cs[0].Kind != fsm.ChangeBreakerOpened || cs[0].Machine != "flaky" || cs[0].Instance != "" ||
		cs[0].Actor != engine.SystemActor || cs[0].Reason == "" {
		t.Fatalf("breaker changes after the burst: %+v", cs)
	}

	// Open: a failed attempt's retry waits the extra delay too.
	if out := attempt("error"); !out.DueAt.Equal(clk.Now().Add(time.Second + fsm.BreakerDelay)) {
		t.Fatalf("retry while open: due %v, want now+1s+%v", out.DueAt, fsm.BreakerDelay)
	}
	// So does the retry after a lease timeout.
	if _, err := e.ProcessDue(ctx); err != nil {
		t.Fatal(err)
	}
	in, ok, err := e.Ready(ctx, engine.ReadyArgs{Worker: "w", Machine: "flaky"})
	if err != nil || !ok {
		t.Fatalf("Ready = %v, %v", ok, err)
	}
	clk.Set(in.Lease.ExpiresAt)
	if _, err := e.ProcessDue(ctx); err != nil {
		t.Fatal(err)
	}
	timedOut, err := e.GetInstance(ctx, in.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := in.Lease.ExpiresAt.Add(time.Second + fsm.BreakerDelay); timedOut.Status != fsm.StatusWaiting || !timedOut.DueAt.Equal(want) {
		t.Fatalf("after a timeout while open: %s due %v, want WAITING due %v", timedOut.Status, timedOut.DueAt, want)
	}
	if got := breaker().FailureShare(); got != 1 {
		t.Fatalf("timeout not counted as a failure: share %v", got)
	}

	// Attempts succeed again: the breaker closes after a streak.
	for i := range fsm.BreakerCloseStreak {
		if out := attempt("ok"); out.Node != "done" {
			t.Fatalf("success %d: %+v", i+1, out)
		}
		if got := breaker().Open; got != (i+1 < fsm.BreakerCloseStreak) {
			t.Fatalf("after %d successes breaker open = %v", i+1, got)
		}
	}
	if b := breaker(); b != (fsm.Breaker{}) {
		t.Fatalf("closed breaker keeps %+v, want a fresh window", b)
	}
	cs = breakerChanges()
	if len(cs) != 2 || cs[1].Kind != fsm.ChangeBreakerClosed || cs[1].Machine != "flaky" || cs[1].Instance != "" {
		t.Fatalf("breaker changes after recovery: %+v", cs)
	}
	if out := attempt("error"); !out.DueAt.Equal(clk.Now().Add(time.Second)) {
		t.Fatalf("retry after closing: due %v, want now+1s", out.DueAt)
	}
}

// quickBreakerYAML sets its own breaker: it opens when 4 of at least 4
// recent attempts (of 8) fail, waits 2s more, and closes after 2
// successes in a row.
const quickBreakerYAML = `
id: quick
breaker: {window: 8, min_outcomes: 4, open_share: 1, close_share: 0, close_streak: 2, delay: 2s}
nodes:
  work:
    start: true
    timeout: 10s
    retry: {backoff: fixed, initial: 1s, jitter: 0}
    transitions: {ok: done, error: work}
  done: {final: true}
`

// TestBreakerMachinePolicy runs a machine whose breaker block sets its own
// thresholds and delay: the breaker opens at the 4th failure, not the
// 20th; retries then wait 2s more, not 30s; two successes close it; and a
// later version with breaker: off stops the extra delay at once and closes
// it at the next outcome.
func TestBreakerMachinePolicy(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	e, _ := openLearner(t, filepath.Join(t.TempDir(), "dfsmr.db"), clk)
	if _, _, err := e.DefineMachine(ctx, "quick.yaml", []byte(quickBreakerYAML), "test"); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, _, err := e.StartInstance(ctx, engine.StartArgs{ID: fmt.Sprintf("q-%02d", i), Machine: "quick"}); err != nil {
			t.Fatal(err)
		}
	}
	attempt := func(transition string) fsm.Instance {
		t.Helper()
		if _, err := e.ProcessDue(ctx); err != nil {
			t.Fatal(err)
		}
		in, ok, err := e.Ready(ctx, engine.ReadyArgs{Worker: "w", Machine: "quick"})
		if err != nil || !ok {
			t.Fatalf("Ready = %v, %v", ok, err)
		}
		out, err := e.Transition(ctx, engine.TransitionArgs{ID: in.ID, Token: in.Lease.Token, Transition: transition})
		if err != nil {
			t.Fatalf("%s %s: %v", in.ID, transition, err)
		}
		return out
	}
	open := func() bool {
		t.Helper()
		info, _, err := e.GetMachine(ctx, "quick", 0)
		if err != nil {
			t.Fatal(err)
		}
		return info.Breaker.Open
	}
	for i := range 4 {
		attempt("error")
		if got := open(); got != (i == 3) {
			t.Fatalf("after %d failures breaker open = %v", i+1, got)
		}
	}
	if out := attempt("error"); !out.DueAt.Equal(clk.Now().Add(3 * time.Second)) {
		t.Fatalf("retry while open: due %v, want now+1s+2s", out.DueAt)
	}
	attempt("ok")
	if !open() {
		t.Fatal("one success closed a breaker that needs two")
	}
	attempt("ok")
	if open() {
		t.Fatal("two successes left the breaker open")
	}

	// Open it again, then define a version with the breaker off.
	for range 4 {
		attempt("error")
	}
	if !open() {
		t.Fatal("breaker did not reopen")
	}
	off := strings.Replace(quickBreakerYAML, "breaker: {window: 8, min_outcomes: 4, open_share: 1, close_share: 0, close_streak: 2, delay: 2s}", "breaker: off", 1)
	if _, _, err := e.DefineMachine(ctx, "quick.yaml", []byte(off), "test"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.StartInstance(ctx, engine.StartArgs{ID: "q-off", Machine: "quick"}); err != nil {
		t.Fatal(err)
	}
	// Every instance started so far runs version 1; drain them first.
	for {
		if _, err := e.ProcessDue(ctx); err != nil {
			t.Fatal(err)
		}
		in, ok, err := e.Ready(ctx, engine.ReadyArgs{Worker: "w", Machine: "quick"})
		if err != nil || !ok {
			_ = e.ListInstances(ctx, store.InstanceFilter{}, "", func(in fsm.Instance) bool {
				t.Logf("%s v%d %s %s due %v", in.ID, in.Version, in.Node, in.Status, in.DueAt)
				return true
			})
			t.Fatalf("Ready = %v, %v at %v", ok, err, clk.Now())
		}
		if in.Version == 1 {
			if _, err := e.CancelInstance(ctx, in.ID, "test", "op"); err != nil {
				t.Fatal(err)
			}
			continue
		}
		out, err := e.Transition(ctx, engine.TransitionArgs{ID: in.ID, Token: in.Lease.Token, Transition: "error"})
		if err != nil {
			t.Fatal(err)
		}
		if !out.DueAt.Equal(clk.Now().Add(time.Second)) {
			t.Fatalf("retry with the breaker off: due %v, want now+1s", out.DueAt)
		}
		break
	}
	if open() {
		t.Fatal("breaker: off left the breaker open")
	}
}

// TestStatsCountRetries counts a retry for an error edge back into the node
// and for a lease timeout, and none for a success, for the attempt that
// uses up the retries, or for a repeated report.
func TestStatsCountRetries(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	e, _ := openLearner(t, filepath.Join(t.TempDir(), "dfsmr.db"), clk)
	const src = `
id: thrice
nodes:
  work:
    start: true
    timeout: 10s
    retry: {max_attempts: 3, backoff: fixed, initial: 1s, jitter: 0}
    transitions: {ok: done, error: work}
  done: {final: true}
`
	if _, _, err := e.DefineMachine(ctx, "thrice.yaml", []byte(src), "test"); err != nil {
		t.Fatal(err)
	}
	lease := func() fsm.Instance {
		t.Helper()
		if _, err := e.ProcessDue(ctx); err != nil {
			t.Fatal(err)
		}
		in, ok, err := e.Ready(ctx, engine.ReadyArgs{Worker: "w", Machine: "thrice"})
		if err != nil || !ok {
			t.Fatalf("Ready = %v, %v", ok, err)
		}
		return in
	}
	report := func(in fsm.Instance, transition, requestID string) fsm.Instance {
		t.Helper()
		out, err := e.Transition(ctx, engine.TransitionArgs{ID: in.ID, Token: in.Lease.Token, Transition: transition, RequestID: requestID})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	retries := func(want uint64, after string) {
		t.Helper()
		if got := e.Stats().Retries; got != want {
			t.Fatalf("after %s: %d retries, want %d", after, got, want)
		}
	}
	start := func(id string) {
		t.Helper()
		if _, _, err := e.StartInstance(ctx, engine.StartArgs{ID: id, Machine: "thrice"}); err != nil {
			t.Fatal(err)
		}
	}
	start("a")
	in := lease()
	report(in, "error", "r1")
	retries(1, "an error edge")
	report(in, "error", "r1")
	retries(1, "the same report repeated")
	clk.Advance(time.Second)
	in = lease()
	clk.Set(in.Lease.ExpiresAt)
	if _, err := e.ProcessDue(ctx); err != nil {
		t.Fatal(err)
	}
	retries(2, "a lease timeout")
	clk.Advance(time.Second)
	in = lease()
	if out := report(in, "error", ""); out.Node != fsm.NodeFailed {
		t.Fatalf("third failure went to %s, want %s", out.Node, fsm.NodeFailed)
	}
	retries(2, "the failure that used up the retries")
	start("b")
	if out := report(lease(), "ok", ""); out.Node != "done" {
		t.Fatalf("ok went to %s", out.Node)
	}
	retries(2, "a success")
}
