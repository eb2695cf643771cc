package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
)

// cliPrinter is a printer on a real Connect stream that the test steps by
// hand while it drives the CLI.
type cliPrinter struct {
	t     *testing.T
	dev   *client.Device
	state client.DeviceState
}

func connectPrinter(t *testing.T, addr, id, pool string) *cliPrinter {
	t.Helper()
	c, err := client.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	p := &cliPrinter{t: t, state: client.DeviceState{Node: "ready"}}
	if p.dev, err = c.ConnectDevice(ctx, &pb.DeviceRegistration{DeviceId: id, Pool: pool}, p.state); err != nil {
		t.Fatal(err)
	}
	if cmd := p.answer(1); cmd != nil {
		t.Fatalf("command %v on connect", cmd)
	}
	return p
}

// answer reads until the answer to report seq and returns its command.
func (p *cliPrinter) answer(seq uint64) *pb.DeviceCommand {
	p.t.Helper()
	for {
		r, err := p.dev.Recv()
		if err != nil {
			p.t.Fatal(err)
		}
		if r.GetReportSeq() == seq {
			return r.GetCommand()
		}
		if r.GetReportSeq() != 0 {
			p.t.Fatalf("answer to report %d while waiting for %d", r.GetReportSeq(), seq)
		}
	}
}

// pushed reads the command of a round the server ran on its own.
func (p *cliPrinter) pushed(name, job string) {
	p.t.Helper()
	r, err := p.dev.Recv()
	if err != nil {
		p.t.Fatal(err)
	}
	if r.GetReportSeq() != 0 || r.GetCommand().GetName() != name || r.GetCommand().GetJobId() != job {
		p.t.Fatalf("got %v, want a pushed %s %s", r, name, job)
	}
}

func (p *cliPrinter) report(node, job string) *pb.DeviceCommand {
	p.t.Helper()
	p.state = client.DeviceState{Node: node, Job: job}
	seq, err := p.dev.Report(p.state)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.answer(seq)
}

func TestDevices(t *testing.T) {
	c := mustCLI(t)
	p := connectPrinter(t, c.addr, "p1", "lab")
	contains(t, c.ok("devices"), "ID", "POOL", "ONLINE", "QUEUED", "p1", "lab", "yes", "ready")

	out := c.ok("order", "--model", "benchy", "--quantity", "2", "--pool", "lab", "--id", "o")
	contains(t, out, "order o", "JOB", "PRINTER", "o-1", "o-2", "p1", "benchy", "held", "queued")
	p.pushed("print", "o-1")
	if cmd := p.report("printing", "o-1"); cmd != nil {
		t.Fatalf("command %v while printing", cmd)
	}
	p.report("waiting_retrieval", "o-1")
	row := lines(c.ok("devices", "--pool", "lab"))[1]
	for _, w := range []string{"p1", "waiting_retrieval", "o-1", "0%", "1"} {
		if !strings.Contains(row, w) {
			t.Fatalf("devices row %q lacks %q", row, w)
		}
	}

	contains(t, c.ok("retrieved", "o-1"), "o-1", "print_job@1", "retrieved", "held")
	p.pushed("done", "o-1")
	if cmd := p.report("ready", ""); cmd.GetName() != "print" || cmd.GetJobId() != "o-2" {
		t.Fatalf("after done: %v, want print o-2", cmd)
	}
	p.report("printing", "o-2")
	p.report("error", "o-2")
	contains(t, c.ok("recovered", "o-2"), "o-2", "recovering")
	p.pushed("recover", "o-2")

	// Everything shows in the changelog, with the printer.
	changes := c.ok("changes", "--instance", "o-1")
	contains(t, changes, "device=p1", "(dispatch)", "(retrieved)", "(acknowledged)",
		"! notice        p1 o-1 -> dfsmr retrieved o-1: print finished; take the part off the bed")
	d := decode(t, lines(c.ok("devices", "-o", "json"))[0], &pb.Device{})
	if d.GetId() != "p1" || !d.GetOnline() || d.GetJobId() != "o-2" || d.GetNode() != "error" {
		t.Fatalf("devices -o json = %v", d)
	}

	c.fails(exitUsage, []string{"--printer", "--pool"}, "order", "--model", "m")
	c.fails(exitUsage, []string{"--printer", "--pool"}, "order", "--model", "m", "--printer", "p1", "--pool", "lab")
	c.fails(exitUsage, []string{"--quantity"}, "order", "--model", "m", "--printer", "p1", "--quantity", "0")
	c.fails(exitFailed, []string{"INVALID_ARGUMENT", "model"}, "order", "--printer", "p1")
	c.fails(exitFailed, []string{"NOT_FOUND"}, "order", "--model", "m", "--printer", "nobody")
	c.fails(exitFailed, []string{"NOT_FOUND"}, "retrieved", "nosuch")
	c.fails(exitFailed, []string{"FAILED_PRECONDITION"}, "recovered", "o-1")
	c.fails(exitUsage, nil, "retrieved")
}

func TestOrderStatusReprintAndCleared(t *testing.T) {
	c := mustCLI(t)
	p := connectPrinter(t, c.addr, "p1", "lab")
	// A fault with no job: only the operator's cleared gets it going.
	if cmd := p.report("error", ""); cmd != nil {
		t.Fatalf("command %v in error", cmd)
	}
	contains(t, c.ok("cleared", "p1"), "p1", "error", "cleared")
	p.pushed("cleared", "")
	p.report("ready", "")
	c.fails(exitFailed, []string{"FAILED_PRECONDITION", "no signal"}, "cleared", "p1")

	c.ok("order", "--model", "benchy", "--quantity", "1", "--printer", "p1", "--id", "o")
	p.pushed("print", "o-1")
	p.report("printing", "o-1")
	p.report("error", "o-1")
	c.fails(exitFailed, []string{"FAILED_PRECONDITION", "scrapped"}, "order", "reprint", "o-1")
	c.ok("recovered", "o-1")
	p.pushed("recover", "o-1")
	p.report("ready", "")
	contains(t, c.ok("order", "reprint", "o-1"), "o-1r1", "queued")
	p.pushed("print", "o-1r1")
	out := c.ok("order", "status", "o")
	contains(t, out, "order o: 2 jobs, 1 reprints; printing 1 scrapped 1", "REPRINT OF", "o-1r1", "p1")
	st := decode(t, c.ok("order", "status", "o", "-o", "json"), &pb.GetOrderResponse{})
	if len(st.GetJobs()) != 2 || st.GetReprints() != 1 || st.GetJobs()[1].GetParams()["reprint_of"] != "o-1" {
		t.Fatalf("order status -o json = %v", st)
	}
	c.fails(exitFailed, []string{"NOT_FOUND"}, "order", "status", "nosuch")
	c.fails(exitUsage, nil, "cleared")

	// A cancelled print stops; the notice names the command that clears
	// the printer.
	p.report("printing", "o-1r1")
	contains(t, c.ok("cancel", "o-1r1"), "o-1r1", "canceling")
	p.pushed("cancel", "o-1r1")
	p.report("waiting_retrieval", "")
	contains(t, c.ok("changes", "--kind", "device_notice"), "! notice        p1 o-1r1 -> dfsmr cleared p1: print stopped")
}
