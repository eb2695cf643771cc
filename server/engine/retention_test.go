package engine_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/internal/clock"
	"github.com/dfsmr/dfsmr/machines"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
	"github.com/dfsmr/dfsmr/server/store/bolt"
)

var retentionStart = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// retentionEngine opens a store in a new directory and an engine on clk
// with retention r and the bundled machines defined. It returns the store
// and the file's path too.
func retentionEngine(t *testing.T, clk clock.Clock, r engine.Retention) (*engine.Engine, *bolt.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dfsmr.db")
	var e *engine.Engine
	st, err := bolt.Open(path, bolt.Options{NoSync: true, CommitHook: func(c []fsm.Change) { e.OnCommit(c) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e = engine.New(st, engine.Options{Clock: clk, Retention: r})
	for _, src := range machines.Bundled() {
		if _, _, err := e.DefineMachine(context.Background(), src.File, src.Data, "test"); err != nil {
			t.Fatal(err)
		}
	}
	return e, st, path
}

func mustStart(t *testing.T, e *engine.Engine, id string) {
	t.Helper()
	if _, _, err := e.StartInstance(context.Background(), engine.StartArgs{ID: id, Machine: "report"}); err != nil {
		t.Fatal(err)
	}
}

func mustCancel(t *testing.T, e *engine.Engine, id string) {
	t.Helper()
	if _, err := e.CancelInstance(context.Background(), id, "done with it", "test"); err != nil {
		t.Fatal(err)
	}
}

func mustSweep(t *testing.T, e *engine.Engine) engine.Swept {
	t.Helper()
	s, err := e.Sweep(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// changelog returns the oldest retained seq (0 when none), the head and
// the number of changes held.
func changelog(t *testing.T, st store.Store) (oldest, head uint64, n int) {
	t.Helper()
	err := st.View(context.Background(), func(tx store.ReadTx) error {
		var err error
		if oldest, _, err = tx.OldestChange(); err != nil {
			return err
		}
		if head, err = tx.Head(); err != nil {
			return err
		}
		cs, err := tx.Changes(0, 0)
		n = len(cs)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return oldest, head, n
}

// TestSweepDeletesChangesPastTheWindow: changes older than
// Retention.Changes go, newer ones stay, and the head does not move.
func TestSweepDeletesChangesPastTheWindow(t *testing.T) {
	clk := clock.NewFake(retentionStart)
	e, st, _ := retentionEngine(t, clk, engine.Retention{Changes: time.Hour})
	mustStart(t, e, "old-1")
	mustStart(t, e, "old-2")
	clk.Advance(30 * time.Minute)
	_, oldHead, _ := changelog(t, st)
	mustStart(t, e, "new-1")
	mustStart(t, e, "new-2")

	if s := mustSweep(t, e); s.Changes != 0 {
		t.Fatalf("nothing is an hour old yet, swept %+v", s)
	}
	clk.Advance(45 * time.Minute) // the first changes are 75 minutes old
	s := mustSweep(t, e)
	oldest, head, n := changelog(t, st)
	if uint64(s.Changes) != oldHead || oldest != oldHead+1 || n != int(head-oldHead) {
		t.Fatalf("swept %+v; changelog oldest %d head %d holds %d; want the %d changes before the window gone", s, oldest, head, n, oldHead)
	}
	if s.Instances != 0 {
		t.Fatalf("finished retention is off, yet %d instances deleted", s.Instances)
	}
	if _, hist, err := history(context.Background(), e, "old-1"); err != nil || len(hist) != 0 {
		t.Fatalf("history of old-1 = %d changes, %v; want none left", len(hist), err)
	}
	if _, hist, err := history(context.Background(), e, "new-1"); err != nil || len(hist) != 1 {
		t.Fatalf("history of new-1 = %d changes, %v; want its start", len(hist), err)
	}
	// A new change takes the next number.
	mustStart(t, e, "new-3")
	if _, h, _ := changelog(t, st); h != head+1 {
		t.Fatalf("head after a new change = %d, want %d", h, head+1)
	}
}

// TestSweepHonoursTheCount: at most ChangesCount changes stay, the newest.
func TestSweepHonoursTheCount(t *testing.T) {
	clk := clock.NewFake(retentionStart)
	e, st, _ := retentionEngine(t, clk, engine.Retention{ChangesCount: 3})
	for i := range 5 {
		mustStart(t, e, fmt.Sprint("r-", i))
	}
	mustSweep(t, e)
	oldest, head, n := changelog(t, st)
	if n != 3 || oldest != head-2 {
		t.Fatalf("changelog oldest %d head %d holds %d, want the newest 3", oldest, head, n)
	}
	if s := mustSweep(t, e); s.Changes != 0 {
		t.Fatalf("a second sweep deleted %+v", s)
	}
}

// TestSweepDeletesFinishedInstancesAfterTheirRetention: a FINAL instance
// goes once Finished has passed since it finished, not before; an instance
// that runs stays however old it is.
func TestSweepDeletesFinishedInstancesAfterTheirRetention(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(retentionStart)
	var deleted []string
	e, st, _ := retentionEngine(t, clk, engine.Retention{Finished: time.Hour, OnDeleted: func(_ int, ins []fsm.Instance) {
		for _, in := range ins {
			deleted = append(deleted, in.ID)
		}
	}})
	mustStart(t, e, "a")
	mustStart(t, e, "b")
	mustStart(t, e, "running")
	mustCancel(t, e, "a")
	clk.Advance(30 * time.Minute)
	mustCancel(t, e, "b")
	clk.Advance(30 * time.Minute)
	if s := mustSweep(t, e); s.Instances != 0 {
		t.Fatalf("a finished exactly an hour ago: swept %+v, want nothing", s)
	}
	clk.Advance(time.Second)
	if s := mustSweep(t, e); s.Instances != 1 || s.Changes != 0 {
		t.Fatalf("swept %+v, want a alone", s)
	}
	if _, err := e.GetInstance(ctx, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetInstance of a deleted instance: %v, want ErrNotFound", err)
	}
	if in, err := e.GetInstance(ctx, "b"); err != nil || in.Status != fsm.StatusFinal {
		t.Fatalf("b, finished 30m ago: %+v, %v", in, err)
	}
	// The changelog keeps a's changes: it has a retention of its own.
	err := st.View(ctx, func(tx store.ReadTx) error {
		cs, err := tx.Changes(0, 0)
		for _, c := range cs {
			if c.Instance == "a" {
				return err
			}
		}
		return fmt.Errorf("a's changes left the changelog (%v)", err)
	})
	if err != nil {
		t.Fatal(err)
	}

	clk.Advance(10 * time.Hour)
	mustSweep(t, e)
	if len(deleted) != 2 || deleted[0] != "a" || deleted[1] != "b" {
		t.Fatalf("deleted %q, want [a b]", deleted)
	}
	if in, err := e.GetInstance(ctx, "running"); err != nil || in.Status != fsm.StatusReady {
		t.Fatalf("the running instance after 11h: %+v, %v", in, err)
	}
	list, err := listInstances(ctx, e, store.InstanceFilter{Machine: "report"})
	if err != nil || len(list) != 1 {
		t.Fatalf("instances of report: %d (%v), want the running one", len(list), err)
	}
	// The id is free again.
	mustStart(t, e, "a")
}

// TestSweepWorksInBatches: a backlog goes in transactions of at most 1000
// deletions, and all of it in one Sweep.
func TestSweepWorksInBatches(t *testing.T) {
	clk := clock.NewFake(retentionStart)
	var batches []int
	e, st, _ := retentionEngine(t, clk, engine.Retention{ChangesCount: 1, OnDeleted: func(n int, _ []fsm.Instance) {
		batches = append(batches, n)
	}})
	err := st.Update(context.Background(), func(tx store.Tx) error {
		for range 2500 {
			if _, err := tx.AppendChange(fsm.Change{At: clk.Now(), Kind: fsm.ChangeMachineDefined, Machine: "report", Version: 1}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, head, _ := changelog(t, st)
	s := mustSweep(t, e)
	if s.Changes != int(head-1) || len(batches) != 3 || batches[0] != 1000 || batches[1] != 1000 {
		t.Fatalf("swept %+v in batches %v, want %d in 1000, 1000, rest", s, batches, head-1)
	}
	if _, _, n := changelog(t, st); n != 1 {
		t.Fatalf("%d changes left, want 1", n)
	}
}

// TestRetentionSweeperRunsOnTheClock: started, the sweeper sweeps every
// Interval of the engine's clock; stopped, it is gone.
func TestRetentionSweeperRunsOnTheClock(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(retentionStart)
	swept := make(chan []fsm.Instance, 1)
	e, _, _ := retentionEngine(t, clk, engine.Retention{Finished: time.Hour, Interval: time.Minute,
		OnDeleted: func(_ int, ins []fsm.Instance) { swept <- ins }})
	mustStart(t, e, "a")
	mustCancel(t, e, "a")
	e.StartRetention(ctx)
	e.StartRetention(ctx) // a second start is a no-op
	clk.Advance(61 * time.Minute)
	if ins := <-swept; len(ins) != 1 || ins[0].ID != "a" {
		t.Fatalf("the sweeper deleted %+v, want a", ins)
	}
	if _, err := e.GetInstance(ctx, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetInstance after the sweep: %v, want ErrNotFound", err)
	}
	if err := e.StopRetention(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.StopRetention(ctx); err != nil {
		t.Fatal(err)
	}
	if n := clk.Timers(); n != 0 {
		t.Fatalf("%d timers left after StopRetention", n)
	}
}

// TestRetentionLevelsDiskUse runs a steady load (every round starts and
// finishes the same number of instances, an hour of the fake clock apart)
// and measures the database file after each round's sweep. With retention
// the file stops growing once a window's worth of data is in it; without,
// the same load keeps growing it.
func TestRetentionLevelsDiskUse(t *testing.T) {
	const rounds, perRound = 20, 100
	run := func(r engine.Retention) []int64 {
		clk := clock.NewFake(retentionStart)
		e, _, path := retentionEngine(t, clk, r)
		ctx := context.Background()
		var sizes []int64
		for round := range rounds {
			for i := range perRound {
				id := fmt.Sprintf("r%02d-%03d", round, i)
				if _, _, err := e.StartInstance(ctx, engine.StartArgs{ID: id, Machine: "report", Params: map[string]string{"url": "https://example.com/" + id}}); err != nil {
					t.Fatal(err)
				}
				for range 2 { // downloadable, uploadable -> completed
					in, ok, err := e.Ready(ctx, engine.ReadyArgs{Worker: "w", Machine: "report"})
					if err != nil || !ok {
						t.Fatalf("ready: %v, %v", ok, err)
					}
					if _, err := e.Transition(ctx, engine.TransitionArgs{ID: in.ID, Token: in.Lease.Token, Transition: "ok"}); err != nil {
						t.Fatal(err)
					}
				}
			}
			clk.Advance(time.Hour)
			mustSweep(t, e)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			sizes = append(sizes, fi.Size())
		}
		return sizes
	}

	kept := run(engine.Retention{Changes: 2 * time.Hour, Finished: 2 * time.Hour})
	t.Logf("file size after each round, retention 2h: %v", kept)
	// The window holds two rounds: from round 5 on, the file is as large
	// as it gets (bbolt reuses the pages retention frees).
	plateau := kept[4]
	for i, sz := range kept[5:] {
		if sz > plateau+plateau/10 {
			t.Errorf("round %d: file %d bytes, grew past the plateau of %d", i+6, sz, plateau)
		}
	}

	grown := run(engine.Retention{})
	t.Logf("file size after each round, no retention: %v", grown)
	if last := grown[len(grown)-1]; last < 2*kept[len(kept)-1] {
		t.Errorf("without retention the file ends at %d bytes, not clearly above %d with it: the load is too light to show anything", last, kept[len(kept)-1])
	}
}
