package engine_test

import (
	"context"
	"errors"
	"testing"

	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

func mustConnect(t *testing.T, e *engine.Engine, id, pool, node string) uint64 {
	t.Helper()
	conn, _, err := e.Connect(context.Background(), engine.Registration{ID: id, Pool: pool}, fsm.DeviceReport{Seq: 1, Node: node})
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestReadyNeverHandsOutPrintJobs: print jobs are HELD; no Ready, with any
// filter, leases one, and StartInstance cannot make a print job outside a
// queue.
func TestReadyNeverHandsOutPrintJobs(t *testing.T) {
	e := mustEngine(t)
	ctx := context.Background()
	mustConnect(t, e, "p1", "lab", "printing") // busy: the jobs stay queued
	_, jobs, err := e.SubmitOrder(ctx, engine.OrderArgs{ID: "o", Model: "benchy", Quantity: 3, Printer: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if j.Status != fsm.StatusHeld || j.Node != "queued" {
			t.Fatalf("job %+v, want HELD in queued", j)
		}
	}
	for _, f := range []engine.ReadyArgs{{Worker: "w"}, {Worker: "w", Machine: "print_job"}, {Worker: "w", Machine: "print_job", Node: "queued"}} {
		if in, ok, err := e.Ready(ctx, f); err != nil || ok {
			t.Fatalf("Ready(%+v) = %+v, %v, %v; want nothing", f, in, ok, err)
		}
	}
	var ie *fsm.InvalidError
	if _, _, err := e.StartInstance(ctx, engine.StartArgs{ID: "rogue", Machine: "print_job"}); !errors.As(err, &ie) || ie.Field != "machine" {
		t.Fatalf("StartInstance of a print job: %v, want invalid machine", err)
	}
}

func TestSubmitOrder(t *testing.T) {
	e := mustEngine(t)
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		mustConnect(t, e, id, "lab", "printing")
	}
	mustConnect(t, e, "x", "other", "printing")
	if _, _, err := e.SubmitOrder(ctx, engine.OrderArgs{ID: "first", Model: "m", Quantity: 2, Printer: "a"}); err != nil {
		t.Fatal(err)
	}
	_, jobs, err := e.SubmitOrder(ctx, engine.OrderArgs{ID: "o", Model: "benchy", Quantity: 10, Pool: "lab", Priority: 3})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for i, j := range jobs {
		if want := []string{"o-01", "o-02", "o-03", "o-04", "o-05", "o-06", "o-07", "o-08", "o-09", "o-10"}[i]; j.ID != want {
			t.Fatalf("job %d id %q, want %q", i, j.ID, want)
		}
		if j.Params["model"] != "benchy" || j.Params["order"] != "o" || j.Priority != 3 {
			t.Fatalf("job %+v", j)
		}
		count[j.Params["printer"]]++
	}
	// a had 2 queued: 12 jobs over 3 printers is 4 each.
	if count["a"] != 2 || count["b"] != 4 || count["c"] != 4 {
		t.Fatalf("spread %v, want a:2 b:4 c:4", count)
	}
	devs, err := listDevices(ctx, e, "lab")
	if err != nil || len(devs) != 3 {
		t.Fatalf("ListDevices = %+v, %v", devs, err)
	}
	for _, d := range devs {
		if d.QueueLen != 4 || !d.Online || d.Node != "printing" {
			t.Fatalf("device %+v, want online, printing, 4 queued", d)
		}
	}

	// Idempotent by order id.
	_, again, err := e.SubmitOrder(ctx, engine.OrderArgs{ID: "o", Model: "benchy", Quantity: 10, Pool: "lab", Priority: 3})
	if err != nil || len(again) != 10 || again[3].ID != jobs[3].ID || again[3].Params["printer"] != jobs[3].Params["printer"] {
		t.Fatalf("resubmission: %v, %v", again, err)
	}
	for _, a := range []engine.OrderArgs{
		{ID: "o", Model: "other", Quantity: 10, Pool: "lab", Priority: 3},
		{ID: "o", Model: "benchy", Quantity: 10, Pool: "lab", Priority: 4},
		{ID: "o", Model: "benchy", Quantity: 11, Pool: "lab", Priority: 3},
		{ID: "o", Model: "benchy", Quantity: 9, Pool: "lab", Priority: 3},
		{ID: "first", Model: "m", Quantity: 2, Printer: "b"},
	} {
		if _, _, err := e.SubmitOrder(ctx, a); !errors.Is(err, engine.ErrAlreadyExists) {
			t.Errorf("SubmitOrder(%+v): %v, want ErrAlreadyExists", a, err)
		}
	}
	for _, a := range []engine.OrderArgs{
		{Model: "m", Quantity: 1, Printer: "nobody"},
		{Model: "m", Quantity: 1, Pool: "empty"},
	} {
		if _, _, err := e.SubmitOrder(ctx, a); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("SubmitOrder(%+v): %v, want ErrNotFound", a, err)
		}
	}
	for field, a := range map[string]engine.OrderArgs{
		"model":    {Quantity: 1, Printer: "a"},
		"quantity": {Model: "m", Quantity: 0, Printer: "a"},
		"printer":  {Model: "m", Quantity: 1, Printer: "a", Pool: "lab"},
	} {
		var ie *fsm.InvalidError
		if _, _, err := e.SubmitOrder(ctx, a); !errors.As(err, &ie) || ie.Field != field {
			t.Errorf("SubmitOrder(%+v): %v, want invalid %s", a, err, field)
		}
	}
	if _, _, err := e.SubmitOrder(ctx, engine.OrderArgs{Model: "m", Quantity: 1000, Pool: "other"}); err != nil {
		t.Fatalf("the largest order: %v", err)
	}
}

// TestDeviceStreams: a newer stream replaces the older one; only the live
// stream's end marks the device offline.
func TestDeviceStreams(t *testing.T) {
	e := mustEngine(t)
	ctx := context.Background()
	old := mustConnect(t, e, "p1", "", "ready")
	live := mustConnect(t, e, "p1", "", "ready")
	if _, err := e.Report(ctx, "p1", old, fsm.DeviceReport{Seq: 2, Node: "ready"}); !errors.Is(err, engine.ErrReplaced) {
		t.Fatalf("report on the replaced stream: %v, want ErrReplaced", err)
	}
	if err := e.Disconnect(ctx, "p1", old, "replaced"); err != nil {
		t.Fatal(err)
	}
	devs, _ := listDevices(ctx, e, "")
	if len(devs) != 1 || !devs[0].Online {
		t.Fatalf("after the old stream ended: %+v, want online", devs)
	}
	if _, err := e.Report(ctx, "p1", live, fsm.DeviceReport{Seq: 2, Node: "ready"}); err != nil {
		t.Fatal(err)
	}
	if err := e.Disconnect(ctx, "p1", live, "stream closed"); err != nil {
		t.Fatal(err)
	}
	devs, _ = listDevices(ctx, e, "")
	if len(devs) != 1 || devs[0].Online {
		t.Fatalf("after the live stream ended: %+v, want offline", devs)
	}
	if _, err := e.Poke(ctx, "p1", live); !errors.Is(err, engine.ErrReplaced) {
		t.Fatalf("poke of an offline device: %v, want ErrReplaced", err)
	}
}

// TestIllegalReportWritesNothing: a refused round leaves the device as it
// was (not even its new connection is recorded).
func TestIllegalReportWritesNothing(t *testing.T) {
	e := mustEngine(t)
	ctx := context.Background()
	conn := mustConnect(t, e, "p1", "", "ready")
	if err := e.Disconnect(ctx, "p1", conn, "bye"); err != nil {
		t.Fatal(err)
	}
	_, _, err := e.Connect(ctx, engine.Registration{ID: "p1"}, fsm.DeviceReport{Seq: 1, Node: "waiting_retrieval"})
	var me *fsm.MoveError
	if !errors.As(err, &me) || me.From != "ready" || me.To != "waiting_retrieval" {
		t.Fatalf("Connect with an impossible node: %v, want a MoveError", err)
	}
	devs, _ := listDevices(ctx, e, "")
	if len(devs) != 1 || devs[0].Online || devs[0].Conn != conn || devs[0].Node != "ready" {
		t.Fatalf("device after a refused round: %+v", devs)
	}
}

// TestDevicePokes: a job queued on a device and an operator signal on its
// job poke its watchers; the device's own rounds do not.
func TestDevicePokes(t *testing.T) {
	e := mustEngine(t)
	ctx := context.Background()
	conn := mustConnect(t, e, "p1", "", "ready")
	poke, stop := e.WatchDevice("p1")
	defer stop()
	other, stopOther := e.WatchDevice("p2")
	defer stopOther()
	poked := func() bool {
		select {
		case <-poke:
			return true
		default:
			return false
		}
	}
	if _, _, err := e.SubmitOrder(ctx, engine.OrderArgs{ID: "o", Model: "m", Quantity: 1, Printer: "p1"}); err != nil {
		t.Fatal(err)
	}
	if !poked() {
		t.Fatal("no poke for a new job")
	}
	cmd, err := e.Poke(ctx, "p1", conn)
	if err != nil || cmd == nil || cmd.Name != "print" || cmd.Job != "o-1" || cmd.Params["model"] != "m" {
		t.Fatalf("poke round: %+v, %v; want print o-1", cmd, err)
	}
	if poked() {
		t.Fatal("the device's own round poked it")
	}
	if _, err := e.Report(ctx, "p1", conn, fsm.DeviceReport{Seq: 2, Node: "printing", Job: "o-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Report(ctx, "p1", conn, fsm.DeviceReport{Seq: 3, Node: "waiting_retrieval", Job: "o-1"}); err != nil {
		t.Fatal(err)
	}
	if poked() {
		t.Fatal("the device's own reports poked it")
	}
	if _, err := e.SignalInstance(ctx, "o-1", "retrieved", nil, "operator"); err != nil {
		t.Fatal(err)
	}
	if !poked() {
		t.Fatal("no poke for an operator signal")
	}
	select {
	case <-other:
		t.Fatal("another device was poked")
	default:
	}
	cmd, err = e.Poke(ctx, "p1", conn)
	if err != nil || cmd == nil || cmd.Name != "done" || cmd.Job != "o-1" {
		t.Fatalf("round after retrieved: %+v, %v; want done", cmd, err)
	}
}

// TestCancelledQueuedJobIsSkipped: a job an operator cancels while it waits
// in the queue leaves the queue; the printer gets the next one.
func TestCancelledQueuedJobIsSkipped(t *testing.T) {
	e := mustEngine(t)
	ctx := context.Background()
	conn := mustConnect(t, e, "p1", "", "ready")
	if err := e.Disconnect(ctx, "p1", conn, "away"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.SubmitOrder(ctx, engine.OrderArgs{ID: "o", Model: "m", Quantity: 2, Printer: "p1"}); err != nil {
		t.Fatal(err)
	}
	if in, err := e.SignalInstance(ctx, "o-1", "cancel", nil, "operator"); err != nil || in.Node != "canceled" {
		t.Fatalf("cancel: %+v, %v", in, err)
	}
	_, cmd, err := e.Connect(ctx, engine.Registration{ID: "p1"}, fsm.DeviceReport{Seq: 1, Node: "ready"})
	if err != nil || cmd == nil || cmd.Name != "print" || cmd.Job != "o-2" {
		t.Fatalf("first round: %+v, %v; want print o-2", cmd, err)
	}
	devs, _ := listDevices(ctx, e, "")
	if len(devs) != 1 || devs[0].QueueLen != 0 || devs[0].Job != "o-2" {
		t.Fatalf("device %+v, want o-2 dispatched and an empty queue", devs)
	}
}
