package server_test

import (
	"context"
	"strings"
	"testing"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func signalDevice(t *testing.T, env *testEnv, id, signal string) error {
	t.Helper()
	_, err := pb.NewDeviceServiceClient(env.conn).SignalDevice(context.Background(), &pb.SignalDeviceRequest{DeviceId: id, Signal: signal})
	return err
}

// TestStuckPrinterFaultWithoutJob: a printer that faulted while ready (no
// job) waits, its queue with it, until an operator signals it cleared; the
// signal goes to the printer as a command, and the queue moves again.
func TestStuckPrinterFaultWithoutJob(t *testing.T) {
	env := mustServer(t, server.Config{})
	p := newPrinter(t, env, "p1", "")
	wantNoCmd(t, p.connect())
	wantCode(t, signalDevice(t, env, "p1", "cleared"), codes.FailedPrecondition) // nothing to clear in ready
	p.fail()
	wantNoCmd(t, p.report())
	order(t, env, &pb.SubmitOrderRequest{OrderId: "o", Model: "m", Quantity: 2, Printer: "p1"})
	wantNoCmd(t, p.report()) // the queue waits for the operator
	wantJob(t, env, "o-1", "queued")
	wantCode(t, signalDevice(t, env, "p1", "recover"), codes.FailedPrecondition) // a command, not a signal
	wantCode(t, signalDevice(t, env, "p9", "cleared"), codes.NotFound)
	wantCode(t, signalDevice(t, env, "p1", ""), codes.InvalidArgument)
	if err := signalDevice(t, env, "p1", "cleared"); err != nil {
		t.Fatal(err)
	}
	cl := p.pushed()
	wantCmd(t, cl, "cleared", "")
	wantCmd(t, p.carry(cl), "print", "o-1")
	var signaled bool
	for _, c := range allChanges(t, env) {
		if c.GetKind() == pb.ChangeKind_CHANGE_KIND_SIGNALED && c.GetDevice() == "p1" && c.GetTransition() == "cleared" && c.GetInstance() == "" {
			signaled = true
		}
	}
	if !signaled {
		t.Fatal("no SIGNALED change of the printer in the changelog")
	}
}

// TestStuckPrinterFaultWithPartOnBed: a printer that faulted while its
// finished part waited on the bed; the operator takes the part off and
// signals the printer cleared, offline or not: the job is done and the next
// one prints.
func TestStuckPrinterFaultWithPartOnBed(t *testing.T) {
	env := mustServer(t, server.Config{})
	p := newPrinter(t, env, "p1", "")
	wantNoCmd(t, p.connect())
	order(t, env, &pb.SubmitOrderRequest{OrderId: "o", Model: "m", Quantity: 2, Printer: "p1"})
	wantNoCmd(t, p.carry(p.pushed()))
	p.finish()
	wantNoCmd(t, p.report())
	wantJob(t, env, "o-1", "awaiting_retrieval")
	p.fail()
	wantNoCmd(t, p.report())
	p.close()
	if err := signalDevice(t, env, "p1", "cleared"); err != nil { // offline: sent when it is back
		t.Fatal(err)
	}
	cl := p.connect()
	wantCmd(t, cl, "cleared", "o-1")
	wantCmd(t, p.carry(cl), "print", "o-2")
	wantJob(t, env, "o-1", "done")
}

// TestCancelPrintingJob: CancelInstance on a job being printed tells the
// printer to stop; the job ends only once the printer reported it stopped,
// and the partial part keeps the next job waiting until the operator
// cleared the bed.
func TestCancelPrintingJob(t *testing.T) {
	env := mustServer(t, server.Config{})
	p := newPrinter(t, env, "p1", "")
	wantNoCmd(t, p.connect())
	order(t, env, &pb.SubmitOrderRequest{OrderId: "o", Model: "m", Quantity: 2, Printer: "p1"})
	wantNoCmd(t, p.carry(p.pushed()))
	if _, err := env.instances.CancelInstance(context.Background(), &pb.CancelInstanceRequest{Id: "o-1", Reason: "wrong colour"}); err != nil {
		t.Fatal(err)
	}
	wantJob(t, env, "o-1", "canceling")
	stop := p.pushed()
	wantCmd(t, stop, "cancel", "o-1")
	wantJob(t, env, "o-1", "canceling") // not before the printer confirmed
	wantNoCmd(t, p.carry(stop))
	wantJob(t, env, "o-1", "canceled")
	if n := notices(t, env, "o-1"); len(n) != 1 || !strings.HasPrefix(n[0], "print stopped") {
		t.Fatalf("notices %q", n)
	}
	wantJob(t, env, "o-2", "queued")
	if err := signalDevice(t, env, "p1", "cleared"); err != nil {
		t.Fatal(err)
	}
	cl := p.pushed()
	wantCmd(t, cl, "cleared", "")
	wantCmd(t, p.carry(cl), "print", "o-2")
	// A queued job is still cancelled at once.
	order(t, env, &pb.SubmitOrderRequest{OrderId: "q", Model: "m", Quantity: 1, Printer: "p1"})
	if _, err := env.instances.CancelInstance(context.Background(), &pb.CancelInstanceRequest{Id: "q-1"}); err != nil {
		t.Fatal(err)
	}
	wantJob(t, env, "q-1", "dfsmr.aborted")
	// A part on the bed is no print to stop: the cancel is refused, the
	// job stays the printer's.
	wantNoCmd(t, p.carry(p.report()))
	p.finish()
	wantNoCmd(t, p.report())
	_, err := env.instances.CancelInstance(context.Background(), &pb.CancelInstanceRequest{Id: "o-2"})
	wantCode(t, err, codes.FailedPrecondition)
	wantJob(t, env, "o-2", "awaiting_retrieval")
}

// TestForgottenJobNeverPrintedTwice: a printer that carried out a print
// command and lost power before it said so comes back ready without the
// job: its echo of the last command it carried out tells the server the
// job was forgotten, not the command lost. The job fails instead of being
// printed again; a truly lost command is sent again.
func TestForgottenJobNeverPrintedTwice(t *testing.T) {
	env := mustServer(t, server.Config{})
	p := newPrinter(t, env, "p1", "")
	wantNoCmd(t, p.connect())
	order(t, env, &pb.SubmitOrderRequest{OrderId: "o", Model: "m", Quantity: 3, Printer: "p1"})

	// Lost: the printer never got the print command.
	lost := p.pushed()
	wantCmd(t, lost, "print", "o-1")
	p.drop(env)
	again := p.connect()
	wantCmd(t, again, "print", "o-1")

	// Forgotten: carried out (and kept in its last command), then a power
	// cut before it reported printing.
	p.lastCmd, p.printed["o-1"] = again.GetSeq(), true
	p.drop(env)
	p.state.LastCommand = p.lastCmd
	wantNoCmd(t, p.connect())
	wantJob(t, env, "o-1", "failed")
	if n := notices(t, env, "o-1"); len(n) != 1 || !strings.Contains(n[0], "forgot the job") {
		t.Fatalf("notices %q", n)
	}
	operator(t, env, "o-1", "recovered")
	next := p.pushed()
	wantCmd(t, next, "print", "o-2")
	wantJob(t, env, "o-1", "scrapped")

	// Forgotten after it reported printing: back ready without the job.
	wantNoCmd(t, p.carry(next))
	p.drop(env)
	p.state.Node, p.state.Job = "ready", ""
	wantNoCmd(t, p.connect())
	wantJob(t, env, "o-2", "failed")
	wantJob(t, env, "o-3", "queued")
}

// TestOrderStatusAndReprint: an order's jobs by node; a job whose print
// failed is reprinted as a new job of the same order, on the same printer,
// once however often the operator asks.
func TestOrderStatusAndReprint(t *testing.T) {
	env := mustServer(t, server.Config{})
	devs := pb.NewDeviceServiceClient(env.conn)
	ctx := context.Background()
	p := newPrinter(t, env, "p1", "")
	wantNoCmd(t, p.connect())
	order(t, env, &pb.SubmitOrderRequest{OrderId: "o", Model: "m", Quantity: 2, Printer: "p1"})
	wantNoCmd(t, p.carry(p.pushed()))
	p.fail()
	wantNoCmd(t, p.report())
	if _, err := devs.ReprintJob(ctx, &pb.ReprintJobRequest{JobId: "o-1"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("reprint of a failed job the printer still holds: %v, want FailedPrecondition", err)
	}
	operator(t, env, "o-1", "recovered")
	print2 := p.carry(p.pushed()) // recover, then the next job
	wantCmd(t, print2, "print", "o-2")
	wantNoCmd(t, p.carry(print2))
	wantJob(t, env, "o-1", "scrapped")

	re, err := devs.ReprintJob(ctx, &pb.ReprintJobRequest{JobId: "o-1"})
	if err != nil {
		t.Fatal(err)
	}
	if j := re.GetJob(); j.GetId() != "o-1r1" || j.GetNode() != "queued" || j.GetParams()["reprint_of"] != "o-1" || j.GetParams()["order"] != "o" || j.GetParams()["printer"] != "p1" {
		t.Fatalf("reprint %v", j)
	}
	if again, err := devs.ReprintJob(ctx, &pb.ReprintJobRequest{JobId: "o-1"}); err != nil || again.GetJob().GetId() != "o-1r1" {
		t.Fatalf("second reprint: %v, %v; want o-1r1 again", again, err)
	}
	if _, err := devs.ReprintJob(ctx, &pb.ReprintJobRequest{JobId: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("reprint of an unknown job: %v", err)
	}
	if _, err := devs.ReprintJob(ctx, &pb.ReprintJobRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("reprint without a job: %v", err)
	}

	st, err := devs.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "o"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, j := range st.GetJobs() {
		ids = append(ids, j.GetId())
	}
	if strings.Join(ids, " ") != "o-1 o-1r1 o-2" || st.GetReprints() != 1 ||
		st.GetNodes()["scrapped"] != 1 || st.GetNodes()["queued"] != 1 || st.GetNodes()["printing"] != 1 {
		t.Fatalf("order status %v", st)
	}
	if _, err := devs.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "x"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown order: %v", err)
	}

	// The reprint prints after the job before it.
	p.finish()
	wantNoCmd(t, p.report())
	operator(t, env, "o-2", "retrieved")
	wantCmd(t, p.carry(p.pushed()), "print", "o-1r1")
}

// TestDeviceSignalWaitsForAnOutstandingCommand: a printer signal does not
// replace a command the printer may be carrying out (its report is checked
// against that command); the same signal again is a no-op.
func TestDeviceSignalWaitsForAnOutstandingCommand(t *testing.T) {
	env := mustServer(t, server.Config{})
	p := newPrinter(t, env, "p1", "")
	wantNoCmd(t, p.connect())
	order(t, env, &pb.SubmitOrderRequest{OrderId: "o", Model: "m", Quantity: 1, Printer: "p1"})
	wantNoCmd(t, p.carry(p.pushed()))
	p.fail()
	wantNoCmd(t, p.report())
	operator(t, env, "o-1", "recovered")
	rec := p.pushed()
	wantCmd(t, rec, "recover", "o-1")
	wantCode(t, signalDevice(t, env, "p1", "cleared"), codes.FailedPrecondition)
	wantNoCmd(t, p.carry(rec))
	wantJob(t, env, "o-1", "scrapped")

	p.fail()
	wantNoCmd(t, p.report())
	if err := signalDevice(t, env, "p1", "cleared"); err != nil {
		t.Fatal(err)
	}
	cl := p.pushed()
	if err := signalDevice(t, env, "p1", "cleared"); err != nil { // sent already
		t.Fatal(err)
	}
	wantCmd(t, cl, "cleared", "")
	wantNoCmd(t, p.carry(cl))
	if d := deviceOf(t, env, "p1"); d.GetNode() != "ready" {
		t.Fatalf("p1 in %s, want ready", d.GetNode())
	}
}
