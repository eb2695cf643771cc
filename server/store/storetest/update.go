package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// bump reads instance id (creating it when missing), increments its Rev and
// appends a change for it. It returns the change's sequence number.
func bump(tx store.Tx, id string) (uint64, error) {
	in, err := tx.Instance(id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		in = inst(id, "m", "n", fsm.StatusReady, 0, base)
		in.Rev = 0
	case err != nil:
		return 0, err
	}
	in.Rev++
	in.Attempt = int32(in.Rev)
	if err := tx.PutInstance(in); err != nil {
		return 0, err
	}
	c := change(id, fsm.ChangeTransitioned, "")
	c.Attempt = int32(in.Rev)
	return tx.AppendChange(c)
}

// parallel runs fn(i) for i in [0, n) on n goroutines and waits.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { fn(i) })
	}
	wg.Wait()
}

func (s *suite) update(t *testing.T) {
	t.Run("FunctionError", func(t *testing.T) {
		st := s.fresh(t)
		wrapped := fmt.Errorf("wrapped: %w", errBoom)
		// A failure without writes, and one after reads.
		if err := st.Update(ctx, func(tx store.Tx) error { return wrapped }); !errors.Is(err, errBoom) {
			t.Fatalf("Update = %v, want the function's error", err)
		}
		err := st.Update(ctx, func(tx store.Tx) error {
			if _, err := tx.Instance("none"); !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("unexpected: %w", err)
			}
			return wrapped
		})
		if !errors.Is(err, errBoom) {
			t.Fatalf("Update = %v, want the function's error", err)
		}
		if h := head(t, st); h != 0 {
			t.Fatalf("head %d after failed updates", h)
		}
	})

	t.Run("Panic", func(t *testing.T) {
		st := s.fresh(t)
		for _, wr := range []bool{false, true} {
			err := st.Update(ctx, func(tx store.Tx) error {
				if wr {
					if _, err := bump(tx, "p"); err != nil {
						return err
					}
				}
				panic("kaboom")
			})
			if err == nil {
				t.Fatalf("panicking update (wrote %v) succeeded", wr)
			}
		}
		// An invariant panic stays recognisable.
		err := st.Update(ctx, func(tx store.Tx) error {
			panic(&fsm.InvariantError{Msg: "test"})
		})
		if !isInvariant(err) {
			t.Errorf("panic with *fsm.InvariantError gave %v", err)
		}
		equal(t, "changes", nonNil(listChanges(t, st, 0, 0)), []fsm.Change{})
		// The store still works.
		update(t, st, func(tx store.Tx) error { _, err := bump(tx, "p"); return err })
		checkGapFree(t, st)
	})

	t.Run("PanicAndFailureAmongConcurrent", func(t *testing.T) {
		st := s.fresh(t)
		const n = 48
		errs := make([]error, n)
		parallel(n, func(i int) {
			errs[i] = st.Update(ctx, func(tx store.Tx) error {
				if _, err := bump(tx, fmt.Sprintf("c%02d", i)); err != nil {
					return err
				}
				switch i % 4 {
				case 1:
					panic(fmt.Sprintf("panic %d", i))
				case 2:
					return errBoom
				}
				return nil
			})
		})
		var ok int
		for i, err := range errs {
			id := fmt.Sprintf("c%02d", i)
			exists := true
			view(t, st, func(tx store.ReadTx) error {
				_, err := tx.Instance(id)
				exists = err == nil
				return nil
			})
			switch i % 4 {
			case 1, 2:
				if err == nil || exists {
					t.Errorf("update %d: err %v, instance exists %v; want an error and no instance", i, err, exists)
				}
				if i%4 == 2 && !errors.Is(err, errBoom) {
					t.Errorf("update %d: err %v, want errBoom", i, err)
				}
			default:
				ok++
				if err != nil || !exists {
					t.Errorf("update %d: err %v, instance exists %v; want success", i, err, exists)
				}
			}
		}
		cs := checkGapFree(t, st)
		if len(cs) != ok {
			t.Errorf("%d changes for %d successful updates", len(cs), ok)
		}
	})

	t.Run("CanceledContext", func(t *testing.T) {
		st := s.fresh(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		ran := false
		err := st.Update(cctx, func(tx store.Tx) error {
			ran = true
			_, err := bump(tx, "x")
			return err
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Update with a cancelled context = %v", err)
		}
		if err := st.View(cctx, func(tx store.ReadTx) error { return nil }); !errors.Is(err, context.Canceled) {
			t.Errorf("View with a cancelled context = %v", err)
		}
		_ = ran // running fn is allowed, committing it is not
		if h := head(t, st); h != 0 {
			t.Fatalf("head %d after a cancelled update", h)
		}
		view(t, st, func(tx store.ReadTx) error {
			if _, err := tx.Instance("x"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("instance of a cancelled update: %v", err)
			}
			return nil
		})
	})

	t.Run("Concurrent", func(t *testing.T) {
		st := s.fresh(t)
		workers, ops := 64, 50
		if testing.Short() {
			workers, ops = 16, 20
		}
		var mu sync.Mutex
		acked := map[uint64]string{}
		errs := make([]error, workers)
		parallel(workers, func(w int) {
			id := fmt.Sprintf("w%02d", w)
			for range ops {
				var seq uint64
				err := st.Update(ctx, func(tx store.Tx) error {
					var err error
					seq, err = bump(tx, id)
					return err
				})
				if err != nil {
					errs[w] = err
					return
				}
				mu.Lock()
				if prev, dup := acked[seq]; dup {
					errs[w] = fmt.Errorf("seq %d acknowledged to %s and %s", seq, prev, id)
				}
				acked[seq] = id
				mu.Unlock()
			}
		})
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		cs := checkGapFree(t, st)
		if len(cs) != workers*ops {
			t.Fatalf("%d changes, want %d", len(cs), workers*ops)
		}
		for _, c := range cs {
			if acked[c.Seq] != c.Instance {
				t.Fatalf("change %d is of %q, acknowledged to %q", c.Seq, c.Instance, acked[c.Seq])
			}
		}
		for w := range workers {
			id := fmt.Sprintf("w%02d", w)
			if in := getInstance(t, st, id); in.Rev != uint64(ops) {
				t.Errorf("%s has rev %d, want %d", id, in.Rev, ops)
			}
			h := history(t, st, id)
			if len(h) != ops {
				t.Fatalf("history of %s has %d entries", id, len(h))
			}
			for i, c := range h {
				if c.Attempt != int32(i+1) || (i > 0 && c.Seq <= h[i-1].Seq) {
					t.Fatalf("history of %s out of order at %d: %+v", id, i, c)
				}
			}
		}
	})

	t.Run("ReadYourWrites", func(t *testing.T) {
		st := s.fresh(t)
		appendChanges(t, st, change("old", fsm.ChangeStarted, ""))
		update(t, st, func(tx store.Tx) error {
			if err := tx.PutMachine(machine("m", 1)); err != nil {
				return err
			}
			if m, err := tx.Machine("m", 0); err != nil || m.Version != 1 {
				return fmt.Errorf("machine not visible: %+v, %v", m, err)
			}
			in := inst("a", "m", "n", fsm.StatusReady, 0, base)
			if err := tx.PutInstance(in); err != nil {
				return err
			}
			got, err := tx.Instance("a")
			if err != nil {
				return fmt.Errorf("instance not visible: %w", err)
			}
			equal(t, "instance in tx", got, norm(in))
			if ids, err := tx.Ready(store.ReadyFilter{Machine: "m", Node: "n"}, 10); err != nil || !slices.Equal(ids, []string{"a"}) {
				return fmt.Errorf("ready in tx: %v, %v", ids, err)
			}
			in.Status = fsm.StatusWaiting
			if err := tx.PutInstance(in); err != nil {
				return err
			}
			if ids, err := tx.Ready(store.ReadyFilter{}, 10); err != nil || len(ids) != 0 {
				return fmt.Errorf("ready in tx after WAITING: %v, %v", ids, err)
			}
			if d, ok, err := tx.NextDue(); err != nil || !ok || d.ID != "a" {
				return fmt.Errorf("due in tx: %+v, %v, %v", d, ok, err)
			}
			seq, err := tx.AppendChange(change("a", fsm.ChangeStarted, ""))
			if err != nil {
				return err
			}
			if h, err := tx.Head(); err != nil || h != seq || seq != 2 {
				return fmt.Errorf("head in tx: %d, %v; seq %d", h, err, seq)
			}
			if cs, err := tx.Changes(seq, 0); err != nil || len(cs) != 1 || cs[0].Seq != seq {
				return fmt.Errorf("changes in tx: %+v, %v", cs, err)
			}
			if cs, err := tx.History("a"); err != nil || len(cs) != 1 {
				return fmt.Errorf("history in tx: %+v, %v", cs, err)
			}
			return nil
		})
	})

	t.Run("ViewSeesCommittedOnly", func(t *testing.T) {
		st := s.fresh(t)
		put(t, st, inst("a", "m", "n", fsm.StatusReady, 0, base))
		inside, release := make(chan struct{}), make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- st.Update(ctx, func(tx store.Tx) error {
				if _, err := bump(tx, "b"); err != nil {
					return err
				}
				in, err := tx.Instance("a")
				if err != nil {
					return err
				}
				in.Status = fsm.StatusFinal
				if err := tx.PutInstance(in); err != nil {
					return err
				}
				select {
				case <-inside:
				default:
					close(inside)
				}
				<-release
				return nil
			})
		}()
		<-inside
		view(t, st, func(tx store.ReadTx) error {
			if _, err := tx.Instance("b"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("View sees an uncommitted instance: %v", err)
			}
			if in, err := tx.Instance("a"); err != nil || in.Status != fsm.StatusReady {
				t.Errorf("View sees an uncommitted status: %v, %v", in.Status, err)
			}
			if h, err := tx.Head(); err != nil || h != 0 {
				t.Errorf("View sees uncommitted head %d, %v", h, err)
			}
			return nil
		})
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if in := getInstance(t, st, "a"); in.Status != fsm.StatusFinal {
			t.Errorf("after commit: status %v", in.Status)
		}
		if h := head(t, st); h != 1 {
			t.Errorf("after commit: head %d", h)
		}
	})

	t.Run("TxNotUsableAfterReturn", func(t *testing.T) {
		st := s.fresh(t)
		var kept store.Tx
		update(t, st, func(tx store.Tx) error { kept = tx; return nil })
		var keptRead store.ReadTx
		view(t, st, func(tx store.ReadTx) error { keptRead = tx; return nil })
		if err := kept.PutInstance(inst("a", "m", "n", fsm.StatusReady, 0, base)); err == nil {
			t.Error("PutInstance on a finished transaction succeeded")
		}
		if _, err := keptRead.Head(); err == nil {
			t.Error("Head on a finished read transaction succeeded")
		}
	})
}

