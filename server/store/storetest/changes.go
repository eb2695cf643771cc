package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

func change(instance string, kind fsm.ChangeKind, reason string) fsm.Change {
	return fsm.Change{
		At: base, Actor: "tester", Kind: kind, Instance: instance,
		Machine: "m", Version: 1, Transition: "ok", FromNode: "a", ToNode: "b",
		FromStatus: fsm.StatusLeased, ToStatus: fsm.StatusReady,
		Token: 3, Attempt: 1, DueAt: base.Add(time.Minute),
		Params: map[string]string{"k": "v"}, Reason: reason,
	}
}

func listChanges(t testing.TB, st store.Store, from uint64, limit int) []fsm.Change {
	t.Helper()
	var cs []fsm.Change
	view(t, st, func(tx store.ReadTx) error {
		var err error
		cs, err = tx.Changes(from, limit)
		return err
	})
	return normChanges(cs)
}

func history(t testing.TB, st store.Store, id string) []fsm.Change {
	t.Helper()
	var cs []fsm.Change
	view(t, st, func(tx store.ReadTx) error {
		var err error
		cs, err = tx.History(id)
		return err
	})
	return normChanges(cs)
}

// checkGapFree asserts that the changelog is exactly 1..Head.
func checkGapFree(t testing.TB, st store.Store) []fsm.Change {
	t.Helper()
	h := head(t, st)
	cs := listChanges(t, st, 0, 0)
	if uint64(len(cs)) != h {
		t.Fatalf("head %d but %d changes", h, len(cs))
	}
	for i, c := range cs {
		if c.Seq != uint64(i+1) {
			t.Fatalf("change %d has seq %d", i+1, c.Seq)
		}
	}
	return cs
}

