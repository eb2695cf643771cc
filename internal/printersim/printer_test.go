package printersim_test

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/internal/printersim"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newPrinter(prof printersim.Profile, seed uint64) *printersim.Printer {
	return printersim.NewPrinter("p1", prof, rand.New(rand.NewPCG(seed, 1)))
}

func cmd(seq uint64, name, node, job string) *pb.DeviceCommand {
	return &pb.DeviceCommand{Seq: seq, Name: name, Node: node, JobId: job, Params: map[string]string{"model": "benchy"}}
}

// mustCarry carries out c and fails the test if the printer refused it.
func mustCarry(t *testing.T, p *printersim.Printer, c *pb.DeviceCommand, now time.Time, want printersim.EventKind) {
	t.Helper()
	ev, rej := p.Command(c, now)
	if rej != nil || ev.Kind != want {
		t.Fatalf("command %v: event %v, rejection %v; want %v", c, ev, rej, want)
	}
}

func state(p *printersim.Printer) string { return p.Node() + "/" + p.Job() }

func TestPrintCycle(t *testing.T) {
	p := newPrinter(printersim.Profile{PrintTime: time.Minute, PrintJitter: -1}, 1)
	if st := p.State(t0); st != (client.DeviceState{Node: "ready"}) {
		t.Fatalf("first state %+v", st)
	}
	if _, ok := p.Next(); ok {
		t.Fatal("a ready printer plans a change of its own")
	}
	if ev, rej := p.Command(cmd(4, "print", "ready", "j1"), t0); rej != nil || ev.Kind != printersim.EventPrinting || ev.Detail != "benchy" {
		t.Fatalf("print: %v, %v; want printing benchy", ev, rej)
	}
	if state(p) != "printing/j1" || p.LastCommand() != 4 {
		t.Fatalf("after print: %s last %d", state(p), p.LastCommand())
	}
	end, ok := p.Next()
	if !ok || !end.Equal(t0.Add(time.Minute)) {
		t.Fatalf("Next = %v, %v; want the end of a one-minute print", end, ok)
	}
	if _, ok := p.Advance(end.Add(-time.Nanosecond)); ok {
		t.Fatal("the print ended early")
	}
	if st := p.State(t0.Add(15 * time.Second)); st != (client.DeviceState{Node: "printing", Job: "j1", Progress: 0.25, LastCommand: 4}) {
		t.Fatalf("state at a quarter: %+v", st)
	}
	ev, ok := p.Advance(end.Add(time.Second))
	if !ok || ev.Kind != printersim.EventFinished || !ev.At.Equal(end) || ev.Job != "j1" {
		t.Fatalf("Advance past the end: %v, %v", ev, ok)
	}
	if state(p) != "waiting_retrieval/j1" || p.Progress(end) != 1 {
		t.Fatalf("after the print: %s progress %v", state(p), p.Progress(end))
	}
	mustCarry(t, p, cmd(5, "done", "waiting_retrieval", "j1"), end, printersim.EventCleared)
	if state(p) != "ready/" || p.Progress(end) != 0 {
		t.Fatalf("after done: %s", state(p))
	}
}

func TestFailureAndRecovery(t *testing.T) {
	p := newPrinter(printersim.Profile{PrintTime: time.Minute, FailRate: 1}, 7)
	mustCarry(t, p, cmd(1, "print", "ready", "j1"), t0, printersim.EventPrinting)
	at, _ := p.Next()
	ev, ok := p.Advance(t0.Add(time.Hour))
	if !ok || ev.Kind != printersim.EventFailed || !ev.At.Equal(at) {
		t.Fatalf("Advance: %v, %v; want a failure at %v", ev, ok, at)
	}
	if state(p) != "error/j1" {
		t.Fatalf("after the failure: %s", state(p))
	}
	if got := p.State(t0.Add(time.Hour)).Progress; got >= 1 || got != p.Progress(at) {
		t.Fatalf("progress of a failed print = %v; want it frozen below 1", got)
	}
	if _, ok := p.Next(); ok {
		t.Fatal("a printer in error plans a change of its own")
	}
	mustCarry(t, p, cmd(2, "recover", "error", "j1"), t0.Add(time.Hour), printersim.EventRecovered)
	if state(p) != "ready/" {
		t.Fatalf("after recover: %s", state(p))
	}
}

