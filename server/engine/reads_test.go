package engine_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/dfsmr/dfsmr/machines"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
	"github.com/dfsmr/dfsmr/server/store/bolt"
)

func listDevices(ctx context.Context, e *engine.Engine, pool string) (out []engine.DeviceInfo, err error) {
	err = e.ListDevices(ctx, pool, "", func(d engine.DeviceInfo) bool { out = append(out, d); return true })
	return out, err
}

func listInstances(ctx context.Context, e *engine.Engine, f store.InstanceFilter) (out []fsm.Instance, err error) {
	err = e.ListInstances(ctx, f, "", func(in fsm.Instance) bool { out = append(out, in); return true })
	return out, err
}

func history(ctx context.Context, e *engine.Engine, id string) (in fsm.Instance, out []fsm.Change, err error) {
	in, _, err = e.InstanceHistory(ctx, id, 0, func(c fsm.Change) bool { out = append(out, c); return true })
	return in, out, err
}

// countingStore counts the records read transactions hand out.
type countingStore struct {
	store.Store
	read *int
}

func (s countingStore) View(ctx context.Context, fn func(store.ReadTx) error) error {
	return s.Store.View(ctx, func(tx store.ReadTx) error { return fn(countingTx{tx, s.read}) })
}

type countingTx struct {
	store.ReadTx
	read *int
}

func (tx countingTx) History(id string) ([]fsm.Change, error) {
	cs, err := tx.ReadTx.History(id)
	*tx.read += len(cs)
	return cs, err
}

func (tx countingTx) HistoryFrom(id string, from uint64, limit int) ([]fsm.Change, error) {
	cs, err := tx.ReadTx.HistoryFrom(id, from, limit)
	*tx.read += len(cs)
	return cs, err
}

func (tx countingTx) Instances(f store.InstanceFilter, after string, limit int) ([]fsm.Instance, error) {
	list, err := tx.ReadTx.Instances(f, after, limit)
	*tx.read += len(list)
	return list, err
}

// TestPagedReadsReadOnePage stops a history and a list after a few records:
// the engine reads little more than those from the store, however long the
// history or the list, and resumes where the page ended.
func TestPagedReadsReadOnePage(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "dfsmr.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var read int
	e := engine.New(countingStore{st, &read}, engine.Options{})
	ctx := context.Background()
	for _, src := range machines.Bundled() {
		if _, _, err := e.DefineMachine(ctx, src.File, src.Data, "test"); err != nil {
			t.Fatal(err)
		}
	}
	const n = 200
	for i := range n {
		a := engine.StartArgs{ID: fmt.Sprintf("r-%03d", i), Machine: "report"}
		if i == 0 {
			a.Priority = 1 // leased first, every time
		}
		if _, _, err := e.StartInstance(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	// r-000 gets a long history: lease and relinquish, again and again.
	for range n {
		in, ok, err := e.Ready(ctx, engine.ReadyArgs{Worker: "w", Machine: "report"})
		if err != nil || !ok {
			t.Fatalf("ready: %v %v", ok, err)
		}
		if _, err := e.Relinquish(ctx, in.ID, in.Lease.Token, ""); err != nil {
			t.Fatal(err)
		}
	}
	_, all, err := history(ctx, e, "r-000")
	if err != nil || len(all) < n {
		t.Fatalf("history of r-000: %d changes, %v", len(all), err)
	}

	read = 0
	var page []fsm.Change
	_, next, err := e.InstanceHistory(ctx, "r-000", 0, func(c fsm.Change) bool {
		if len(page) == 5 {
			return false
		}
		page = append(page, c)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if read > 5+16 {
		t.Errorf("a history page of 5 read %d changes of %d", read, len(all))
	}
	if next != all[5].Seq || !slices.EqualFunc(page, all[:5], func(a, b fsm.Change) bool { return a.Seq == b.Seq }) {
		t.Errorf("page %v next %d; want the first five and %d", len(page), next, all[5].Seq)
	}
	var rest []fsm.Change
	_, next, err = e.InstanceHistory(ctx, "r-000", next, func(c fsm.Change) bool { rest = append(rest, c); return true })
	if err != nil || next != 0 || len(rest) != len(all)-5 || rest[0].Seq != all[5].Seq {
		t.Errorf("rest of the history: %d changes from %d, next %d, %v", len(rest), rest[0].Seq, next, err)
	}

	read = 0
	var ids []string
	err = e.ListInstances(ctx, store.InstanceFilter{}, "r-009", func(in fsm.Instance) bool {
		if len(ids) == 3 {
			return false
		}
		ids = append(ids, in.ID)
		return true
	})
	if err != nil || !slices.Equal(ids, []string{"r-010", "r-011", "r-012"}) {
		t.Fatalf("list after r-009: %v, %v", ids, err)
	}
	if read > 3+16 {
		t.Errorf("a list page of 3 read %d instances of %d", read, n)
	}
}
