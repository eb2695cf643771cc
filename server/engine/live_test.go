package engine_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/internal/clock"
	"github.com/dfsmr/dfsmr/machines"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
	"github.com/dfsmr/dfsmr/server/store/bolt"
)

// liveEngine is an engine on a fake clock whose store signals every commit
// on commits.
func liveEngine(t *testing.T) (*engine.Engine, *bolt.Store, *clock.Fake, <-chan struct{}) {
	t.Helper()
	var e *engine.Engine
	commits := make(chan struct{}, 100)
	st, err := bolt.Open(filepath.Join(t.TempDir(), "dfsmr.db"), bolt.Options{
		CommitHook: func(c []fsm.Change) { e.OnCommit(c) },
		CommitObserver: func(int, time.Duration) {
			select {
			case commits <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	e = engine.New(st, engine.Options{Clock: clk})
	t.Cleanup(func() { st.Close() })
	for _, src := range machines.Bundled() {
		if _, _, err := e.DefineMachine(context.Background(), src.File, src.Data, "test"); err != nil {
			t.Fatal(err)
		}
	}
	return e, st, clk, commits
}

func storedDevice(t *testing.T, st store.Store, id string) fsm.Device {
	t.Helper()
	var d fsm.Device
	if err := st.View(context.Background(), func(tx store.ReadTx) error {
		var err error
		d, err = tx.Device(id)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return d
}

func listedDevice(t *testing.T, e *engine.Engine, id string) engine.DeviceInfo {
	t.Helper()
	devs, err := listDevices(context.Background(), e, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if d.ID == id {
			return d
		}
	}
	t.Fatalf("device %q not listed in %+v", id, devs)
	return engine.DeviceInfo{}
}

// TestQuietRoundsWriteNothing: the progress reports of a print decide
// nothing and write nothing, yet ListDevices and the next rounds see their
// seq, time and progress; the rounds that decide (a command, a move) write
// them with the decision, and the end of the stream writes the rest.
func TestQuietRoundsWriteNothing(t *testing.T) {
	e, st, clk, _ := liveEngine(t)
	ctx := context.Background()
	conn := mustConnect(t, e, "p1", "lab", "ready")
	if _, _, err := e.SubmitOrder(ctx, engine.OrderArgs{ID: "o", Model: "cube", Quantity: 1, Printer: "p1"}); err != nil {
		t.Fatal(err)
	}
	cmd, err := e.Poke(ctx, "p1", conn)
	if err != nil || cmd == nil || cmd.Name != "print" {
		t.Fatalf("Poke = %+v, %v; want print", cmd, err)
	}
	if _, err := e.Report(ctx, "p1", conn, fsm.DeviceReport{Seq: 2, Node: "printing", Job: "o-1", Progress: 0.1}); err != nil {
		t.Fatal(err)
	}
	ops, stats := st.Stats().Ops, e.DeviceStats()
	for seq := uint64(3); seq <= 6; seq++ {
		clk.Advance(time.Second)
		cmd, err := e.Report(ctx, "p1", conn, fsm.DeviceReport{Seq: seq, Node: "printing", Job: "o-1", Progress: float64(seq) / 10})
		if err != nil || cmd != nil {
			t.Fatalf("report %d = %+v, %v", seq, cmd, err)
		}
		if cmd, err := e.Poke(ctx, "p1", conn); err != nil || cmd != nil {
			t.Fatalf("poke after report %d = %+v, %v", seq, cmd, err)
		}
	}
	if got := st.Stats().Ops; got != ops {
		t.Fatalf("quiet rounds made %d store updates, want 0", got-ops)
	}
	if got := e.DeviceStats(); got.QuietRounds-stats.QuietRounds != 8 || got.WrittenRounds != stats.WrittenRounds {
		t.Fatalf("DeviceStats %+v after %+v, want 8 more quiet rounds and no written one", got, stats)
	}
	if d := storedDevice(t, st, "p1"); d.ReportSeq != 2 || d.Progress != 0.1 {
		t.Fatalf("stored %+v, want the fields of report 2", d)
	}
	d := listedDevice(t, e, "p1")
	if d.ReportSeq != 6 || d.Progress != 0.6 || !d.LastSeen.Equal(clk.Now()) {
		t.Fatalf("listed %+v, want report 6's seq, progress and time %v", d, clk.Now())
	}
	// The seq is checked against the last report, not the last write.
	var ie *fsm.InvalidError
	if _, err := e.Report(ctx, "p1", conn, fsm.DeviceReport{Seq: 6, Node: "printing", Job: "o-1"}); !errors.As(err, &ie) || ie.Field != "report.seq" {
		t.Fatalf("a repeated seq: %v, want invalid report.seq", err)
	}

	// A round that decides writes the live fields with its decision.
	clk.Advance(time.Second)
	if _, err := e.Report(ctx, "p1", conn, fsm.DeviceReport{Seq: 7, Node: "waiting_retrieval", Job: "o-1", Progress: 1}); err != nil {
		t.Fatal(err)
	}
	if d := storedDevice(t, st, "p1"); d.ReportSeq != 7 || d.Progress != 1 || !d.LastSeen.Equal(clk.Now()) {
		t.Fatalf("stored %+v after a move, want report 7's fields", d)
	}
	clk.Advance(time.Second)
	if _, err := e.Report(ctx, "p1", conn, fsm.DeviceReport{Seq: 8, Node: "waiting_retrieval", Job: "o-1", Progress: 1}); err != nil {
		t.Fatal(err)
	}
	seen := clk.Now()
	clk.Advance(time.Second)
	if err := e.Disconnect(ctx, "p1", conn, "bye"); err != nil {
		t.Fatal(err)
	}
	if d := storedDevice(t, st, "p1"); d.ReportSeq != 8 || d.Online || !d.LastSeen.Equal(clk.Now()) {
		t.Fatalf("stored %+v after the stream ended, want report 8's seq, offline at %v (last report %v)", d, clk.Now(), seen)
	}
}

// TestFlushLive: the live fields of every device that reported are written
// every LiveFlush, in one commit for all of them.
func TestFlushLive(t *testing.T) {
	e, st, clk, commits := liveEngine(t)
	ctx := context.Background()
	if err := e.Lead(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Follow(ctx) })
	ids := []string{"a", "b", "c"}
	conns := map[string]uint64{}
	for _, id := range ids {
		conns[id] = mustConnect(t, e, id, "lab", "ready")
	}
	clk.Advance(time.Millisecond)
	for _, id := range ids {
		if _, err := e.Report(ctx, id, conns[id], fsm.DeviceReport{Seq: 2, Node: "ready"}); err != nil {
			t.Fatal(err)
		}
	}
	for range len(commits) {
		<-commits
	}
	before := st.Stats().Commits
	clk.Advance(engine.DefaultLiveFlush)
	<-commits
	if got := st.Stats().Commits - before; got != 1 {
		t.Fatalf("the flush made %d commits, want 1", got)
	}
	for _, id := range ids {
		if d := storedDevice(t, st, id); d.ReportSeq != 2 {
			t.Fatalf("stored %+v after the flush, want report 2", d)
		}
	}
	// Nothing new: the next flush writes nothing.
	if err := e.FlushLive(ctx); err != nil {
		t.Fatal(err)
	}
	if got := st.Stats().Commits - before; got != 1 {
		t.Fatalf("%d commits after a flush with nothing to write, want 1", got)
	}
}
