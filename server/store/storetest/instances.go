package storetest

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// fullInstance sets every field to a non-zero value.
func fullInstance(id string) fsm.Instance {
	return fsm.Instance{
		ID: id, Machine: "report", Version: 4, Node: "uploadable",
		Status:   fsm.StatusLeased,
		Params:   map[string]string{"url": "https://example.com/x", "n": "1", "empty": ""},
		Priority: -12, Attempt: 3,
		DueAt: base.Add(-time.Hour),
		Lease: fsm.Lease{
			Token: 7, Worker: "worker-7", Holder: "alice",
			AcquiredAt: base, ExpiresAt: base.Add(30 * time.Second),
		},
		Token: 7, Applied: []fsm.Applied{{RequestID: "req-6", Token: 6, Holder: "alice"}}, Rev: 11,
		CreatedAt: base.Add(-24 * time.Hour), UpdatedAt: time.Now(),
	}
}

func (s *suite) instances(t *testing.T) {
	t.Run("Roundtrip", func(t *testing.T) {
		st := s.fresh(t)
		want := fullInstance("x")
		put(t, st, want)
		got := getInstance(t, st, "x")
		equal(t, "instance", got, norm(want))
		for name, pair := range map[string][2]time.Time{
			"DueAt":      {got.DueAt, want.DueAt},
			"AcquiredAt": {got.Lease.AcquiredAt, want.Lease.AcquiredAt},
			"ExpiresAt":  {got.Lease.ExpiresAt, want.Lease.ExpiresAt},
			"CreatedAt":  {got.CreatedAt, want.CreatedAt},
			"UpdatedAt":  {got.UpdatedAt, want.UpdatedAt},
		} {
			if !pair[0].Equal(pair[1]) {
				t.Errorf("%s = %v, want %v", name, pair[0], pair[1])
			}
		}
	})

	t.Run("ZeroFields", func(t *testing.T) {
		st := s.fresh(t)
		in := fsm.Instance{ID: "z", Machine: "m", Node: "n", Status: fsm.StatusReady, Params: map[string]string{}}
		put(t, st, in)
		got := getInstance(t, st, "z")
		equal(t, "instance", got, norm(in))
		if !got.DueAt.IsZero() || !got.CreatedAt.IsZero() || !got.Lease.ExpiresAt.IsZero() {
			t.Errorf("zero times came back non-zero: %+v", got)
		}
	})

	t.Run("Extremes", func(t *testing.T) {
		st := s.fresh(t)
		in := fullInstance("e")
		in.Priority, in.Attempt = math.MinInt32, math.MaxInt32
		in.Version, in.Token, in.Rev = math.MaxUint32, math.MaxUint64, math.MaxUint64
		in.Lease.Token = math.MaxUint64
		in.DueAt = time.Unix(-86400*365*50, 1) // 1920
		in.CreatedAt = time.Unix(0, 0)         // the epoch is not the zero time
		put(t, st, in)
		equal(t, "instance", getInstance(t, st, "e"), norm(in))
	})

	t.Run("ReturnedCopies", func(t *testing.T) {
		st := s.fresh(t)
		in := fullInstance("c")
		put(t, st, in)
		got := getInstance(t, st, "c")
		got.Params["url"] = "mutated"
		in.Params["url"] = "mutated too"
		if again := getInstance(t, st, "c"); again.Params["url"] != "https://example.com/x" {
			t.Errorf("stored params changed through a returned or given map: %q", again.Params["url"])
		}
	})

	t.Run("UpdateReplaces", func(t *testing.T) {
		st := s.fresh(t)
		a := fullInstance("x")
		put(t, st, a)
		b := fsm.Instance{
			ID: "x", Machine: "other", Version: 1, Node: "n2", Status: fsm.StatusReady,
			Params: map[string]string{"only": "this"}, Token: 7, Rev: 12, DueAt: base,
		}
		put(t, st, b)
		equal(t, "replaced", getInstance(t, st, "x"), norm(b))
		// Moving machines moves the instance between machine listings.
		var ofReport, ofOther []fsm.Instance
		view(t, st, func(tx store.ReadTx) error {
			var err error
			if ofReport, err = tx.Instances(store.InstanceFilter{Machine: "report"}, "", 0); err != nil {
				return err
			}
			ofOther, err = tx.Instances(store.InstanceFilter{Machine: "other"}, "", 0)
			return err
		})
		if len(ofReport) != 0 || len(ofOther) != 1 {
			t.Errorf("after moving machines: %d under report, %d under other", len(ofReport), len(ofOther))
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		st := s.fresh(t)
		put(t, st, inst("a", "m", "n", fsm.StatusReady, 0, base))
		view(t, st, func(tx store.ReadTx) error {
			for _, id := range []string{"b", "", "a0", "A"} {
				if _, err := tx.Instance(id); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("Instance(%q): %v, want ErrNotFound", id, err)
				}
			}
			return nil
		})
	})

	t.Run("Filters", func(t *testing.T) {
		st := s.fresh(t)
		var all []fsm.Instance
		statuses := []fsm.Status{fsm.StatusWaiting, fsm.StatusReady, fsm.StatusLeased, fsm.StatusFinal}
		for i := range 40 {
			machine := []string{"m", "m2", "mm"}[i%3]
			node := []string{"a", "b"}[i/3%2]
			all = append(all, inst(fmt.Sprintf("i%02d", i), machine, node, statuses[i/6%4], int32(i%5), base.Add(time.Duration(i)*time.Second)))
		}
		put(t, st, all...)
		filters := []store.InstanceFilter{{}}
		for _, m := range []string{"", "m", "m2", "mm", "none"} {
			for _, n := range []string{"", "a", "b"} {
				for _, s := range append([]fsm.Status{0}, statuses...) {
					filters = append(filters, store.InstanceFilter{Machine: m, Node: n, Status: s})
				}
			}
		}
		for _, f := range filters {
			var want []fsm.Instance
			for _, in := range all {
				if (f.Machine == "" || in.Machine == f.Machine) && (f.Node == "" || in.Node == f.Node) &&
					(f.Status == 0 || in.Status == f.Status) {
					want = append(want, norm(in))
				}
			}
			for _, limit := range []int{0, 1, 3, 100} {
				got := listInstances(t, st, f, limit)
				equal(t, fmt.Sprintf("Instances(%+v) by pages of %d", f, limit), nonNil(got), nonNil(want))
			}
		}
	})

	t.Run("AfterUnknownID", func(t *testing.T) {
		st := s.fresh(t)
		put(t, st, inst("b", "m", "n", fsm.StatusReady, 0, base), inst("d", "m", "n", fsm.StatusReady, 0, base))
		for _, f := range []store.InstanceFilter{{}, {Machine: "m"}} {
			var got []fsm.Instance
			view(t, st, func(tx store.ReadTx) error {
				var err error
				got, err = tx.Instances(f, "c", 10)
				return err
			})
			if len(got) != 1 || got[0].ID != "d" {
				t.Errorf("Instances(%+v, after c) = %+v, want d only", f, got)
			}
		}
	})

	t.Run("FinalNeverChanges", func(t *testing.T) {
		st := s.fresh(t)
		in := inst("f", "m", "end", fsm.StatusFinal, 0, base)
		put(t, st, in)
		put(t, st, in) // the same state again is fine
		changed := in
		changed.Status = fsm.StatusReady
		err := st.Update(ctx, func(tx store.Tx) error { return tx.PutInstance(changed) })
		if !isInvariant(err) {
			t.Fatalf("changing a FINAL instance: %v, want an *fsm.InvariantError", err)
		}
		equal(t, "final instance", getInstance(t, st, "f"), norm(in))
	})

	t.Run("FailedMayBeRetriedOnce", func(t *testing.T) {
		st := s.fresh(t)
		in := inst("f", "m", fsm.NodeFailed, fsm.StatusFinal, 0, base)
		put(t, st, in)
		// Still FINAL elsewhere, or more than one change: refused.
		moved := in
		moved.Node, moved.Rev = "end", in.Rev+1
		skipped := in
		skipped.Node, skipped.Status, skipped.Rev = "n", fsm.StatusReady, in.Rev+2
		for _, bad := range []fsm.Instance{moved, skipped} {
			if err := st.Update(ctx, func(tx store.Tx) error { return tx.PutInstance(bad) }); !isInvariant(err) {
				t.Fatalf("changing a failed instance to %s %s rev %d: %v, want an *fsm.InvariantError", bad.Node, bad.Status, bad.Rev, err)
			}
		}
		retried := in
		retried.Node, retried.Status, retried.Rev, retried.DueAt = "n", fsm.StatusReady, in.Rev+1, base
		put(t, st, retried)
		equal(t, "retried instance", getInstance(t, st, "f"), norm(retried))
	})

	t.Run("TokenNeverDecreases", func(t *testing.T) {
		st := s.fresh(t)
		in := inst("t", "m", "n", fsm.StatusLeased, 0, base)
		in.Token, in.Lease.Token = 5, 5
		put(t, st, in)
		lower := in
		lower.Token, lower.Lease.Token, lower.Rev = 4, 4, 2
		err := st.Update(ctx, func(tx store.Tx) error { return tx.PutInstance(lower) })
		if !isInvariant(err) {
			t.Fatalf("lowering the token: %v, want an *fsm.InvariantError", err)
		}
		equal(t, "instance", getInstance(t, st, "t"), norm(in))
	})
}

// listInstances pages through Instances with the given page size.
func listInstances(t testing.TB, st store.Store, f store.InstanceFilter, limit int) []fsm.Instance {
	t.Helper()
	var out []fsm.Instance
	after := ""
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatal("pagination does not end")
		}
		var page []fsm.Instance
		view(t, st, func(tx store.ReadTx) error {
			var err error
			page, err = tx.Instances(f, after, limit)
			return err
		})
		if limit > 0 && len(page) > limit {
			t.Fatalf("Instances(%+v, %q, %d) returned %d", f, after, limit, len(page))
		}
		out = append(out, normAll(page)...)
		if limit <= 0 || len(page) < limit {
			return out
		}
		after = page[len(page)-1].ID
	}
}
