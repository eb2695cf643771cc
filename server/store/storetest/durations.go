package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/store"
)

func samples(t testing.TB, st store.Store, machine string, version uint32, node string) []time.Duration {
	t.Helper()
	var ds []time.Duration
	view(t, st, func(tx store.ReadTx) error {
		var err error
		ds, err = tx.DurationSamples(machine, version, node)
		return err
	})
	if len(ds) == 0 {
		return nil
	}
	return ds
}

func addSamples(t testing.TB, st store.Store, machine string, version uint32, node string, ds ...time.Duration) {
	t.Helper()
	update(t, st, func(tx store.Tx) error {
		for _, d := range ds {
			if err := tx.AddDurationSample(machine, version, node, d); err != nil {
				return err
			}
		}
		return nil
	})
}

// secondsRange returns from, from+1, ... to-1 seconds.
func secondsRange(from, to int) []time.Duration {
	var out []time.Duration
	for i := from; i < to; i++ {
		out = append(out, time.Duration(i)*time.Second)
	}
	return out
}

func (s *suite) durations(t *testing.T) {
	const window = store.MaxDurationSamples

	t.Run("Empty", func(t *testing.T) {
		st := s.fresh(t)
		if got := samples(t, st, "m", 1, "n"); got != nil {
			t.Fatalf("samples of a fresh store = %v", got)
		}
	})

	t.Run("WindowKeepsTheMostRecentInOrder", func(t *testing.T) {
		st := s.fresh(t)
		// One per transaction up to the bound, then many in one.
		for _, d := range secondsRange(0, window) {
			addSamples(t, st, "m", 1, "n", d)
		}
		if got, want := samples(t, st, "m", 1, "n"), secondsRange(0, window); !slices.Equal(got, want) {
			t.Fatalf("full window = %v, want %v", got, want)
		}
		addSamples(t, st, "m", 1, "n", secondsRange(window, window+window/2)...)
		if got, want := samples(t, st, "m", 1, "n"), secondsRange(window/2, window+window/2); !slices.Equal(got, want) {
			t.Fatalf("window after overflow = %v, want %v", got, want)
		}
	})

	t.Run("ReadsSeeOwnWrites", func(t *testing.T) {
		st := s.fresh(t)
		update(t, st, func(tx store.Tx) error {
			if err := tx.AddDurationSample("m", 1, "n", time.Second); err != nil {
				return err
			}
			got, err := tx.DurationSamples("m", 1, "n")
			if err != nil {
				return err
			}
			if !slices.Equal(got, []time.Duration{time.Second}) {
				t.Errorf("inside the transaction: %v", got)
			}
			return nil
		})
	})

	t.Run("Isolation", func(t *testing.T) {
		st := s.fresh(t)
		keys := []struct {
			machine string
			version uint32
			node    string
		}{
			{"m", 1, "n"}, {"m", 1, "n2"}, {"m", 1, "nn"}, {"m", 2, "n"},
			{"m2", 1, "n"}, {"mn", 1, "x"}, {"m", 256, "n"},
		}
		for i, k := range keys {
			addSamples(t, st, k.machine, k.version, k.node, time.Duration(i+1)*time.Millisecond)
		}
		for i, k := range keys {
			want := []time.Duration{time.Duration(i+1) * time.Millisecond}
			if got := samples(t, st, k.machine, k.version, k.node); !slices.Equal(got, want) {
				t.Errorf("%s@%d %s: %v, want %v", k.machine, k.version, k.node, got, want)
			}
		}
		if got := samples(t, st, "m", 3, "n"); got != nil {
			t.Errorf("unknown version: %v", got)
		}
	})

	t.Run("Invalid", func(t *testing.T) {
		st := s.fresh(t)
		for name, fn := range map[string]func(tx store.Tx) error{
			"empty machine":     func(tx store.Tx) error { return tx.AddDurationSample("", 1, "n", time.Second) },
			"empty node":        func(tx store.Tx) error { return tx.AddDurationSample("m", 1, "", time.Second) },
			"NUL in machine":    func(tx store.Tx) error { return tx.AddDurationSample("m\x00", 1, "n", time.Second) },
			"NUL in node":       func(tx store.Tx) error { return tx.AddDurationSample("m", 1, "\x00n", time.Second) },
			"version 0":         func(tx store.Tx) error { return tx.AddDurationSample("m", 0, "n", time.Second) },
			"negative duration": func(tx store.Tx) error { return tx.AddDurationSample("m", 1, "n", -time.Second) },
		} {
			if err := st.Update(ctx, fn); err == nil {
				t.Errorf("%s: accepted", name)
			}
		}
		if got := samples(t, st, "m", 1, "n"); got != nil {
			t.Errorf("samples after rejected adds: %v", got)
		}
	})

	t.Run("Rollback", func(t *testing.T) {
		st := s.fresh(t)
		addSamples(t, st, "m", 1, "n", time.Second)
		err := st.Update(ctx, func(tx store.Tx) error {
			if err := tx.AddDurationSample("m", 1, "n", 2*time.Second); err != nil {
				return err
			}
			if err := tx.AddDurationSample("m", 1, "other", 2*time.Second); err != nil {
				return err
			}
			return errBoom
		})
		if !errors.Is(err, errBoom) {
			t.Fatalf("Update = %v, want the function's error", err)
		}
		err = st.Update(ctx, func(tx store.Tx) error {
			if err := tx.AddDurationSample("m", 1, "n", 3*time.Second); err != nil {
				return err
			}
			panic("samples panic")
		})
		if err == nil {
			t.Fatal("panicking update succeeded")
		}
		if got := samples(t, st, "m", 1, "n"); !slices.Equal(got, []time.Duration{time.Second}) {
			t.Fatalf("after failed updates: %v, want [1s]", got)
		}
		if got := samples(t, st, "m", 1, "other"); got != nil {
			t.Fatalf("node added by a failed update: %v", got)
		}
	})

	t.Run("SurvivesReopen", func(t *testing.T) {
		st, cfg := s.mustOpen(t, Config{})
		addSamples(t, st, "m", 1, "n", secondsRange(0, window+5)...)
		addSamples(t, st, "m", 2, "n", time.Nanosecond, 0, 1<<62)
		st = s.reopenStore(t, st, cfg)
		if got, want := samples(t, st, "m", 1, "n"), secondsRange(5, window+5); !slices.Equal(got, want) {
			t.Fatalf("after reopen: %v, want %v", got, want)
		}
		if got, want := samples(t, st, "m", 2, "n"), []time.Duration{time.Nanosecond, 0, 1 << 62}; !slices.Equal(got, want) {
			t.Fatalf("after reopen: %v, want %v", got, want)
		}
		// The window keeps sliding after the reopen.
		addSamples(t, st, "m", 1, "n", time.Hour)
		if got, want := samples(t, st, "m", 1, "n"), append(secondsRange(6, window+5), time.Hour); !slices.Equal(got, want) {
			t.Fatalf("after reopen and add: %v, want %v", got, want)
		}
	})
}
