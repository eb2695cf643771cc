package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

func breakerOf(t testing.TB, st store.Store, machine string) fsm.Breaker {
	t.Helper()
	var b fsm.Breaker
	view(t, st, func(tx store.ReadTx) error {
		var err error
		b, err = tx.Breaker(machine)
		return err
	})
	return b
}

func putBreaker(t testing.TB, st store.Store, machine string, b fsm.Breaker) {
	t.Helper()
	update(t, st, func(tx store.Tx) error { return tx.PutBreaker(machine, b) })
}

// sameBreaker compares breakers with times by instant (the store drops the
// location and the monotonic reading).
func sameBreaker(a, b fsm.Breaker) bool {
	return a.Open == b.Open && a.Failures == b.Failures && a.Count == b.Count &&
		a.Streak == b.Streak && a.OpenedAt.Equal(b.OpenedAt)
}

func (s *suite) breakers(t *testing.T) {
	open := fsm.Breaker{Open: true, Failures: 0b1011, Count: 4, Streak: 0, OpenedAt: base}
	closed := fsm.Breaker{Failures: 0b10, Count: 3, Streak: 1}

	t.Run("Empty", func(t *testing.T) {
		st := s.fresh(t)
		if got := breakerOf(t, st, "m"); got != (fsm.Breaker{}) {
			t.Fatalf("breaker of a fresh store = %+v", got)
		}
	})

	t.Run("PutReplacesAndIsolates", func(t *testing.T) {
		st := s.fresh(t)
		putBreaker(t, st, "m", closed)
		putBreaker(t, st, "m", open)
		putBreaker(t, st, "mm", closed)
		if got := breakerOf(t, st, "m"); !sameBreaker(got, open) {
			t.Fatalf("m = %+v, want %+v", got, open)
		}
		if got := breakerOf(t, st, "mm"); !sameBreaker(got, closed) {
			t.Fatalf("mm = %+v, want %+v", got, closed)
		}
		if got := breakerOf(t, st, "x"); got != (fsm.Breaker{}) {
			t.Fatalf("unknown machine = %+v", got)
		}
	})

	t.Run("ReadsSeeOwnWrites", func(t *testing.T) {
		st := s.fresh(t)
		update(t, st, func(tx store.Tx) error {
			if err := tx.PutBreaker("m", open); err != nil {
				return err
			}
			got, err := tx.Breaker("m")
			if err != nil {
				return err
			}
			if !sameBreaker(got, open) {
				t.Errorf("inside the transaction: %+v", got)
			}
			return nil
		})
	})

	t.Run("Invalid", func(t *testing.T) {
		st := s.fresh(t)
		for name, fn := range map[string]func(tx store.Tx) error{
			"empty machine":  func(tx store.Tx) error { return tx.PutBreaker("", closed) },
			"NUL in machine": func(tx store.Tx) error { return tx.PutBreaker("m\x00", closed) },
			"invalid state":  func(tx store.Tx) error { return tx.PutBreaker("m", fsm.Breaker{Open: true}) },
		} {
			if err := st.Update(ctx, fn); err == nil {
				t.Errorf("%s: accepted", name)
			}
		}
		if got := breakerOf(t, st, "m"); got != (fsm.Breaker{}) {
			t.Errorf("breaker after rejected puts: %+v", got)
		}
	})

	t.Run("Rollback", func(t *testing.T) {
		st := s.fresh(t)
		putBreaker(t, st, "m", closed)
		err := st.Update(ctx, func(tx store.Tx) error {
			if err := tx.PutBreaker("m", open); err != nil {
				return err
			}
			return errBoom
		})
		if !errors.Is(err, errBoom) {
			t.Fatalf("Update = %v, want the function's error", err)
		}
		if got := breakerOf(t, st, "m"); !sameBreaker(got, closed) {
			t.Fatalf("after a failed update: %+v, want %+v", got, closed)
		}
	})

	t.Run("SurvivesReopen", func(t *testing.T) {
		st, cfg := s.mustOpen(t, Config{})
		putBreaker(t, st, "m", open)
		st = s.reopenStore(t, st, cfg)
		got := breakerOf(t, st, "m")
		if !sameBreaker(got, open) || got.OpenedAt.Location() != time.UTC {
			t.Fatalf("after reopen: %+v, want %+v in UTC", got, open)
		}
	})
}