func TestPowerLoss(t *testing.T) {
	p := newPrinter(printersim.Profile{PrintTime: time.Minute, PowerLossRate: 1}, 3)
	mustCarry(t, p, cmd(1, "print", "ready", "j1"), t0, printersim.EventPrinting)
	ev, ok := p.Advance(t0.Add(time.Hour))
	if !ok || ev.Kind != printersim.EventPowerLoss || ev.Job != "j1" {
		t.Fatalf("Advance: %v, %v; want the planned power loss", ev, ok)
	}
	if st := p.State(t0.Add(time.Hour)); st.Node != "error" || st.Job != "j1" || st.Progress <= 0 || st.Progress >= 1 {
		t.Fatalf("state after the power loss: %+v", st)
	}
}

func TestRejections(t *testing.T) {
	// Each case starts from a printer that printed j1 (command 5) and
	// waits for its retrieval.
	tests := []struct {
		name string
		cmd  *pb.DeviceCommand
		want string
	}{
		{"late seq", cmd(5, "done", "waiting_retrieval", "j1"), "late: command seq 5"},
		{"older seq", cmd(3, "done", "waiting_retrieval", "j1"), "late: command seq 3"},
		{"print decided while ready", cmd(6, "print", "ready", "j2"), "stale: print was decided for node ready, printer is in waiting_retrieval with job j1"},
		{"done for another job", cmd(6, "done", "waiting_retrieval", "j0"), `stale: done is about job "j0", printer holds "j1"`},
		{"recover while waiting", cmd(6, "recover", "waiting_retrieval", "j1"), "recover is not a command of node waiting_retrieval"},
		{"unknown", cmd(6, "explode", "waiting_retrieval", "j1"), `unknown command "explode"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPrinter(printersim.Profile{PrintTime: time.Minute}, 1)
			mustCarry(t, p, cmd(5, "print", "ready", "j1"), t0, printersim.EventPrinting)
			p.Advance(t0.Add(time.Hour))
			ev, rej := p.Command(tt.cmd, t0.Add(time.Hour))
			if rej == nil || ev.Kind != printersim.EventRejected {
				t.Fatalf("carried out %v: %v", tt.cmd, ev)
			}
			if !strings.HasPrefix(rej.GetReason(), tt.want) || rej.GetCommandSeq() != tt.cmd.GetSeq() || ev.Detail != rej.GetReason() {
				t.Fatalf("rejection %v; want seq %d and a reason starting %q", rej, tt.cmd.GetSeq(), tt.want)
			}
			if state(p) != "waiting_retrieval/j1" || p.LastCommand() != 5 {
				t.Fatalf("a refused command changed the printer: %s, last %d", state(p), p.LastCommand())
			}
		})
	}
	p := newPrinter(printersim.Profile{}, 1)
	if _, rej := p.Command(cmd(1, "print", "ready", ""), t0); rej == nil || rej.GetReason() != "print without a job" {
		t.Fatalf("print without a job: %v", rej)
	}
	mustCarry(t, p, cmd(1, "print", "ready", "j1"), t0, printersim.EventPrinting)
	if _, rej := p.Command(cmd(2, "print", "ready", "j1"), t0); rej == nil || !strings.HasPrefix(rej.GetReason(), "stale: print was decided for node ready, printer is in printing with job j1") {
		t.Fatalf("a duplicate print while printing: %v", rej)
	}
}

// cycle runs n prints on a printer of prof, recovering or clearing after
// each, and returns each print's outcome and duration.
func cycle(prof printersim.Profile, seed uint64, n int) (kinds []printersim.EventKind, durs []time.Duration) {
	p := newPrinter(prof, seed)
	now := t0
	for i := range n {
		seq := uint64(2*i + 1)
		p.Command(cmd(seq, "print", "ready", "j"), now)
		at, _ := p.Next()
		ev, _ := p.Advance(at)
		kinds, durs = append(kinds, ev.Kind), append(durs, at.Sub(now))
		now = at
		switch p.Node() {
		case printersim.NodeWaitingRetrieval:
			p.Command(cmd(seq+1, "done", printersim.NodeWaitingRetrieval, "j"), now)
		default:
			p.Command(cmd(seq+1, "recover", printersim.NodeError, "j"), now)
		}
	}
	return kinds, durs
}

func TestSeededAndDistributed(t *testing.T) {
	prof := printersim.Profile{PrintTime: time.Minute, PrintJitter: 0.5, FailRate: 0.2, PowerLossRate: 0.1}
	const n = 4000
	kinds, durs := cycle(prof, 42, n)
	again, againDurs := cycle(prof, 42, n)
	other, _ := cycle(prof, 43, n)
	count := map[printersim.EventKind]int{}
	same, differ := true, false
	for i := range n {
		count[kinds[i]]++
		same = same && kinds[i] == again[i] && durs[i] == againDurs[i]
		differ = differ || kinds[i] != other[i]
		if d := durs[i]; d > 90*time.Second || (kinds[i] == printersim.EventFinished && d < 30*time.Second) {
			t.Fatalf("print %d lasted %v, outside one minute ±50%%", i, d)
		}
	}
	if !same {
		t.Fatal("the same seed gave different prints")
	}
	if !differ {
		t.Fatal("seeds 42 and 43 gave the same prints")
	}
	// Power is lost in 10% of prints, and about half of those come before
	// the planned failure of a failing print; 20% fail.
	near := func(got int, want float64) bool { return float64(got) > want*0.85*n && float64(got) < want*1.15*n }
	if !near(count[printersim.EventPowerLoss], 0.1*(1-0.2/2)) || !near(count[printersim.EventFailed], 0.2*(1-0.1/2)) {
		t.Fatalf("outcomes of %d prints: %v", n, count)
	}
}

func TestProfileValidate(t *testing.T) {
	bad := []printersim.Profile{
		{PrintTime: -time.Second},
		{PrintJitter: 1.5},
		{FailRate: -0.1},
		{FailRate: 2},
		{PowerLossRate: 1.1},
	}
	for _, p := range bad {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v: valid", p)
		}
	}
	if err := (printersim.Profile{FailRate: 1, PowerLossRate: 0.5, PrintJitter: 1}).Validate(); err != nil {
		t.Fatal(err)
	}
	if d := (printersim.Profile{}).WithDefaults(); d.PrintTime != printersim.DefaultPrintTime || d.PrintJitter != printersim.DefaultPrintJitter {
		t.Fatalf("defaults: %+v", d)
	}
}

// TestPrinterCancelClearedAndForget: cancel stops a print and drops the
// job, leaving the bed for an operator's cleared; a power loss with
// ForgetRate 1 brings the printer back ready without its job, still
// reporting the last command it carried out.
func TestPrinterCancelClearedAndForget(t *testing.T) {
	p := newPrinter(printersim.Profile{PrintTime: time.Minute, PrintJitter: -1}, 1)
	mustCarry(t, p, cmd(1, "print", "ready", "j1"), t0, printersim.EventPrinting)
	if _, rej := p.Command(cmd(2, "cleared", "printing", ""), t0); rej == nil {
		t.Fatal("cleared carried out while printing")
	}
	mustCarry(t, p, cmd(2, "cancel", "printing", "j1"), t0.Add(30*time.Second), printersim.EventCanceled)
	if st := p.State(t0.Add(time.Minute)); st != (client.DeviceState{Node: "waiting_retrieval", Progress: 0.5, LastCommand: 2}) {
		t.Fatalf("after cancel: %+v", st)
	}
	if _, ok := p.Next(); ok {
		t.Fatal("a stopped print still ends")
	}
	mustCarry(t, p, cmd(3, "cleared", "waiting_retrieval", ""), t0.Add(time.Minute), printersim.EventDeviceCleared)
	if state(p) != "ready/" {
		t.Fatalf("after cleared: %s", state(p))
	}

	f := newPrinter(printersim.Profile{PrintTime: time.Minute, PrintJitter: -1, PowerLossRate: 1, ForgetRate: 1}, 1)
	mustCarry(t, f, cmd(7, "print", "ready", "j2"), t0, printersim.EventPrinting)
	ev, ok := f.Advance(t0.Add(time.Minute))
	if !ok || ev.Kind != printersim.EventForgot || ev.Job != "j2" {
		t.Fatalf("event %v, %v; want a power loss that forgot j2", ev, ok)
	}
	if st := f.State(t0.Add(time.Minute)); st != (client.DeviceState{Node: "ready", LastCommand: 7}) {
		t.Fatalf("after the power loss: %+v", st)
	}
	if err := (printersim.Profile{ForgetRate: 2}).Validate(); err == nil {
		t.Fatal("forget rate 2 is valid")
	}
}