// hookRecorder is a CommitHook that remembers what it received.
type hookRecorder struct {
	mu      sync.Mutex
	calls   int
	changes []fsm.Change
	seen    map[uint64]bool
}

func newHookRecorder() *hookRecorder { return &hookRecorder{seen: map[uint64]bool{}} }

func (h *hookRecorder) hook(cs []fsm.Change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	for _, c := range cs {
		h.changes = append(h.changes, c)
		h.seen[c.Seq] = true
	}
}

func (h *hookRecorder) has(seq uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen[seq]
}

func (s *suite) commitHook(t *testing.T) {
	t.Run("EveryChangeOnceInOrder", func(t *testing.T) {
		rec := newHookRecorder()
		st, _ := s.mustOpen(t, Config{Hook: rec.hook})
		const workers, ops = 16, 10
		errs := make([]error, workers)
		parallel(workers, func(w int) {
			for i := range ops {
				var seqs []uint64
				fail := (w+i)%5 == 0
				err := st.Update(ctx, func(tx store.Tx) error {
					seqs = seqs[:0]
					for k := range 1 + i%3 {
						reason := "ok"
						if fail {
							reason = "fail"
						}
						c := change(fmt.Sprintf("h%d", w), fsm.ChangeTransitioned, reason)
						c.Attempt = int32(k)
						seq, err := tx.AppendChange(c)
						if err != nil {
							return err
						}
						seqs = append(seqs, seq)
					}
					if fail {
						return errBoom
					}
					return nil
				})
				switch {
				case fail && !errors.Is(err, errBoom):
					errs[w] = fmt.Errorf("failing update returned %v", err)
				case !fail && err != nil:
					errs[w] = err
				case !fail:
					// The hook ran before Update returned.
					for _, seq := range seqs {
						if !rec.has(seq) {
							errs[w] = fmt.Errorf("Update returned before the hook saw seq %d", seq)
						}
					}
				}
				if errs[w] != nil {
					return
				}
			}
		})
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		cs := checkGapFree(t, st)
		rec.mu.Lock()
		defer rec.mu.Unlock()
		equal(t, "hook changes", normChanges(rec.changes), cs)
		for _, c := range rec.changes {
			if c.Reason == "fail" {
				t.Fatalf("hook received change %d of a failed update", c.Seq)
			}
		}
		if rec.calls == 0 || rec.calls > len(cs) {
			t.Errorf("hook called %d times for %d changes", rec.calls, len(cs))
		}
	})

	t.Run("NotCalledWithoutChanges", func(t *testing.T) {
		rec := newHookRecorder()
		st, _ := s.mustOpen(t, Config{Hook: rec.hook})
		put(t, st, inst("a", "m", "n", fsm.StatusReady, 0, base))
		_ = st.Update(ctx, func(tx store.Tx) error { return errBoom })
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.changes) != 0 {
			t.Errorf("hook received %d changes", len(rec.changes))
		}
	})
}

