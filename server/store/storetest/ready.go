package storetest

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

func (s *suite) ready(t *testing.T) {
	t.Run("Order", func(t *testing.T) {
		st := s.fresh(t)
		t0 := base
		// Inserted out of order; the wanted order is priority desc, due
		// asc, id asc.
		put(t, st,
			inst("e", "m", "n", fsm.StatusReady, 0, t0.Add(time.Second)),
			inst("d", "m", "n", fsm.StatusReady, 0, t0),
			inst("c", "m", "n", fsm.StatusReady, 0, t0),
			inst("b", "m", "n", fsm.StatusReady, 5, t0.Add(time.Hour)),
			inst("a", "m", "n", fsm.StatusReady, -1, t0.Add(-time.Hour)),
			inst("f", "m", "n", fsm.StatusReady, math.MaxInt32, t0),
			inst("g", "m", "n", fsm.StatusReady, math.MinInt32, t0),
			inst("h", "m", "n", fsm.StatusReady, -2, t0),
			inst("i", "m", "n", fsm.StatusReady, 0, time.Time{}),               // zero due: oldest
			inst("j", "m", "n", fsm.StatusReady, 0, time.Unix(-1000, 0)),       // before the epoch
			inst("k", "m", "n", fsm.StatusReady, 0, time.Unix(0, 0)),           // the epoch
			inst("l", "m", "n", fsm.StatusReady, 1, t0.Add(100*time.Hour)),     // priority beats due
			inst("ab", "m", "n", fsm.StatusReady, 0, t0.Add(time.Second)),      // id breaks the tie with e
			inst("a0", "m", "n", fsm.StatusReady, 0, t0.Add(-time.Nanosecond)), // a nanosecond matters
		)
		want := []string{"f", "b", "l", "i", "j", "k", "a0", "c", "d", "ab", "e", "a", "h", "g"}
		equal(t, "ready order", readyIDs(t, st, store.ReadyFilter{}, 0), want)
		equal(t, "by machine", readyIDs(t, st, store.ReadyFilter{Machine: "m"}, 0), want)
		equal(t, "by node", readyIDs(t, st, store.ReadyFilter{Machine: "m", Node: "n"}, 0), want)
		for _, limit := range []int{1, 2, 5} {
			equal(t, fmt.Sprintf("limit %d", limit), readyIDs(t, st, store.ReadyFilter{}, limit), want[:limit])
		}
	})

	t.Run("Filters", func(t *testing.T) {
		st := s.fresh(t)
		put(t, st,
			inst("1", "m", "a", fsm.StatusReady, 0, base),
			inst("2", "m", "b", fsm.StatusReady, 1, base),
			inst("3", "m2", "a", fsm.StatusReady, 2, base),
			inst("4", "m2", "a", fsm.StatusWaiting, 9, base),
			inst("5", "mm", "a", fsm.StatusReady, 3, base),
			inst("6", "m", "ab", fsm.StatusReady, 4, base),
			// Names that share prefixes must not leak into each other.
			inst("7", "m\x01", "a", fsm.StatusReady, 5, base),
		)
		for _, c := range []struct {
			f    store.ReadyFilter
			want []string
		}{
			{store.ReadyFilter{}, []string{"7", "6", "5", "3", "2", "1"}},
			{store.ReadyFilter{Machine: "m"}, []string{"6", "2", "1"}},
			{store.ReadyFilter{Machine: "m2"}, []string{"3"}},
			{store.ReadyFilter{Machine: "mm"}, []string{"5"}},
			{store.ReadyFilter{Machine: "m", Node: "a"}, []string{"1"}},
			{store.ReadyFilter{Machine: "m", Node: "ab"}, []string{"6"}},
			{store.ReadyFilter{Machine: "m2", Node: "a"}, []string{"3"}},
			{store.ReadyFilter{Machine: "m2", Node: "b"}, nil},
			{store.ReadyFilter{Machine: "none"}, nil},
		} {
			equal(t, fmt.Sprintf("Ready(%+v)", c.f), nonNil(readyIDs(t, st, c.f, 0)), nonNil(c.want))
		}
	})

	t.Run("NodeNeedsMachine", func(t *testing.T) {
		st := s.fresh(t)
		err := st.View(ctx, func(tx store.ReadTx) error {
			_, err := tx.Ready(store.ReadyFilter{Node: "a"}, 10)
			return err
		})
		if err == nil {
			t.Fatal("Ready with a node and no machine succeeded")
		}
	})

	t.Run("LeavesIndex", func(t *testing.T) {
		for _, to := range []fsm.Status{fsm.StatusWaiting, fsm.StatusLeased, fsm.StatusHeld, fsm.StatusFinal} {
			t.Run(to.String(), func(t *testing.T) {
				st := s.fresh(t)
				a := inst("a", "m", "n", fsm.StatusReady, 0, base)
				put(t, st, a, inst("b", "m", "n", fsm.StatusReady, 0, base))
				moved := inst("a", "m", "n", to, 0, base.Add(time.Minute))
				moved.Rev = 2
				put(t, st, moved)
				for _, f := range []store.ReadyFilter{{}, {Machine: "m"}, {Machine: "m", Node: "n"}} {
					equal(t, fmt.Sprintf("Ready(%+v)", f), readyIDs(t, st, f, 0), []string{"b"})
				}
				if to == fsm.StatusFinal {
					return
				}
				// And back.
				back := a
				back.Rev, back.Token, back.Lease = 3, moved.Token, fsm.Lease{}
				put(t, st, back)
				equal(t, "back to READY", readyIDs(t, st, store.ReadyFilter{Machine: "m", Node: "n"}, 0), []string{"a", "b"})
			})
		}
	})

	t.Run("Reorder", func(t *testing.T) {
		st := s.fresh(t)
		a := inst("a", "m", "n", fsm.StatusReady, 0, base)
		b := inst("b", "m", "n", fsm.StatusReady, 0, base.Add(time.Second))
		put(t, st, a, b)
		all := store.ReadyFilter{}
		equal(t, "initial", readyIDs(t, st, all, 0), []string{"a", "b"})
		b.Priority = 1
		put(t, st, b)
		equal(t, "b priority up", readyIDs(t, st, all, 0), []string{"b", "a"})
		b.Priority = -1
		put(t, st, b)
		equal(t, "b priority down", readyIDs(t, st, all, 0), []string{"a", "b"})
		a.Priority = -1
		a.DueAt = base.Add(time.Hour)
		put(t, st, a)
		equal(t, "a later", readyIDs(t, st, all, 0), []string{"b", "a"})
		// Moving node and machine moves the filtered entries.
		a.Node = "n2"
		put(t, st, a)
		equal(t, "node n", readyIDs(t, st, store.ReadyFilter{Machine: "m", Node: "n"}, 0), []string{"b"})
		equal(t, "node n2", readyIDs(t, st, store.ReadyFilter{Machine: "m", Node: "n2"}, 0), []string{"a"})
		a.Machine = "m2"
		put(t, st, a)
		equal(t, "machine m", readyIDs(t, st, store.ReadyFilter{Machine: "m"}, 0), []string{"b"})
		equal(t, "machine m2 node n2", readyIDs(t, st, store.ReadyFilter{Machine: "m2", Node: "n2"}, 0), []string{"a"})
		equal(t, "node n2 of m", nonNil(readyIDs(t, st, store.ReadyFilter{Machine: "m", Node: "n2"}, 0)), []string{})
		equal(t, "all", readyIDs(t, st, all, 0), []string{"b", "a"})
	})

	t.Run("NegativePriorities", func(t *testing.T) {
		st := s.fresh(t)
		var want []string
		prios := []int32{math.MaxInt32, math.MaxInt32 - 1, 1000, 1, 0, -1, -2, -1000, math.MinInt32 + 1, math.MinInt32}
		for i, p := range prios {
			id := fmt.Sprintf("p%02d", len(prios)-i) // ids in the opposite order
			want = append(want, id)
			put(t, st, inst(id, "m", "n", fsm.StatusReady, p, base))
		}
		equal(t, "order", readyIDs(t, st, store.ReadyFilter{}, 0), want)
	})
}

