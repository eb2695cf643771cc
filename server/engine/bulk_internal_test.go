package engine

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/dfsmr/dfsmr/machines"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store/bolt"
)

// TestBulkApplySkipsWhatChangedAfterTheCount changes some counted
// instances between the count and the batches: those are skipped, and an
// instance that comes to match after the count is not touched.
func TestBulkApplySkipsWhatChangedAfterTheCount(t *testing.T) {
	var e *Engine
	st, err := bolt.Open(filepath.Join(t.TempDir(), "dfsmr.db"), bolt.Options{CommitHook: func(c []fsm.Change) { e.OnCommit(c) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e = New(st, Options{})
	ctx := context.Background()
	for _, src := range machines.Bundled() {
		if _, _, err := e.DefineMachine(ctx, src.File, src.Data, "test"); err != nil {
			t.Fatal(err)
		}
	}
	start := func(id string) {
		t.Helper()
		if _, _, err := e.StartInstance(ctx, StartArgs{ID: id, Machine: "report"}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		start(fmt.Sprint("r-", i))
	}
	a := BulkArgs{Machine: "report", Status: fsm.StatusReady, Reason: "bulk", Actor: "ops"}
	f, match, act := e.cancelPlan(a)
	res, ids, err := e.bulkCount(ctx, f, false, match)
	if err != nil || res.Matched != 4 || !slices.Equal(ids, []string{"r-0", "r-1", "r-2", "r-3"}) {
		t.Fatalf("count: %+v %v %v", res, ids, err)
	}

	// Meanwhile: r-0 is leased (it leaves the READY filter), r-1 is
	// cancelled by someone else, and r-4 starts READY.
	if in, ok, err := e.Ready(ctx, ReadyArgs{Worker: "w", Machine: "report"}); err != nil || !ok || in.ID != "r-0" {
		t.Fatalf("Ready: %v %v %v", in.ID, ok, err)
	}
	if _, err := e.CancelInstance(ctx, "r-1", "by hand", "someone"); err != nil {
		t.Fatal(err)
	}
	start("r-4")

	changed, skipped, err := e.bulkApply(ctx, ids, match, act)
	if err != nil || changed != 2 || skipped != 2 {
		t.Fatalf("apply: changed %d skipped %d, %v; want 2 and 2", changed, skipped, err)
	}
	want := map[string]string{"r-0": "LEASED", "r-1": "by hand", "r-2": "bulk", "r-3": "bulk", "r-4": "READY"}
	for id, w := range want {
		in, err := e.GetInstance(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		got := in.Status.String()
		if in.Node == fsm.NodeAborted {
			_, hist, err := e.historyOf(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			got = hist[len(hist)-1].Reason
		}
		if got != w {
			t.Errorf("%s: %s, want %s", id, got, w)
		}
	}
}

func (e *Engine) historyOf(ctx context.Context, id string) (fsm.Instance, []fsm.Change, error) {
	var out []fsm.Change
	in, _, err := e.InstanceHistory(ctx, id, 0, func(c fsm.Change) bool { out = append(out, c); return true })
	return in, out, err
}
