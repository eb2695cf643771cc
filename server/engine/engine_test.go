package engine_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/dfsmr/dfsmr/machines"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
	"github.com/dfsmr/dfsmr/server/store/bolt"
)

func mustEngine(t *testing.T) *engine.Engine {
	t.Helper()
	var e *engine.Engine
	st, err := bolt.Open(filepath.Join(t.TempDir(), "dfsmr.db"), bolt.Options{
		CommitHook: func(c []fsm.Change) { e.OnCommit(c) },
	})
	if err != nil {
		t.Fatal(err)
	}
	e = engine.New(st, engine.Options{})
	t.Cleanup(func() { st.Close() })
	for _, src := range machines.Bundled() {
		if _, _, err := e.DefineMachine(context.Background(), src.File, src.Data, "test"); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// TestConcurrentWorkersNeverShareALease runs many workers against one queue:
// every instance is leased exactly once and every report lands.
func TestConcurrentWorkersNeverShareALease(t *testing.T) {
	e := mustEngine(t)
	ctx := context.Background()
	const n, workers = 400, 16
	for i := range n {
		if _, _, err := e.StartInstance(ctx, engine.StartArgs{ID: fmt.Sprintf("r-%03d", i), Machine: "report"}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	leasedBy := map[string]string{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprint("w", w)
			for {
				in, ok, err := e.Ready(ctx, engine.ReadyArgs{Worker: name, Machine: "report", Node: "downloadable"})
				if err != nil {
					t.Error(err)
					return
				}
				if !ok {
					return
				}
				mu.Lock()
				if prev, dup := leasedBy[in.ID]; dup {
					t.Errorf("%s leased by %s and %s", in.ID, prev, name)
				}
				leasedBy[in.ID] = name
				mu.Unlock()
				if _, err := e.Transition(ctx, engine.TransitionArgs{ID: in.ID, Token: in.Lease.Token, Transition: "ok"}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if len(leasedBy) != n {
		t.Fatalf("%d of %d instances leased", len(leasedBy), n)
	}
	list, err := listInstances(ctx, e, store.InstanceFilter{Machine: "report", Node: "uploadable"})
	if err != nil || len(list) != n {
		t.Fatalf("%d instances in uploadable (err %v), want %d", len(list), err, n)
	}
}
