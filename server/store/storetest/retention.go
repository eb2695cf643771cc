package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

func oldest(t testing.TB, st store.Store) (uint64, bool) {
	t.Helper()
	var seq uint64
	var ok bool
	view(t, st, func(tx store.ReadTx) error {
		var err error
		seq, ok, err = tx.OldestChange()
		return err
	})
	return seq, ok
}

func trim(t testing.TB, st store.Store, keepFrom uint64, before time.Time, limit int) int {
	t.Helper()
	var n int
	update(t, st, func(tx store.Tx) error {
		var err error
		n, err = tx.TrimChanges(keepFrom, before, limit)
		return err
	})
	return n
}

func finished(t testing.TB, st store.Store, before time.Time, limit int) []string {
	t.Helper()
	var ids []string
	view(t, st, func(tx store.ReadTx) error {
		var err error
		ids, err = tx.Finished(before, limit)
		return err
	})
	return ids
}

// changeAt is a change of instance at base+d.
func changeAt(instance string, d time.Duration) fsm.Change {
	c := change(instance, fsm.ChangeTransitioned, "")
	c.At = base.Add(d)
	return c
}

func (s *suite) retention(t *testing.T) {
	t.Run("OldestChange", func(t *testing.T) {
		st := s.fresh(t)
		if seq, ok := oldest(t, st); ok {
			t.Fatalf("oldest of an empty changelog = %d", seq)
		}
		appendChanges(t, st, changeAt("a", 0), changeAt("b", 0))
		if seq, ok := oldest(t, st); !ok || seq != 1 {
			t.Fatalf("oldest = %d, %v; want 1", seq, ok)
		}
	})

	t.Run("TrimBySeq", func(t *testing.T) {
		st := s.fresh(t)
		appendChanges(t, st, changeAt("a", 0), changeAt("b", 0), changeAt("a", 0), changeAt("", 0), changeAt("b", 0))
		equal(t, "deleted below 3, at most 5", trim(t, st, 3, time.Time{}, 5), 2)
		if seq, _ := oldest(t, st); seq != 3 {
			t.Fatalf("oldest = %d, want 3", seq)
		}
		equal(t, "changes from 1", len(listChanges(t, st, 1, 0)), 3)
		equal(t, "history of a", seqsOf(history(t, st, "a")), []uint64{3})
		equal(t, "history of b", seqsOf(history(t, st, "b")), []uint64{5})
		equal(t, "nothing more below 3", trim(t, st, 3, time.Time{}, 0), 0)
		equal(t, "limit 1", trim(t, st, 100, time.Time{}, 1), 1)
		equal(t, "the rest", trim(t, st, 100, time.Time{}, 0), 2)
		if seq, ok := oldest(t, st); ok {
			t.Fatalf("oldest of a trimmed-out changelog = %d", seq)
		}
		// Numbers are never given out again.
		equal(t, "head", head(t, st), 5)
		equal(t, "next seq", appendChanges(t, st, changeAt("a", 0)), []uint64{6})
		equal(t, "history after trim", seqsOf(history(t, st, "a")), []uint64{6})
	})

	t.Run("TrimByAge", func(t *testing.T) {
		st := s.fresh(t)
		appendChanges(t, st, changeAt("a", 0), changeAt("a", time.Minute), changeAt("a", 2*time.Minute), changeAt("a", time.Minute))
		// Stops at the first change not older than before, even if a later
		// one is older (clocks step back).
		equal(t, "older than base+2m", trim(t, st, 0, base.Add(2*time.Minute), 0), 2)
		equal(t, "left", seqsOf(listChanges(t, st, 0, 0)), []uint64{3, 4})
		// Either bound deletes.
		equal(t, "by seq or age", trim(t, st, 4, base, 0), 1)
		equal(t, "left at last", seqsOf(history(t, st, "a")), []uint64{4})
	})

	t.Run("TrimSurvivesReopen", func(t *testing.T) {
		st, cfg := s.mustOpen(t, Config{})
		appendChanges(t, st, changeAt("a", 0), changeAt("a", 0), changeAt("a", 0))
		trim(t, st, 3, time.Time{}, 0)
		st = s.reopenStore(t, st, cfg)
		if seq, _ := oldest(t, st); seq != 3 {
			t.Fatalf("oldest after reopen = %d, want 3", seq)
		}
		equal(t, "next seq after reopen", appendChanges(t, st, changeAt("a", 0)), []uint64{4})
	})

	t.Run("Finished", func(t *testing.T) {
		st := s.fresh(t)
		fin := func(id string, d time.Duration) fsm.Instance {
			in := inst(id, "m", "done", fsm.StatusFinal, 0, time.Time{})
			in.UpdatedAt = base.Add(d)
			return in
		}
		put(t, st, fin("f2", 2*time.Minute), fin("f1", time.Minute), fin("f3", 3*time.Minute),
			inst("r", "m", "n", fsm.StatusReady, 0, base), inst("w", "m", "n", fsm.StatusWaiting, 0, base))
		equal(t, "before +3m", finished(t, st, base.Add(3*time.Minute), 0), []string{"f1", "f2"})
		equal(t, "limit 1", finished(t, st, farFuture, 1), []string{"f1"})
		equal(t, "none before", nonNil(finished(t, st, base, 0)), []string{})
	})

	t.Run("DeleteInstance", func(t *testing.T) {
		st := s.fresh(t)
		done := inst("done", "m", "end", fsm.StatusFinal, 0, time.Time{})
		keep := inst("keep", "m", "end", fsm.StatusFinal, 0, time.Time{})
		put(t, st, done, keep, inst("run", "m", "n", fsm.StatusReady, 0, base))
		appendChanges(t, st, changeAt("done", 0), changeAt("keep", 0), changeAt("done", 0))

		update(t, st, func(tx store.Tx) error { return tx.DeleteInstance("done") })
		view(t, st, func(tx store.ReadTx) error {
			if _, err := tx.Instance("done"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Instance of a deleted instance: %v, want ErrNotFound", err)
			}
			return nil
		})
		equal(t, "instances of m", idsOf(listInstances(t, st, store.InstanceFilter{Machine: "m"}, 0)), []string{"keep", "run"})
		equal(t, "every instance", idsOf(listInstances(t, st, store.InstanceFilter{}, 0)), []string{"keep", "run"})
		equal(t, "finished", finished(t, st, farFuture, 0), []string{"keep"})
		equal(t, "history of the deleted", len(history(t, st, "done")), 0)
		equal(t, "history of the other", seqsOf(history(t, st, "keep")), []uint64{2})
		// The changelog keeps its changes until they expire.
		equal(t, "changelog", len(listChanges(t, st, 0, 0)), 3)
		equal(t, "trim after delete", trim(t, st, 4, time.Time{}, 0), 3)

		err := st.Update(ctx, func(tx store.Tx) error { return tx.DeleteInstance("run") })
		if !isInvariant(err) {
			t.Errorf("delete of a READY instance: %v, want an invariant error", err)
		}
		equal(t, "still ready", readyIDs(t, st, store.ReadyFilter{}, 0), []string{"run"})
		err = st.Update(ctx, func(tx store.Tx) error { return tx.DeleteInstance("done") })
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("delete of a missing instance: %v, want ErrNotFound", err)
		}
		// The id can start again.
		put(t, st, inst("done", "m", "n", fsm.StatusReady, 0, base))
		equal(t, "restarted", getInstance(t, st, "done").Status, fsm.StatusReady)
	})

	t.Run("RetriedLeavesFinished", func(t *testing.T) {
		st := s.fresh(t)
		failed := inst("x", "m", fsm.NodeFailed, fsm.StatusFinal, 0, time.Time{})
		put(t, st, failed)
		retried := inst("x", "m", "n", fsm.StatusReady, 0, base)
		retried.Rev = failed.Rev + 1
		put(t, st, retried)
		equal(t, "finished after a retry", nonNil(finished(t, st, farFuture, 0)), []string{})
	})
}

func seqsOf(cs []fsm.Change) []uint64 {
	var out []uint64
	for _, c := range cs {
		out = append(out, c.Seq)
	}
	return out
}

func idsOf(ins []fsm.Instance) []string {
	var out []string
	for _, in := range ins {
		out = append(out, in.ID)
	}
	return out
}
