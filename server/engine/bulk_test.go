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

// TestBulkCancelCommitsInBoundedBatches cancels more instances than one
// batch holds: every one is cancelled, no transaction cancels more than
// engine.BulkBatch, and the instances outside the filter stay as they were.
func TestBulkCancelCommitsInBoundedBatches(t *testing.T) {
	var (
		e       *engine.Engine
		mu      sync.Mutex
		batches []int
	)
	st, err := bolt.Open(filepath.Join(t.TempDir(), "dfsmr.db"), bolt.Options{
		CommitHook: func(cs []fsm.Change) {
			e.OnCommit(cs)
			n := 0
			for _, c := range cs {
				if c.Kind == fsm.ChangeCanceled {
					n++
				}
			}
			if n > 0 {
				mu.Lock()
				batches = append(batches, n)
				mu.Unlock()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e = engine.New(st, engine.Options{})
	ctx := context.Background()
	for _, src := range machines.Bundled() {
		if _, _, err := e.DefineMachine(ctx, src.File, src.Data, "test"); err != nil {
			t.Fatal(err)
		}
	}
	const n = 2*engine.BulkBatch + 10
	for i := range n + 1 {
		if _, _, err := e.StartInstance(ctx, engine.StartArgs{ID: fmt.Sprintf("r-%04d", i), Machine: "report"}); err != nil {
			t.Fatal(err)
		}
	}
	// r-0000 leaves the filter (READY) before the count.
	if _, ok, err := e.Ready(ctx, engine.ReadyArgs{Worker: "w", Machine: "report"}); err != nil || !ok {
		t.Fatalf("Ready: %v %v", ok, err)
	}

	res, err := e.CancelInstances(ctx, engine.BulkArgs{Machine: "report", Status: fsm.StatusReady, Expected: n, HasExpected: true, Actor: "ops"})
	if err != nil || res.Matched != n || res.Changed != n || res.Skipped != 0 || len(res.Sample) != engine.BulkSample || res.Sample[0] != "r-0001" {
		t.Fatalf("CancelInstances = %+v, %v", res, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(batches) != 3 || batches[0] != engine.BulkBatch || batches[1] != engine.BulkBatch || batches[2] != 10 {
		t.Fatalf("cancelled per transaction: %v, want [%d %d 10]", batches, engine.BulkBatch, engine.BulkBatch)
	}
	aborted, err := listInstances(ctx, e, store.InstanceFilter{Machine: "report", Node: fsm.NodeAborted})
	if err != nil || len(aborted) != n {
		t.Fatalf("%d aborted (%v), want %d", len(aborted), err, n)
	}
	leased, err := listInstances(ctx, e, store.InstanceFilter{Status: fsm.StatusLeased})
	if err != nil || len(leased) != 1 || leased[0].ID != "r-0000" {
		t.Fatalf("leased: %v %v", leased, err)
	}
}