func (s *suite) close(t *testing.T) {
	t.Run("Idempotent", func(t *testing.T) {
		st := s.fresh(t)
		put(t, st, inst("a", "m", "n", fsm.StatusReady, 0, base))
		for i := range 3 {
			if err := st.Close(); err != nil {
				t.Fatalf("close %d: %v", i, err)
			}
		}
		if err := st.Update(ctx, func(tx store.Tx) error { return nil }); !errors.Is(err, store.ErrClosed) {
			t.Errorf("Update after Close = %v, want ErrClosed", err)
		}
		if err := st.View(ctx, func(tx store.ReadTx) error { return nil }); !errors.Is(err, store.ErrClosed) {
			t.Errorf("View after Close = %v, want ErrClosed", err)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		st := s.fresh(t)
		errs := make([]error, 8)
		parallel(len(errs), func(i int) { errs[i] = st.Close() })
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("WithPendingUpdates", func(t *testing.T) {
		st, cfg := s.mustOpen(t, Config{})
		const workers = 16
		acked := make([][]uint64, workers)
		errs := make([]error, workers)
		started := make(chan struct{}, workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				id := fmt.Sprintf("w%02d", w)
				for i := 0; ; i++ {
					if i == 2 {
						started <- struct{}{}
					}
					var seq uint64
					err := st.Update(ctx, func(tx store.Tx) error {
						var err error
						seq, err = bump(tx, id)
						return err
					})
					if err != nil {
						if !errors.Is(err, store.ErrClosed) {
							errs[w] = err
						}
						return
					}
					acked[w] = append(acked[w], seq)
				}
			})
		}
		for range workers {
			<-started
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("updates racing Close failed with something else than ErrClosed: %v", err)
		}
		st, _ = s.mustOpen(t, cfg)
		cs := checkGapFree(t, st)
		total := 0
		for w, seqs := range acked {
			total += len(seqs)
			id := fmt.Sprintf("w%02d", w)
			for _, seq := range seqs {
				if cs[seq-1].Instance != id {
					t.Fatalf("acknowledged change %d of %s is of %q", seq, id, cs[seq-1].Instance)
				}
			}
			if in := getInstance(t, st, id); in.Rev != uint64(len(seqs)) {
				t.Errorf("%s: rev %d, %d updates acknowledged", id, in.Rev, len(seqs))
			}
		}
		if total != len(cs) {
			t.Errorf("%d acknowledged, %d in the changelog", total, len(cs))
		}
	})
}

func (s *suite) reopen(t *testing.T) {
	st, cfg := s.mustOpen(t, Config{})
	putMachines(t, st, machine("m", 1), machine("m", 2), machine("n", 1))
	leased := fullInstance("l")
	put(t, st,
		leased,
		inst("r", "m", "a", fsm.StatusReady, 3, base),
		inst("r2", "m", "b", fsm.StatusReady, -3, base),
		inst("w", "n", "a", fsm.StatusWaiting, 0, base.Add(time.Hour)),
		inst("f", "n", "z", fsm.StatusFinal, 0, base),
	)
	for i := range 5 {
		appendChanges(t, st, change([]string{"l", "r", ""}[i%3], fsm.ChangeStarted, fmt.Sprint(i)))
	}
	// A failed update right before close must not show up after reopen.
	_ = st.Update(ctx, func(tx store.Tx) error {
		_, _ = bump(tx, "ghost")
		return errBoom
	})
	before := snapshot(t, st)

	st = s.reopenStore(t, st, cfg)
	equal(t, "after reopen", snapshot(t, st), before)
	equal(t, "sequence continues", appendChanges(t, st, change("r", fsm.ChangeLeased, "")), []uint64{6})

	st = s.reopenStore(t, st, cfg)
	checkGapFree(t, st)
	if h := head(t, st); h != 6 {
		t.Fatalf("head after second reopen = %d", h)
	}
}
