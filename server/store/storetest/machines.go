package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/store"
)

func machine(id string, version uint32) store.MachineRecord {
	return store.MachineRecord{
		ID: id, Version: version,
		Source:      fmt.Appendf(nil, "id: %s\n# version %d\n", id, version),
		Fingerprint: fmt.Sprintf("fp-%s-%d", id, version),
		DefinedAt:   base.Add(time.Duration(version) * time.Minute),
	}
}

func putMachines(t testing.TB, st store.Store, ms ...store.MachineRecord) {
	t.Helper()
	update(t, st, func(tx store.Tx) error {
		for _, m := range ms {
			if err := tx.PutMachine(m); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *suite) machines(t *testing.T) {
	t.Run("PutGet", func(t *testing.T) {
		st := s.fresh(t)
		m := machine("report", 1)
		putMachines(t, st, m)
		view(t, st, func(tx store.ReadTx) error {
			got, err := tx.Machine("report", 1)
			if err != nil {
				return err
			}
			equal(t, "machine", normMachine(got), normMachine(m))
			return nil
		})
	})

	t.Run("Latest", func(t *testing.T) {
		st := s.fresh(t)
		// Neighbouring ids must not leak into each other's latest version.
		putMachines(t, st, machine("a", 1), machine("report", 1), machine("report", 2),
			machine("report-b", 7), machine("reportx", 9), machine("z", 3))
		putMachines(t, st, machine("report", 3))
		view(t, st, func(tx store.ReadTx) error {
			for id, want := range map[string]uint32{"a": 1, "report": 3, "report-b": 7, "reportx": 9, "z": 3} {
				got, err := tx.Machine(id, 0)
				if err != nil {
					return fmt.Errorf("latest %q: %w", id, err)
				}
				if got.ID != id || got.Version != want {
					t.Errorf("latest of %q = %s@%d, want version %d", id, got.ID, got.Version, want)
				}
				if v, err := tx.LatestMachineVersion(id); err != nil || v != want {
					t.Errorf("LatestMachineVersion(%q) = %d, %v, want %d", id, v, err, want)
				}
			}
			got, err := tx.Machine("report", 2)
			if err != nil || got.Version != 2 {
				t.Errorf("report@2 = %+v, %v", got, err)
			}
			return nil
		})
	})

	t.Run("Versions", func(t *testing.T) {
		st := s.fresh(t)
		putMachines(t, st, machine("m", 2), machine("m", 1), machine("m2", 1), machine("l", 1))
		putMachines(t, st, machine("m", 3))
		view(t, st, func(tx store.ReadTx) error {
			vs, err := tx.MachineVersions("m")
			if err != nil {
				return err
			}
			var got []store.MachineRecord
			for _, v := range vs {
				got = append(got, normMachine(v))
			}
			equal(t, "versions", got, []store.MachineRecord{
				normMachine(machine("m", 1)), normMachine(machine("m", 2)), normMachine(machine("m", 3)),
			})
			return nil
		})
	})

	t.Run("NotFound", func(t *testing.T) {
		st := s.fresh(t)
		putMachines(t, st, machine("m", 1))
		view(t, st, func(tx store.ReadTx) error {
			if _, err := tx.Machine("nope", 0); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("unknown machine: %v, want ErrNotFound", err)
			}
			if _, err := tx.Machine("m", 2); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("unknown version: %v, want ErrNotFound", err)
			}
			if _, err := tx.Machine("", 0); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("empty id: %v, want ErrNotFound", err)
			}
			for _, id := range []string{"nope", "", "m\x00"} {
				if _, err := tx.LatestMachineVersion(id); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("LatestMachineVersion(%q): %v, want ErrNotFound", id, err)
				}
			}
			if _, err := tx.MachineVersions("nope"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("versions of unknown machine: %v, want ErrNotFound", err)
			}
			return nil
		})
	})

	t.Run("DuplicateVersion", func(t *testing.T) {
		st := s.fresh(t)
		putMachines(t, st, machine("m", 1))
		dup := machine("m", 1)
		dup.Fingerprint = "other"
		err := st.Update(ctx, func(tx store.Tx) error { return tx.PutMachine(dup) })
		if err == nil {
			t.Fatal("PutMachine of an existing version succeeded")
		}
		view(t, st, func(tx store.ReadTx) error {
			got, err := tx.Machine("m", 1)
			if err != nil {
				return err
			}
			if got.Fingerprint != machine("m", 1).Fingerprint {
				t.Errorf("existing version overwritten: %+v", got)
			}
			return nil
		})
	})

	t.Run("Pagination", func(t *testing.T) {
		st := s.fresh(t)
		ids := []string{"a", "b", "b-1", "ba", "c", "d", "e"}
		for i, id := range ids {
			for v := uint32(1); v <= uint32(i%3+1); v++ {
				putMachines(t, st, machine(id, v))
			}
		}
		for _, limit := range []int{1, 2, 3, 7, 100} {
			var got []string
			after := ""
			for pages := 0; ; pages++ {
				if pages > len(ids)+1 {
					t.Fatalf("limit %d: pagination does not end", limit)
				}
				var page []store.MachineRecord
				view(t, st, func(tx store.ReadTx) error {
					var err error
					page, err = tx.Machines(after, limit)
					return err
				})
				if len(page) > limit {
					t.Fatalf("limit %d: page of %d", limit, len(page))
				}
				for _, m := range page {
					i := indexOf(ids, m.ID)
					if want := uint32(i%3 + 1); m.Version != want {
						t.Errorf("Machines returned %s@%d, want latest %d", m.ID, m.Version, want)
					}
					got = append(got, m.ID)
				}
				if len(page) < limit {
					break
				}
				after = page[len(page)-1].ID
			}
			equal(t, fmt.Sprintf("ids with limit %d", limit), got, ids)
		}
		var rest []store.MachineRecord
		view(t, st, func(tx store.ReadTx) error {
			var err error
			rest, err = tx.Machines("b", 0)
			return err
		})
		if len(rest) != 5 || rest[0].ID != "b-1" {
			t.Errorf("Machines(after b, no limit) = %d records, first %+v", len(rest), rest)
		}
	})
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}