func (s *suite) due(t *testing.T) {
	t.Run("WaitingAndLeased", func(t *testing.T) {
		st := s.fresh(t)
		leasedForever := inst("forever", "m", "n", fsm.StatusLeased, 0, time.Time{})
		put(t, st,
			inst("w1", "m", "n", fsm.StatusWaiting, 0, base.Add(2*time.Second)),
			inst("w0", "m", "n", fsm.StatusWaiting, 9, base.Add(2*time.Second)),
			inst("l1", "m", "n", fsm.StatusLeased, 0, base.Add(time.Second)), // lease expiry
			leasedForever,
			inst("r", "m", "n", fsm.StatusReady, 0, base),
			inst("f", "m", "n", fsm.StatusFinal, 0, base),
		)
		want := []store.Due{
			{At: normTime(base.Add(time.Second)), ID: "l1"},
			{At: normTime(base.Add(2 * time.Second)), ID: "w0"},
			{At: normTime(base.Add(2 * time.Second)), ID: "w1"},
		}
		equal(t, "due", dueAll(t, st), want)
		view(t, st, func(tx store.ReadTx) error {
			d, ok, err := tx.NextDue()
			if err != nil {
				return err
			}
			if !ok || normDues([]store.Due{d})[0] != want[0] {
				t.Errorf("NextDue = %+v, %v, want %+v", d, ok, want[0])
			}
			for _, c := range []struct {
				before time.Time
				limit  int
				n      int
			}{
				{base, 0, 0},
				{base.Add(time.Second - 1), 0, 0},
				{base.Add(time.Second), 0, 1}, // At <= before
				{base.Add(2 * time.Second), 0, 3},
				{base.Add(2 * time.Second), 2, 2},
				{farFuture, 1, 1},
				{time.Time{}, 0, 0},
			} {
				got, err := tx.Due(c.before, c.limit)
				if err != nil {
					return err
				}
				equal(t, fmt.Sprintf("Due(%v, %d)", c.before, c.limit), nonNil(normDues(got)), want[:c.n])
			}
			return nil
		})
	})

	t.Run("Empty", func(t *testing.T) {
		st := s.fresh(t)
		view(t, st, func(tx store.ReadTx) error {
			if d, ok, err := tx.NextDue(); err != nil || ok {
				t.Errorf("NextDue on an empty store = %+v, %v, %v", d, ok, err)
			}
			return nil
		})
	})

	t.Run("Leaves", func(t *testing.T) {
		for _, c := range []struct {
			from, to fsm.Status
		}{
			{fsm.StatusWaiting, fsm.StatusReady},
			{fsm.StatusWaiting, fsm.StatusFinal},
			{fsm.StatusLeased, fsm.StatusReady},
			{fsm.StatusLeased, fsm.StatusFinal},
		} {
			t.Run(c.from.String()+"_"+c.to.String(), func(t *testing.T) {
				st := s.fresh(t)
				in := inst("a", "m", "n", c.from, 0, base)
				put(t, st, in, inst("b", "m", "n", fsm.StatusWaiting, 0, base.Add(time.Hour)))
				if n := len(dueAll(t, st)); n != 2 {
					t.Fatalf("%d due entries, want 2", n)
				}
				out := inst("a", "m", "n", c.to, 0, base)
				out.Token = in.Token
				put(t, st, out)
				equal(t, "due", dueAll(t, st), []store.Due{{At: normTime(base.Add(time.Hour)), ID: "b"}})
			})
		}
		t.Run("LeaseNeverExpires", func(t *testing.T) {
			st := s.fresh(t)
			in := inst("a", "m", "n", fsm.StatusLeased, 0, base)
			put(t, st, in)
			in.Lease.ExpiresAt = time.Time{}
			put(t, st, in)
			equal(t, "due", nonNil(dueAll(t, st)), []store.Due{})
		})
	})

	t.Run("Moves", func(t *testing.T) {
		st := s.fresh(t)
		a := inst("a", "m", "n", fsm.StatusWaiting, 0, base)
		b := inst("b", "m", "n", fsm.StatusWaiting, 0, base.Add(time.Minute))
		put(t, st, a, b)
		a.DueAt = base.Add(time.Hour)
		put(t, st, a)
		equal(t, "after move", dueAll(t, st), []store.Due{
			{At: normTime(b.DueAt), ID: "b"}, {At: normTime(a.DueAt), ID: "a"},
		})
		// WAITING -> LEASED swaps the due time for the lease expiry.
		b = inst("b", "m", "n", fsm.StatusLeased, 0, base.Add(2*time.Hour))
		put(t, st, b)
		equal(t, "after lease", dueAll(t, st), []store.Due{
			{At: normTime(a.DueAt), ID: "a"}, {At: normTime(base.Add(2 * time.Hour)), ID: "b"},
		})
		// A heartbeat moves the expiry.
		b.Lease.ExpiresAt = base.Add(-time.Hour)
		put(t, st, b)
		equal(t, "after heartbeat", dueAll(t, st), []store.Due{
			{At: normTime(base.Add(-time.Hour)), ID: "b"}, {At: normTime(a.DueAt), ID: "a"},
		})
	})

	t.Run("ZeroAndPreEpoch", func(t *testing.T) {
		st := s.fresh(t)
		put(t, st,
			inst("now", "m", "n", fsm.StatusWaiting, 0, base),
			inst("epoch", "m", "n", fsm.StatusWaiting, 0, time.Unix(0, 0)),
			inst("pre", "m", "n", fsm.StatusWaiting, 0, time.Unix(-1, 0)),
			inst("old", "m", "n", fsm.StatusWaiting, 0, time.Date(1700, 1, 1, 0, 0, 0, 0, time.UTC)),
			inst("zero", "m", "n", fsm.StatusWaiting, 0, time.Time{}),
			inst("late", "m", "n", fsm.StatusWaiting, 0, time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)),
		)
		var ids []string
		ds := dueAll(t, st)
		for _, d := range ds {
			ids = append(ids, d.ID)
		}
		equal(t, "due order", ids, []string{"zero", "old", "pre", "epoch", "now", "late"})
		if !ds[0].At.IsZero() {
			t.Errorf("zero due time came back as %v", ds[0].At)
		}
		view(t, st, func(tx store.ReadTx) error {
			got, err := tx.Due(time.Unix(0, 0), 0)
			if err != nil {
				return err
			}
			if len(got) != 4 {
				t.Errorf("Due(epoch) = %+v, want zero, old, pre, epoch", got)
			}
			got, err = tx.Due(time.Time{}, 0)
			if err != nil {
				return err
			}
			if len(got) != 1 || got[0].ID != "zero" {
				t.Errorf("Due(zero time) = %+v, want the zero entry", got)
			}
			return nil
		})
	})
}
