package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The device tests drive the server with testPrinter: a scripted printer
// built on client.Device, over real Connect streams to a real server on a
// real bbolt file. It behaves like the printer machine says a printer does,
// and refuses commands that no longer match its state, as a real printer
// must.

const waitLimit = 30 * time.Second

type testPrinter struct {
	t      *testing.T
	c      *client.Client
	id     string
	pool   string
	state  client.DeviceState
	dev    *client.Device
	resp   chan *pb.ConnectResponse
	ended  chan error
	queued []*pb.DeviceCommand // commands of the server's own rounds, not yet taken
	// lastCmd is the seq of the last command carried out; printed the
	// jobs ever started, so that a late duplicate print is refused.
	lastCmd uint64
	printed map[string]bool
}

// newPrinter makes a printer with its own connection to env's server.
func newPrinter(t *testing.T, env *testEnv, id, pool string) *testPrinter {
	t.Helper()
	c := dialPrinter(t, env)
	return &testPrinter{t: t, c: c, id: id, pool: pool, state: client.DeviceState{Node: "ready"}, printed: map[string]bool{}}
}

func dialPrinter(t *testing.T, env *testEnv) *client.Client {
	t.Helper()
	c, err := client.Dial(env.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// connect opens a stream in the printer's current state and returns the
// command answering its first report (nil for none).
func (p *testPrinter) connect() *pb.DeviceCommand {
	p.t.Helper()
	dev, err := p.c.ConnectDevice(context.Background(), &pb.DeviceRegistration{DeviceId: p.id, Pool: p.pool}, p.state)
	if err != nil {
		p.t.Fatal(err)
	}
	p.dev, p.resp, p.ended, p.queued = dev, make(chan *pb.ConnectResponse, 64), make(chan error, 1), nil
	go func(resp chan<- *pb.ConnectResponse, ended chan<- error) {
		for {
			r, err := dev.Recv()
			if err != nil {
				ended <- err
				return
			}
			resp <- r
		}
	}(p.resp, p.ended)
	return p.answer(1)
}

// answer waits for the answer to report seq, queueing the commands of the
// server's own rounds that come first.
func (p *testPrinter) answer(seq uint64) *pb.DeviceCommand {
	p.t.Helper()
	timeout := time.After(waitLimit)
	for {
		select {
		case r := <-p.resp:
			if r.GetReportSeq() == 0 {
				p.queued = append(p.queued, r.GetCommand())
				continue
			}
			if r.GetReportSeq() != seq {
				p.t.Fatalf("%s: answer to report %d while waiting for %d", p.id, r.GetReportSeq(), seq)
			}
			return r.GetCommand()
		case err := <-p.ended:
			p.t.Fatalf("%s: stream ended waiting for the answer to report %d: %v", p.id, seq, err)
		case <-timeout:
			p.t.Fatalf("%s: no answer to report %d", p.id, seq)
		}
	}
}

// pushed waits for a command of a round the server ran on its own.
func (p *testPrinter) pushed() *pb.DeviceCommand {
	p.t.Helper()
	if len(p.queued) > 0 {
		c := p.queued[0]
		p.queued = p.queued[1:]
		return c
	}
	select {
	case r := <-p.resp:
		if r.GetReportSeq() != 0 {
			p.t.Fatalf("%s: unexpected answer to report %d", p.id, r.GetReportSeq())
		}
		return r.GetCommand()
	case err := <-p.ended:
		p.t.Fatalf("%s: stream ended waiting for a command: %v", p.id, err)
	case <-time.After(waitLimit):
		p.t.Fatalf("%s: no command pushed", p.id)
	}
	return nil
}

// report sends the printer's state and returns the answer's command.
func (p *testPrinter) report() *pb.DeviceCommand {
	p.t.Helper()
	seq, err := p.dev.Report(p.state)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.answer(seq)
}

// stale says why cmd no longer matches the printer's state, or "".
func (p *testPrinter) stale(cmd *pb.DeviceCommand) string {
	switch {
	case cmd.GetSeq() <= p.lastCmd:
		return fmt.Sprintf("stale: command %d is not newer than %d", cmd.GetSeq(), p.lastCmd)
	case cmd.GetNode() != p.state.Node:
		return fmt.Sprintf("stale: decided for %s, the printer is %s", cmd.GetNode(), p.state.Node)
	case cmd.GetName() == "print" && p.printed[cmd.GetJobId()]:
		return "stale: job " + cmd.GetJobId() + " was printed already"
	case cmd.GetName() == "done" && cmd.GetJobId() != p.state.Job:
		return "stale: the printer holds job " + p.state.Job
	}
	return ""
}

// carry carries cmd out (or refuses it), reports, and returns the answer's
// command.
func (p *testPrinter) carry(cmd *pb.DeviceCommand) *pb.DeviceCommand {
	p.t.Helper()
	if cmd == nil {
		p.t.Fatalf("%s: no command to carry out", p.id)
	}
	if why := p.stale(cmd); why != "" {
		seq, err := p.dev.Reject(p.state, cmd.GetSeq(), why)
		if err != nil {
			p.t.Fatal(err)
		}
		return p.answer(seq)
	}
	p.lastCmd = cmd.GetSeq()
	switch cmd.GetName() {
	case "print":
		if cmd.GetParams()["model"] == "" {
			p.t.Fatalf("%s: print without a model: %v", p.id, cmd)
		}
		p.printed[cmd.GetJobId()] = true
		p.state = client.DeviceState{Node: "printing", Job: cmd.GetJobId()}
	case "done", "recover", "cleared":
		p.state = client.DeviceState{Node: "ready"}
	case "cancel":
		// The partial part stays on the bed; the job is over.
		p.state = client.DeviceState{Node: "waiting_retrieval"}
	default:
		p.t.Fatalf("%s: unknown command %v", p.id, cmd)
	}
	p.state.LastCommand = p.lastCmd
	return p.report()
}

func (p *testPrinter) finish() { p.state.Node, p.state.Progress = "waiting_retrieval", 1 }
func (p *testPrinter) fail()   { p.state.Node = "error" }

// drop loses the connection without a goodbye and waits until the server
// has marked the printer offline.
func (p *testPrinter) drop(env *testEnv) {
	p.t.Helper()
	p.dev.Drop()
	waitFor(p.t, func() bool { return !deviceOf(p.t, env, p.id).GetOnline() })
}

// close says goodbye and waits for the server to end the stream, which it
// does once the printer is offline.
func (p *testPrinter) close() {
	p.t.Helper()
	if err := p.dev.Close(); err != nil {
		p.t.Fatal(err)
	}
	select {
	case err := <-p.ended:
		if !errors.Is(err, io.EOF) {
			p.t.Fatalf("%s: stream ended with %v, want EOF", p.id, err)
		}
	case <-time.After(waitLimit):
		p.t.Fatalf("%s: the server did not end the stream", p.id)
	}
	p.dev.Drop()
}

func wantCmd(t *testing.T, cmd *pb.DeviceCommand, name, job string) {
	t.Helper()
	if cmd.GetName() != name || cmd.GetJobId() != job {
		t.Fatalf("command %v, want %s %s", cmd, name, job)
	}
}

func wantNoCmd(t *testing.T, cmd *pb.DeviceCommand) {
	t.Helper()
	if cmd != nil {
		t.Fatalf("command %v, want none", cmd)
	}
}

func order(t *testing.T, env *testEnv, req *pb.SubmitOrderRequest) []*pb.Instance {
	t.Helper()
	resp, err := pb.NewDeviceServiceClient(env.conn).SubmitOrder(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetJobs()
}

func deviceOf(t *testing.T, env *testEnv, id string) *pb.Device {
	t.Helper()
	resp, err := pb.NewDeviceServiceClient(env.conn).ListDevices(context.Background(), &pb.ListDevicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range resp.GetDevices() {
		if d.GetId() == id {
			return d
		}
	}
	t.Fatalf("device %s not listed", id)
	return nil
}

func jobNode(t *testing.T, env *testEnv, id string) string {
	t.Helper()
	resp, err := env.instances.GetInstance(context.Background(), &pb.GetInstanceRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetInstance().GetNode()
}

func wantJob(t *testing.T, env *testEnv, id, node string) {
	t.Helper()
	if got := jobNode(t, env, id); got != node {
		t.Fatalf("job %s in %s, want %s", id, got, node)
	}
}

func operator(t *testing.T, env *testEnv, job, signal string) {
	t.Helper()
	if _, err := env.instances.SignalInstance(context.Background(), &pb.SignalInstanceRequest{Id: job, Signal: signal}); err != nil {
		t.Fatal(err)
	}
}

// allChanges returns the whole changelog.
func allChanges(t *testing.T, env *testEnv) []*pb.Change {
	t.Helper()
	stream, err := env.changes.Changes(context.Background(), &pb.ChangesRequest{FromSeq: 1, StopAtHead: true})
	if err != nil {
		t.Fatal(err)
	}
	var out []*pb.Change
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r.GetChange())
	}
}

func notices(t *testing.T, env *testEnv, job string) []string {
	t.Helper()
	var out []string
	for _, c := range allChanges(t, env) {
		if c.GetKind() == pb.ChangeKind_CHANGE_KIND_DEVICE_NOTICE && c.GetInstance() == job {
			out = append(out, c.GetReason())
		}
	}
	return out
}

func TestScenario1_OrderQueuesJobsAndReadyPrinterGetsOne(t *testing.T) {
	env := mustServer(t, server.Config{})
	ready := newPrinter(t, env, "p1", "lab")
	wantNoCmd(t, ready.connect())
	away := newPrinter(t, env, "p2", "lab")
	wantNoCmd(t, away.connect())
	away.close() // offline: its jobs are queued all the same

	jobs := order(t, env, &pb.SubmitOrderRequest{OrderId: "o", Model: "benchy", Quantity: 4, Pool: "lab"})
	on := map[string][]string{}
	for _, j := range jobs {
		if j.GetStatus() != pb.InstanceStatus_INSTANCE_STATUS_HELD || j.GetNode() != "queued" {
			t.Fatalf("job %v, want HELD in queued", j)
		}
		on[j.GetParams()["printer"]] = append(on[j.GetParams()["printer"]], j.GetId())
	}
	if len(on["p1"]) != 2 || len(on["p2"]) != 2 {
		t.Fatalf("jobs spread %v, want 2 per printer", on)
	}
	// The ready printer gets its first job at once, without speaking.
	cmd := ready.pushed()
	wantCmd(t, cmd, "print", on["p1"][0])
	if cmd.GetParams()["model"] != "benchy" {
		t.Fatalf("print params %v", cmd.GetParams())
	}
	wantNoCmd(t, ready.carry(cmd))
	wantJob(t, env, on["p1"][0], "printing")
	wantJob(t, env, on["p1"][1], "queued")
	for _, id := range on["p2"] {
		wantJob(t, env, id, "queued")
	}
	if d := deviceOf(t, env, "p1"); !d.GetOnline() || d.GetNode() != "printing" || d.GetJobId() != on["p1"][0] || d.GetQueueLength() != 1 {
		t.Fatalf("p1 listed as %v", d)
	}
	if d := deviceOf(t, env, "p2"); d.GetOnline() || d.GetQueueLength() != 2 || d.GetJobId() != "" {
		t.Fatalf("p2 listed as %v", d)
	}
}

func TestScenario2_BusyPrinterRoundIsANoOp(t *testing.T) {
	env := mustServer(t, server.Config{})
	p := newPrinter(t, env, "p1", "")
	wantNoCmd(t, p.connect())
	order(t, env, &pb.SubmitOrderRequest{OrderId: "a", Model: "m", Quantity: 1, Printer: "p1"})
	wantNoCmd(t, p.carry(p.pushed()))
	order(t, env, &pb.SubmitOrderRequest{OrderId: "b", Model: "m", Quantity: 1, Printer: "p1"})
	p.state.Progress = 0.5
	wantNoCmd(t, p.report())
	wantJob(t, env, "b-1", "queued")
	wantJob(t, env, "a-1", "printing")
	if d := deviceOf(t, env, "p1"); d.GetJobId() != "a-1" || d.GetQueueLength() != 1 || d.GetProgress() != 0.5 {
		t.Fatalf("p1 listed as %v", d)
	}
	// The job waits for the printer to be ready again.
	p.finish()
	wantNoCmd(t, p.report())
	operator(t, env, "a-1", "retrieved")
	wantCmd(t, p.carry(p.pushed()), "print", "b-1")
	if len(p.queued) != 0 {
		t.Fatalf("unexpected commands %v", p.queued)
	}
}

func TestScenario3_RetrievedThenDoneThenNextJob(t *testing.T) {
	env := mustServer(t, server.Config{})
	p := newPrinter(t, env, "p1", "")
	wantNoCmd(t, p.connect())
	order(t, env, &pb.SubmitOrderRequest{OrderId: "o", Model: "m", Quantity: 3, Printer: "p1"})
	wantNoCmd(t, p.carry(p.pushed()))

	// Online: finished -> awaiting retrieval and a notice; the operator
	// marks it retrieved; done; ready; the next job.
	p.finish()
	wantNoCmd(t, p.report())
	wantJob(t, env, "o-1", "awaiting_retrieval")
	if n := notices(t, env, "o-1"); len(n) != 1 || n[0] != "print finished; take the part off the bed, then signal retrieved" {
		t.Fatalf("notices %q", n)
	}
	operator(t, env, "o-1", "retrieved")
	done := p.pushed()
	wantCmd(t, done, "done", "o-1")
	wantJob(t, env, "o-1", "retrieved")
	next := p.carry(done)
	wantJob(t, env, "o-1", "done")
	wantCmd(t, next, "print", "o-2")
	wantNoCmd(t, p.carry(next))

	// Offline: the operator marks the part retrieved while the printer is
	// away; its next round sends done.
	p.finish()
	wantNoCmd(t, p.report())
	p.close()
	operator(t, env, "o-2", "retrieved")
	wantJob(t, env, "o-2", "retrieved")
	done = p.connect()
	wantCmd(t, done, "done", "o-2")
	wantCmd(t, p.carry(done), "print", "o-3")
	wantJob(t, env, "o-2", "done")
}

func TestScenario4_PrinterBackOnlineReadyGetsDeferredJobs(t *testing.T) {
	env := mustServer(t, server.Config{})
	p := newPrinter(t, env, "p1", "")
	wantNoCmd(t, p.connect())
	p.close()
	order(t, env, &pb.SubmitOrderRequest{OrderId: "o", Model: "m", Quantity: 2, Printer: "p1", Priority: 1})
	order(t, env, &pb.SubmitOrderRequest{OrderId: "urgent", Model: "m", Quantity: 1, Printer: "p1", Priority: 9})
	wantJob(t, env, "o-1", "queued")
	// Back online and ready: the first report gets the most urgent job.
	cmd := p.connect()
	wantCmd(t, cmd, "print", "urgent-1")
	wantNoCmd(t, p.carry(cmd))
	if d := deviceOf(t, env, "p1"); d.GetQueueLength() != 2 {
		t.Fatalf("p1 listed as %v", d)
	}
}

func TestScenario5_ConnectionLostMidPrintReconciledOnReconnect(t *testing.T) {
	env := mustServer(t, server.Config{})
	p := newPrinter(t, env, "p1", "lab")
	other := newPrinter(t, env, "p2", "lab")
	wantNoCmd(t, p.connect())
	wantNoCmd(t, other.connect())
	order(t, env, &pb.SubmitOrderRequest{OrderId: "o", Model: "m", Quantity: 1, Printer: "p1"})
	wantNoCmd(t, p.carry(p.pushed()))

	p.drop(env)
	wantJob(t, env, "o-1", "printing")
	// Never re-dispatched: the ready printer of the same pool gets nothing.
	wantNoCmd(t, other.report())
	// Back, still printing: nothing to reconcile.
	wantNoCmd(t, p.connect())
	wantJob(t, env, "o-1", "printing")
	p.drop(env)
	// The print finishes while the printer is offline; on reconnect its
	// first report reconciles the job.
	p.finish()
	wantNoCmd(t, p.connect())
	wantJob(t, env, "o-1", "awaiting_retrieval")
	var offline int
	for _, c := range allChanges(t, env) {
		if c.GetKind() == pb.ChangeKind_CHANGE_KIND_DEVICE_OFFLINE && c.GetDevice() == "p1" {
			offline++
		}
	}
	if offline != 2 {
		t.Fatalf("%d DEVICE_OFFLINE changes for p1, want 2", offline)
	}
	operator(t, env, "o-1", "retrieved")
	wantNoCmd(t, p.carry(p.pushed()))
	wantJob(t, env, "o-1", "done")
}

func TestScenario6_FailedPrintRecoveredThenReady(t *testing.T) {
	env := mustServer(t, server.Config{})
	p := newPrinter(t, env, "p1", "")
	wantNoCmd(t, p.connect())
	order(t, env, &pb.SubmitOrderRequest{OrderId: "o", Model: "m", Quantity: 3, Printer: "p1"})
	wantNoCmd(t, p.carry(p.pushed()))

	// Online failure.
	p.fail()
	wantNoCmd(t, p.report())
	wantJob(t, env, "o-1", "failed")
	if n := notices(t, env, "o-1"); len(n) != 1 || n[0] != "print failed; clear the printer, then signal recovered" {
		t.Fatalf("notices %q", n)
	}
	operator(t, env, "o-1", "recovered")
	rec := p.pushed()
	wantCmd(t, rec, "recover", "o-1")
	next := p.carry(rec)
	wantJob(t, env, "o-1", "scrapped")
	wantCmd(t, next, "print", "o-2")
	wantNoCmd(t, p.carry(next))

	// Offline failure, recovered while offline.
	p.close()
	p.fail()
	wantNoCmd(t, p.connect())
	wantJob(t, env, "o-2", "failed")
	p.close()
	operator(t, env, "o-2", "recovered")
	rec = p.connect()
	wantCmd(t, rec, "recover", "o-2")
	wantCmd(t, p.carry(rec), "print", "o-3")
	wantJob(t, env, "o-2", "scrapped")
}

func TestScenario7_PlugPulledPrinterRestartsInError(t *testing.T) {
	env := mustServer(t, server.Config{})
	p := newPrinter(t, env, "p1", "")
	wantNoCmd(t, p.connect())
	order(t, env, &pb.SubmitOrderRequest{OrderId: "o", Model: "m", Quantity: 2, Printer: "p1"})
	wantNoCmd(t, p.carry(p.pushed()))
	// The plug is pulled: no goodbye; the printer restarts in error.
	p.drop(env)
	p.fail()
	wantNoCmd(t, p.connect())
	wantJob(t, env, "o-1", "failed")
	wantJob(t, env, "o-2", "queued")
	operator(t, env, "o-1", "recovered")
	wantCmd(t, p.carry(p.pushed()), "print", "o-2")
}

func TestScenario8_StaleCommandRejectedNothingBreaks(t *testing.T) {
	env := mustServer(t, server.Config{})
	p := newPrinter(t, env, "p1", "")
	wantNoCmd(t, p.connect())
	order(t, env, &pb.SubmitOrderRequest{OrderId: "o", Model: "m", Quantity: 2, Printer: "p1"})
	print := p.pushed()
	wantNoCmd(t, p.carry(print))
	// The same print arrives again, late: the printer refuses it and says
	// so; the server records the refusal and decides nothing new.
	wantNoCmd(t, p.carry(print))
	var rejected []*pb.Change
	for _, c := range allChanges(t, env) {
		if c.GetKind() == pb.ChangeKind_CHANGE_KIND_DEVICE_REJECTED {
			rejected = append(rejected, c)
		}
	}
	if len(rejected) != 1 || rejected[0].GetToken() != print.GetSeq() || rejected[0].GetDevice() != "p1" {
		t.Fatalf("rejections %v, want one of command %d", rejected, print.GetSeq())
	}
	// And the loop goes on.
	p.finish()
	wantNoCmd(t, p.report())
	operator(t, env, "o-1", "retrieved")
	done := p.pushed()
	next := p.carry(done)
	wantCmd(t, next, "print", "o-2")
	// A late done (the part is long gone) is refused too. The printer is
	// still ready, so the round sends the print of o-2 again, with its
	// seq; carried out, it makes the first copy of it late in turn.
	again := p.carry(done)
	wantCmd(t, again, "print", "o-2")
	if again.GetSeq() != next.GetSeq() {
		t.Fatalf("print sent again with seq %d, want its seq %d", again.GetSeq(), next.GetSeq())
	}
	wantNoCmd(t, p.carry(again))
	wantNoCmd(t, p.carry(next))
	if n := len(p.printed); n != 2 {
		t.Fatalf("%d jobs started, want 2", n)
	}
	wantJob(t, env, "o-1", "done")
	wantJob(t, env, "o-2", "printing")
	if d := deviceOf(t, env, "p1"); d.GetJobId() != "o-2" || d.GetNode() != "printing" {
		t.Fatalf("p1 listed as %v", d)
	}
}

func TestScenario9_NoJobEverPrintingOnTwoPrinters(t *testing.T) {
	env := mustServer(t, server.Config{})
	printers := []*testPrinter{newPrinter(t, env, "p1", "lab"), newPrinter(t, env, "p2", "lab"), newPrinter(t, env, "p3", "lab")}
	for _, p := range printers {
		wantNoCmd(t, p.connect())
	}
	const n = 9
	jobs := order(t, env, &pb.SubmitOrderRequest{OrderId: "o", Model: "m", Quantity: n, Pool: "lab"})
	// Every printer prints its jobs one after the other; the second print
	// of each printer fails, p2 loses its connection mid-print, and p3's
	// plug is pulled once.
	for _, p := range printers {
		cmd := p.pushed()
		for k := 0; cmd != nil; k++ {
			wantNoCmd(t, p.carry(cmd))
			job := p.state.Job
			switch {
			case p.id == "p2" && k == 0:
				p.drop(env)
				p.finish()
				wantNoCmd(t, p.connect())
			case p.id == "p3" && k == 0:
				p.drop(env)
				p.fail()
				wantNoCmd(t, p.connect())
			case k == 1:
				p.fail()
				wantNoCmd(t, p.report())
			default:
				p.finish()
				wantNoCmd(t, p.report())
			}
			if p.state.Node == "error" {
				operator(t, env, job, "recovered")
			} else {
				operator(t, env, job, "retrieved")
			}
			cmd = p.carry(p.pushed())
		}
	}
	ended := 0
	for _, j := range jobs {
		if node := jobNode(t, env, j.GetId()); node == "done" || node == "scrapped" {
			ended++
		}
	}
	if ended != n {
		t.Fatalf("%d of %d jobs ended", ended, n)
	}

	// Over the whole changelog: a job is dispatched once, to one printer,
	// and every event of a job names that printer; no printer ever has two
	// jobs printing.
	printingOn := map[string]string{} // job -> printer, while printing
	dispatched := map[string]int{}
	busy := map[string]string{} // printer -> job printing
	for _, c := range allChanges(t, env) {
		if c.GetMachine() != "print_job" || c.GetInstance() == "" {
			continue
		}
		job, dev := c.GetInstance(), c.GetDevice()
		if dev == "" || dev != j(jobs, job).GetParams()["printer"] {
			t.Fatalf("change %v of job %s names printer %q", c, job, dev)
		}
		if c.GetToNode() == "printing" && c.GetFromNode() != "printing" {
			dispatched[job]++
			if other, ok := printingOn[job]; ok {
				t.Fatalf("job %s printing on %s and %s", job, other, dev)
			}
			if other, ok := busy[dev]; ok {
				t.Fatalf("printer %s printing %s and %s", dev, other, job)
			}
			printingOn[job], busy[dev] = dev, job
		}
		if c.GetFromNode() == "printing" && c.GetToNode() != "printing" {
			delete(printingOn, job)
			delete(busy, dev)
		}
	}
	for _, jb := range jobs {
		if dispatched[jb.GetId()] != 1 {
			t.Fatalf("job %s dispatched %d times", jb.GetId(), dispatched[jb.GetId()])
		}
	}
}

func j(jobs []*pb.Instance, id string) *pb.Instance {
	for _, x := range jobs {
		if x.GetId() == id {
			return x
		}
	}
	return nil
}

// TestDeviceServerRestartMidPrint: the server stops while a printer
// prints; a new server on the same file serves it from the store alone.
func TestDeviceServerRestartMidPrint(t *testing.T) {
	env := mustServer(t, server.Config{})
	p := newPrinter(t, env, "p1", "")
	wantNoCmd(t, p.connect())
	order(t, env, &pb.SubmitOrderRequest{OrderId: "o", Model: "m", Quantity: 2, Printer: "p1"})
	wantNoCmd(t, p.carry(p.pushed()))
	env.stop(t)
	select {
	case err := <-p.ended:
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("stream ended with %v, want UNAVAILABLE", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("the stream outlived the server")
	}

	env2 := mustServer(t, server.Config{DB: env.db})
	if d := deviceOf(t, env2, "p1"); d.GetOnline() || d.GetJobId() != "o-1" {
		t.Fatalf("p1 after the restart: %v", d)
	}
	p.c = dialPrinter(t, env2)
	p.finish()
	wantNoCmd(t, p.connect())
	wantJob(t, env2, "o-1", "awaiting_retrieval")
	operator(t, env2, "o-1", "retrieved")
	wantCmd(t, p.carry(p.pushed()), "print", "o-2")
	wantJob(t, env2, "o-1", "done")
}

func TestDeviceIllegalReportEndsTheStream(t *testing.T) {
	env := mustServer(t, server.Config{})
	p := newPrinter(t, env, "p1", "")
	wantNoCmd(t, p.connect())
	p.finish() // ready -> waiting_retrieval: no printer does that
	if _, err := p.dev.Report(p.state); err != nil {
		t.Fatal(err)
	}
	err := <-p.ended
	st := wantCode(t, err, codes.FailedPrecondition)
	if want := `report 2: device "p1" cannot move from "ready" to "waiting_retrieval"`; len(st.Message()) < len(want) || st.Message()[:len(want)] != want {
		t.Fatalf("message %q", st.Message())
	}
	waitFor(t, func() bool { return !deviceOf(t, env, "p1").GetOnline() })
	if d := deviceOf(t, env, "p1"); d.GetNode() != "ready" {
		t.Fatalf("p1 after a refused report: %v", d)
	}
}

func TestDeviceSecondStreamReplacesFirst(t *testing.T) {
	env := mustServer(t, server.Config{})
	first := newPrinter(t, env, "p1", "")
	wantNoCmd(t, first.connect())
	second := newPrinter(t, env, "p1", "")
	wantNoCmd(t, second.connect())
	wantCode(t, <-first.ended, codes.Aborted)
	if d := deviceOf(t, env, "p1"); !d.GetOnline() {
		t.Fatalf("p1 offline after the older stream ended: %v", d)
	}
	order(t, env, &pb.SubmitOrderRequest{OrderId: "o", Model: "m", Quantity: 1, Printer: "p1"})
	wantCmd(t, second.pushed(), "print", "o-1")
}

func TestDeviceBadInput(t *testing.T) {
	env := mustServer(t, server.Config{})
	devices := pb.NewDeviceServiceClient(env.conn)
	stream, err := devices.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.ConnectRequest{Report: &pb.DeviceReport{Seq: 1, Node: "ready"}}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantField(t, err, "register")

	for field, req := range map[string]*pb.SubmitOrderRequest{
		"model":    {Quantity: 1, Printer: "p"},
		"quantity": {Model: "m", Printer: "p"},
		"printer":  {Model: "m", Quantity: 1},
	} {
		_, err := devices.SubmitOrder(context.Background(), req)
		wantField(t, err, field)
	}
	_, err = devices.SubmitOrder(context.Background(), &pb.SubmitOrderRequest{Model: "m", Quantity: 1, Printer: "nobody"})
	wantCode(t, err, codes.NotFound)
	// Print jobs are never handed out to workers.
	p := newPrinter(t, env, "p1", "")
	p.state.Node = "error" // holds no job, and gets none
	wantNoCmd(t, p.connect())
	order(t, env, &pb.SubmitOrderRequest{OrderId: "o", Model: "m", Quantity: 1, Printer: "p1"})
	resp, err := env.work.Ready(context.Background(), &pb.ReadyRequest{Worker: "w"})
	if err != nil || resp.GetInstance() != nil {
		t.Fatalf("Ready handed out %v (%v)", resp.GetInstance(), err)
	}
}

func wantField(t *testing.T, err error, field string) {
	t.Helper()
	st := wantCode(t, err, codes.InvalidArgument)
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				if v.GetField() == field {
					return
				}
			}
		}
	}
	t.Fatalf("%v: no violation of field %s", err, field)
}

// TestDefineDeviceMachineChecksItsJobs: a device machine's reconcile table
// is checked against the job machine already defined, with file:line:col.
func TestDefineDeviceMachineChecksItsJobs(t *testing.T) {
	env := mustServer(t, server.Config{})
	src := `id: plotter
kind: device
nodes:
  ready: {start: true, blocking: true, transitions: {print: busy}}
  busy: {transitions: {finish: ready, stop: gone}}
  gone: {final: true}
reconcile:
  jobs: print_job
  rules:
    - {device: ready, job: queued, command: print, transition: start}
`
	_, err := env.machines.DefineMachine(context.Background(), &pb.DefineMachineRequest{Source: src, FileName: "plotter.yaml"})
	st := wantCode(t, err, codes.InvalidArgument)
	want := `plotter.yaml:10:64: reconcile.rules[0].transition: node "queued" of job machine "print_job" has no transition "start"`
	if !strings.HasPrefix(st.Message(), want) {
		t.Fatalf("message %q, want %q", st.Message(), want)
	}
	fixed := strings.Replace(src, "transition: start", "transition: dispatch", 1)
	if _, err := env.machines.DefineMachine(context.Background(), &pb.DefineMachineRequest{Source: fixed, FileName: "plotter.yaml"}); err != nil {
		t.Fatal(err)
	}
}