func (s *suite) changes(t *testing.T) {
	t.Run("Sequence", func(t *testing.T) {
		st := s.fresh(t)
		if h := head(t, st); h != 0 {
			t.Fatalf("head of an empty store = %d", h)
		}
		equal(t, "first", appendChanges(t, st, change("a", fsm.ChangeStarted, "")), []uint64{1})
		equal(t, "next three", appendChanges(t, st,
			change("a", fsm.ChangeLeased, ""), change("b", fsm.ChangeStarted, ""),
			change("", fsm.ChangeMachineDefined, "")), []uint64{2, 3, 4})
		if h := head(t, st); h != 4 {
			t.Fatalf("head = %d, want 4", h)
		}
		// The Seq a caller passes in is ignored.
		c := change("a", fsm.ChangeHeartbeat, "")
		c.Seq = 99
		equal(t, "seq overridden", appendChanges(t, st, c), []uint64{5})
		cs := checkGapFree(t, st)
		want := change("b", fsm.ChangeStarted, "")
		want.Seq = 3
		equal(t, "stored change", cs[2], normChange(want))
	})

	t.Run("Range", func(t *testing.T) {
		st := s.fresh(t)
		for i := range 10 {
			appendChanges(t, st, change(fmt.Sprint(i%3), fsm.ChangeStarted, fmt.Sprint(i)))
		}
		for _, c := range []struct {
			from       uint64
			limit      int
			first, n   uint64
			wantNoneOK bool
		}{
			{0, 0, 1, 10, false},
			{1, 0, 1, 10, false},
			{1, 3, 1, 3, false},
			{4, 3, 4, 3, false},
			{9, 5, 9, 2, false},
			{10, 1, 10, 1, false},
			{11, 5, 0, 0, true},
			{1 << 62, 5, 0, 0, true},
		} {
			got := listChanges(t, st, c.from, c.limit)
			if uint64(len(got)) != c.n {
				t.Fatalf("Changes(%d, %d) returned %d, want %d", c.from, c.limit, len(got), c.n)
			}
			for i, ch := range got {
				if ch.Seq != c.first+uint64(i) || ch.Reason != fmt.Sprint(ch.Seq-1) {
					t.Fatalf("Changes(%d, %d)[%d] = seq %d reason %q", c.from, c.limit, i, ch.Seq, ch.Reason)
				}
			}
		}
	})

	t.Run("History", func(t *testing.T) {
		st := s.fresh(t)
		// Ids that prefix each other must not share history.
		ids := []string{"a", "ab", "a-b", "b", "a\x01"}
		want := map[string][]uint64{}
		for i := range 20 {
			id := ids[i*7%len(ids)]
			var cs []fsm.Change
			cs = append(cs, change(id, fsm.ChangeTransitioned, fmt.Sprint(i)))
			if i%4 == 0 {
				cs = append(cs, change("", fsm.ChangeMachineDefined, ""))
			}
			seqs := appendChanges(t, st, cs...)
			want[id] = append(want[id], seqs[0])
		}
		for _, id := range ids {
			var got []uint64
			for _, c := range history(t, st, id) {
				if c.Instance != id {
					t.Errorf("history of %q holds a change of %q", id, c.Instance)
				}
				got = append(got, c.Seq)
			}
			equal(t, "history of "+id, got, want[id])
		}
		equal(t, "history of an unknown instance", nonNil(history(t, st, "zz")), []fsm.Change{})
		equal(t, "history of the empty id", nonNil(history(t, st, "")), []fsm.Change{})
		// History returns whole records.
		c := change("a", fsm.ChangeTransitioned, "0")
		c.Seq = 1
		equal(t, "first of a", history(t, st, "a")[0], normChange(c))

		// HistoryFrom pages through the same changes: from a seq, at most
		// limit of them, never another instance's.
		for _, id := range ids {
			var got []uint64
			for from := uint64(0); ; {
				var page []fsm.Change
				view(t, st, func(tx store.ReadTx) error {
					var err error
					page, err = tx.HistoryFrom(id, from, 2)
					return err
				})
				if len(page) > 2 {
					t.Fatalf("history page of %q from %d: %d changes, limit 2", id, from, len(page))
				}
				for _, c := range page {
					if c.Instance != id || c.Seq < from {
						t.Fatalf("history page of %q from %d holds change %d of %q", id, from, c.Seq, c.Instance)
					}
					got = append(got, c.Seq)
				}
				if len(page) < 2 {
					break
				}
				from = page[len(page)-1].Seq + 1
			}
			equal(t, "paged history of "+id, got, want[id])
		}
		var all []fsm.Change
		view(t, st, func(tx store.ReadTx) error {
			var err error
			all, err = tx.HistoryFrom("a", 0, 0)
			return err
		})
		equal(t, "history of a from 0 without limit", normChanges(all), history(t, st, "a"))
	})

	t.Run("FailedUpdateLeavesNoTrace", func(t *testing.T) {
		st := s.fresh(t)
		appendChanges(t, st, change("x", fsm.ChangeStarted, ""))
		put(t, st, inst("x", "m", "n", fsm.StatusReady, 0, base))
		before := snapshot(t, st)
		err := st.Update(ctx, func(tx store.Tx) error {
			if err := tx.PutMachine(machine("m", 1)); err != nil {
				return err
			}
			if err := tx.PutInstance(inst("y", "m", "n", fsm.StatusReady, 0, base)); err != nil {
				return err
			}
			if err := tx.PutInstance(inst("w", "m", "n", fsm.StatusWaiting, 0, base)); err != nil {
				return err
			}
			if err := tx.PutInstance(inst("x", "m", "n", fsm.StatusLeased, 0, base)); err != nil {
				return err
			}
			for range 3 {
				if _, err := tx.AppendChange(change("y", fsm.ChangeStarted, "failed")); err != nil {
					return err
				}
			}
			return errBoom
		})
		if !errors.Is(err, errBoom) {
			t.Fatalf("Update returned %v, want the function's error", err)
		}
		equal(t, "after failed update", snapshot(t, st), before)
		view(t, st, func(tx store.ReadTx) error {
			if _, err := tx.Instance("y"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("instance of a failed update: %v", err)
			}
			if _, err := tx.Machine("m", 0); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("machine of a failed update: %v", err)
			}
			return nil
		})
		equal(t, "next sequence", appendChanges(t, st, change("y", fsm.ChangeStarted, "")), []uint64{2})
		checkGapFree(t, st)
	})
}
