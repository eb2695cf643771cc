package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

func normDevice(d fsm.Device) fsm.Device {
	d.LastSeen = normTime(d.LastSeen)
	d.Capabilities = normParams(d.Capabilities)
	return d
}

func getDevice(t testing.TB, st store.Store, id string) fsm.Device {
	t.Helper()
	var d fsm.Device
	view(t, st, func(tx store.ReadTx) error {
		var err error
		d, err = tx.Device(id)
		return err
	})
	return d
}

func queueOf(t testing.TB, st store.Store, device string) (head store.QueueEntry, ok bool, n int) {
	t.Helper()
	view(t, st, func(tx store.ReadTx) error {
		var err error
		if head, ok, err = tx.QueueHead(device); err != nil {
			return err
		}
		n, err = tx.QueueLen(device)
		return err
	})
	head.At = normTime(head.At)
	return head, ok, n
}

func (s *suite) devices(t *testing.T) {
	full := fsm.Device{
		ID: "printer-1", Pool: "lab", Capabilities: map[string]string{"material": "pla"},
		Machine: "printer", Online: true, Conn: 3, LastSeen: base, Node: "printing",
		Job: "o-1", Progress: 0.25, ReportSeq: 9, CommandSeq: 4,
		Pending: fsm.Command{Seq: 4, Name: "print", Node: "ready", Job: "o-1"},
	}

	t.Run("PutGetReplace", func(t *testing.T) {
		st := s.fresh(t)
		view(t, st, func(tx store.ReadTx) error {
			if _, err := tx.Device("printer-1"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("Device of a fresh store: %v, want ErrNotFound", err)
			}
			return nil
		})
		update(t, st, func(tx store.Tx) error { return tx.PutDevice(full) })
		equal(t, "device", normDevice(getDevice(t, st, "printer-1")), normDevice(full))
		offline := full.Clone()
		offline.Online, offline.Pending = false, fsm.Command{}
		update(t, st, func(tx store.Tx) error { return tx.PutDevice(offline) })
		equal(t, "replaced device", normDevice(getDevice(t, st, "printer-1")), normDevice(offline))
	})

	t.Run("EmptyIDRefused", func(t *testing.T) {
		st := s.fresh(t)
		err := st.Update(ctx, func(tx store.Tx) error { return tx.PutDevice(fsm.Device{}) })
		if err == nil {
			t.Fatal("PutDevice with an empty id succeeded")
		}
	})

	t.Run("ListByPoolInIDOrder", func(t *testing.T) {
		st := s.fresh(t)
		update(t, st, func(tx store.Tx) error {
			for _, d := range []fsm.Device{{ID: "c", Pool: "x"}, {ID: "a", Pool: "x"}, {ID: "b", Pool: "y"}, {ID: "d", Pool: "x"}} {
				if err := tx.PutDevice(d); err != nil {
					return err
				}
			}
			return nil
		})
		ids := func(pool, after string, limit int) []string {
			var out []string
			view(t, st, func(tx store.ReadTx) error {
				ds, err := tx.Devices(pool, after, limit)
				for _, d := range ds {
					out = append(out, d.ID)
				}
				return err
			})
			return out
		}
		equal(t, "all", ids("", "", 0), []string{"a", "b", "c", "d"})
		equal(t, "pool x", ids("x", "", 0), []string{"a", "c", "d"})
		equal(t, "pool x after a, limit 1", ids("x", "a", 1), []string{"c"})
		equal(t, "after the last", nonNil(ids("", "d", 0)), []string{})
		equal(t, "unknown pool", nonNil(ids("z", "", 0)), []string{})
	})

	t.Run("QueueOrder", func(t *testing.T) {
		st := s.fresh(t)
		entries := []store.QueueEntry{
			{Job: "old-low", Priority: 0, At: base},
			{Job: "new-high", Priority: 5, At: base.Add(time.Hour)},
			{Job: "old-high", Priority: 5, At: base.Add(time.Minute)},
			{Job: "neg", Priority: -3, At: base.Add(-time.Hour)},
			{Job: "b-tie", Priority: 5, At: base.Add(time.Minute)},
		}
		update(t, st, func(tx store.Tx) error {
			for _, e := range entries {
				if err := tx.Enqueue("p", e); err != nil {
					return err
				}
			}
			// Another device's queue and the same entry twice change nothing.
			if err := tx.Enqueue("p2", store.QueueEntry{Job: "other", Priority: 100, At: base}); err != nil {
				return err
			}
			return tx.Enqueue("p", entries[0])
		})
		want := []string{"b-tie", "old-high", "new-high", "old-low", "neg"}
		for i, job := range want {
			head, ok, n := queueOf(t, st, "p")
			if !ok || head.Job != job || n != len(want)-i {
				t.Fatalf("step %d: head %+v ok %v len %d, want %s and %d", i, head, ok, n, job, len(want)-i)
			}
			update(t, st, func(tx store.Tx) error { return tx.Dequeue("p", head) })
		}
		if head, ok, n := queueOf(t, st, "p"); ok || n != 0 {
			t.Fatalf("drained queue: head %+v ok %v len %d", head, ok, n)
		}
		if head, ok, n := queueOf(t, st, "p2"); !ok || head.Job != "other" || head.Priority != 100 || !head.At.Equal(base) || n != 1 {
			t.Fatalf("other queue: head %+v ok %v len %d", head, ok, n)
		}
	})

	t.Run("DequeueMissing", func(t *testing.T) {
		st := s.fresh(t)
		err := st.Update(ctx, func(tx store.Tx) error {
			return tx.Dequeue("p", store.QueueEntry{Job: "j", At: base})
		})
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Dequeue of a missing entry: %v, want ErrNotFound", err)
		}
	})

	t.Run("RollbackAndReopen", func(t *testing.T) {
		st, cfg := s.mustOpen(t, Config{})
		err := st.Update(ctx, func(tx store.Tx) error {
			if err := tx.PutDevice(full); err != nil {
				return err
			}
			if err := tx.Enqueue("printer-1", store.QueueEntry{Job: "j", At: base}); err != nil {
				return err
			}
			return errBoom
		})
		if !errors.Is(err, errBoom) {
			t.Fatalf("Update: %v", err)
		}
		view(t, st, func(tx store.ReadTx) error {
			if _, err := tx.Device("printer-1"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("device of a failed update: %v", err)
			}
			return nil
		})
		if _, ok, _ := queueOf(t, st, "printer-1"); ok {
			t.Fatal("queue entry of a failed update is visible")
		}
		update(t, st, func(tx store.Tx) error {
			if err := tx.PutDevice(full); err != nil {
				return err
			}
			return tx.Enqueue("printer-1", store.QueueEntry{Job: "j", Priority: 2, At: base})
		})
		st = s.reopenStore(t, st, cfg)
		equal(t, "device after reopen", normDevice(getDevice(t, st, "printer-1")), normDevice(full))
		head, ok, n := queueOf(t, st, "printer-1")
		equal(t, "queue after reopen", []any{head, ok, n}, []any{store.QueueEntry{Job: "j", Priority: 2, At: normTime(base)}, true, 1})
	})
}
