package bolt_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
	"github.com/dfsmr/dfsmr/server/store/bolt"
)

// TestCheckAfterRetention: a changelog trimmed at its start and a deleted
// instance leave a file Check finds sound.
func TestCheckAfterRetention(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dfsmr.db")
	s := mustOpen(t, path, bolt.Options{})
	at := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	err := s.Update(context.Background(), func(tx store.Tx) error {
		for _, id := range []string{"a", "b"} {
			in := fsm.Instance{ID: id, Machine: "m", Version: 1, Node: "end", Status: fsm.StatusFinal, Rev: 1, CreatedAt: at, UpdatedAt: at}
			if err := tx.PutInstance(in); err != nil {
				return err
			}
			for range 3 {
				if _, err := tx.AppendChange(fsm.Change{Instance: id, Machine: "m", Version: 1, At: at, Kind: fsm.ChangeStarted, ToNode: "end", ToStatus: fsm.StatusFinal}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(context.Background(), func(tx store.Tx) error {
		if _, err := tx.TrimChanges(3, time.Time{}, 0); err != nil {
			return err
		}
		return tx.DeleteInstance("a")
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := bolt.Check(path, &out); err != nil {
		t.Fatalf("Check: %v\n%s", err, out.String())
	}
}

// TestOpenIndexesFinished: a file written before the finished index
// existed gets it at Open, so that retention finds its FINAL instances.
func TestOpenIndexesFinished(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dfsmr.db")
	s := mustOpen(t, path, bolt.Options{})
	at := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	err := s.Update(context.Background(), func(tx store.Tx) error {
		if err := tx.PutInstance(fsm.Instance{ID: "done", Machine: "m", Version: 1, Node: "end", Status: fsm.StatusFinal, Rev: 1, CreatedAt: at, UpdatedAt: at}); err != nil {
			return err
		}
		return tx.PutInstance(fsm.Instance{ID: "run", Machine: "m", Version: 1, Node: "n", Status: fsm.StatusReady, Rev: 1, CreatedAt: at, UpdatedAt: at, DueAt: at})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { return tx.DeleteBucket([]byte("finished")) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := bolt.Check(path, &out); err != nil {
		t.Fatalf("Check of the file without the index: %v\n%s", err, out.String())
	}

	s = mustOpen(t, path, bolt.Options{})
	var ids []string
	err = s.View(context.Background(), func(tx store.ReadTx) error {
		ids, err = tx.Finished(at.Add(time.Second), 0)
		return err
	})
	if err != nil || len(ids) != 1 || ids[0] != "done" {
		t.Fatalf("Finished after reopen = %q, %v; want [done]", ids, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := bolt.Check(path, &out); err != nil {
		t.Fatalf("Check after Open: %v\n%s", err, out.String())
	}
}
