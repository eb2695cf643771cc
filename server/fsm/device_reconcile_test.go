package fsm_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/machines"
	"github.com/dfsmr/dfsmr/server/fsm"
)

var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func bundled(t *testing.T) (printer, job *fsm.Machine) {
	t.Helper()
	byID := map[string]*fsm.Machine{}
	for _, src := range machines.Bundled() {
		m, err := machines.CompileWith(src.File, src.Data, func(id string) (*fsm.Machine, bool) {
			m, ok := byID[id]
			return m, ok
		})
		if err != nil {
			t.Fatal(err)
		}
		m.Version = 1
		byID[m.ID] = m
	}
	return byID["printer"], byID["print_job"]
}

// jobAt returns a print job HELD in node (FINAL in a final node).
func jobAt(id, node string, jm *fsm.Machine) *fsm.Instance {
	st := fsm.StatusHeld
	if jm.Node(node).Final {
		st = fsm.StatusFinal
	}
	return &fsm.Instance{ID: id, Machine: jm.ID, Version: jm.Version, Node: node, Status: st,
		Params: map[string]string{"model": "benchy"}, Attempt: 1, CreatedAt: now.Add(-time.Hour)}
}

// step is a job transition a round recorded: "job:transition".
func steps(d fsm.ReconcileDecision) []string {
	var out []string
	for _, c := range d.Changes {
		if c.Kind == fsm.ChangeTransitioned {
			out = append(out, c.Instance+":"+c.Transition)
		}
	}
	return out
}

func kinds(d fsm.ReconcileDecision, k fsm.ChangeKind) int {
	n := 0
	for _, c := range d.Changes {
		if c.Kind == k {
			n++
		}
	}
	return n
}

func TestReconcile(t *testing.T) {
	pm, jm := bundled(t)
	type want struct {
		command    string // "" none; else name:job
		steps      []string
		dispatched bool
		job        string // the device's job after the round
		notices    int
	}
	tests := []struct {
		name    string
		stored  string // stored device node; "" new device
		report  *fsm.DeviceReport
		job     string // node of the current job "cur"; "" none
		head    bool   // a queued job "head"
		pending fsm.Command
		want    want
	}{
		{name: "ready takes the queue head (scenario 1)", stored: "ready", report: &fsm.DeviceReport{Seq: 2, Node: "ready"}, head: true,
			want: want{command: "print:head", steps: []string{"head:dispatch"}, dispatched: true, job: "head"}},
		{name: "new device ready takes the queue head", report: &fsm.DeviceReport{Seq: 1, Node: "ready"}, head: true,
			want: want{command: "print:head", steps: []string{"head:dispatch"}, dispatched: true, job: "head"}},
		{name: "ready with an empty queue", stored: "ready", report: &fsm.DeviceReport{Seq: 2, Node: "ready"},
			want: want{}},
		{name: "server round: ready takes a new job", stored: "ready", head: true,
			want: want{command: "print:head", steps: []string{"head:dispatch"}, dispatched: true, job: "head"}},
		{name: "busy printer: no-op, the queue waits (scenario 2)", stored: "printing", report: &fsm.DeviceReport{Seq: 2, Node: "printing", Job: "cur", Progress: 0.5}, job: "printing", head: true,
			want: want{job: "cur"}},
		{name: "server round on a busy printer", stored: "printing", job: "printing", head: true,
			want: want{job: "cur"}},
		{name: "finished print: awaiting retrieval + notice (scenario 3)", stored: "printing", report: &fsm.DeviceReport{Seq: 2, Node: "waiting_retrieval", Job: "cur", Progress: 1}, job: "printing", head: true,
			want: want{steps: []string{"cur:finished"}, job: "cur", notices: 1}},
		{name: "finished offline, first report after reconnect (scenario 5)", stored: "printing", report: &fsm.DeviceReport{Seq: 1, Node: "waiting_retrieval", Job: "cur", Progress: 1}, job: "printing",
			want: want{steps: []string{"cur:finished"}, job: "cur", notices: 1}},
		{name: "waiting for the operator", stored: "waiting_retrieval", report: &fsm.DeviceReport{Seq: 2, Node: "waiting_retrieval", Job: "cur"}, job: "awaiting_retrieval", head: true,
			want: want{job: "cur"}},
		{name: "retrieved: done (scenario 3)", stored: "waiting_retrieval", job: "retrieved", head: true,
			want: want{command: "done:cur", job: "cur"}},
		{name: "ready after done: job done, next job (scenario 3)", stored: "waiting_retrieval", report: &fsm.DeviceReport{Seq: 2, Node: "ready"}, job: "retrieved", head: true,
			pending: fsm.Command{Seq: 3, Name: "done", Node: "waiting_retrieval", Job: "cur"},
			want:    want{command: "print:head", steps: []string{"cur:acknowledged", "head:dispatch"}, dispatched: true, job: "head"}},
		{name: "ready after done, empty queue", stored: "waiting_retrieval", report: &fsm.DeviceReport{Seq: 2, Node: "ready"}, job: "retrieved",
			pending: fsm.Command{Seq: 3, Name: "done", Node: "waiting_retrieval", Job: "cur"},
			want:    want{steps: []string{"cur:acknowledged"}}},
		{name: "print fails: job failed + notice (scenario 6)", stored: "printing", report: &fsm.DeviceReport{Seq: 2, Node: "error", Job: "cur"}, job: "printing",
			want: want{steps: []string{"cur:failed"}, job: "cur", notices: 1}},
		{name: "plug pulled: restarts in error (scenario 7)", stored: "printing", report: &fsm.DeviceReport{Seq: 1, Node: "error", Job: "cur"}, job: "printing",
			want: want{steps: []string{"cur:failed"}, job: "cur", notices: 1}},
		{name: "error waits for the operator", stored: "error", report: &fsm.DeviceReport{Seq: 2, Node: "error", Job: "cur"}, job: "failed", head: true,
			want: want{job: "cur"}},
		{name: "recovering: recover (scenario 6)", stored: "error", job: "recovering",
			want: want{command: "recover:cur", job: "cur"}},
		{name: "ready after recover: job scrapped, next job (scenario 6)", stored: "error", report: &fsm.DeviceReport{Seq: 2, Node: "ready"}, job: "recovering", head: true,
			pending: fsm.Command{Seq: 3, Name: "recover", Node: "error", Job: "cur"},
			want:    want{command: "print:head", steps: []string{"cur:reset", "head:dispatch"}, dispatched: true, job: "head"}},
		{name: "print command lost: sent again", stored: "ready", report: &fsm.DeviceReport{Seq: 1, Node: "ready"}, job: "printing", head: true,
			pending: fsm.Command{Seq: 3, Name: "print", Node: "ready", Job: "cur"},
			want:    want{command: "print:cur", job: "cur"}},
		{name: "server round does not repeat an unanswered command", stored: "ready", job: "printing", head: true,
			pending: fsm.Command{Seq: 3, Name: "print", Node: "ready", Job: "cur"},
			want:    want{job: "cur"}},
		{name: "finished offline before the print was acknowledged", stored: "ready", report: &fsm.DeviceReport{Seq: 1, Node: "waiting_retrieval", Job: "cur"}, job: "printing",
			pending: fsm.Command{Seq: 3, Name: "print", Node: "ready", Job: "cur"},
			want:    want{steps: []string{"cur:finished"}, job: "cur", notices: 1}},
		{name: "device holds a job the server did not give it", stored: "printing", report: &fsm.DeviceReport{Seq: 2, Node: "printing", Job: "stranger"}, job: "printing",
			want: want{job: "cur", notices: 1}},
		{name: "fault with the part on the bed: waits for the operator", stored: "waiting_retrieval", report: &fsm.DeviceReport{Seq: 2, Node: "error", Job: "cur"}, job: "awaiting_retrieval",
			want: want{job: "cur"}},
		{name: "print carried out, then forgotten (power cut): the job fails, never printed twice", stored: "ready", report: &fsm.DeviceReport{Seq: 1, Node: "ready", LastCommand: 3}, job: "printing", head: true,
			pending: fsm.Command{Seq: 3, Name: "print", Node: "ready", Job: "cur"},
			want:    want{steps: []string{"cur:failed"}, job: "cur", notices: 1}},
		{name: "print command lost, the device echoes an older command: sent again", stored: "ready", report: &fsm.DeviceReport{Seq: 1, Node: "ready", LastCommand: 2}, job: "printing", head: true,
			pending: fsm.Command{Seq: 3, Name: "print", Node: "ready", Job: "cur"},
			want:    want{command: "print:cur", job: "cur"}},
		{name: "printing, then back ready without the job: forgotten", stored: "printing", report: &fsm.DeviceReport{Seq: 1, Node: "ready"}, job: "printing", head: true,
			want: want{steps: []string{"cur:failed"}, job: "cur", notices: 1}},
		{name: "forgotten job waits for the operator", stored: "ready", report: &fsm.DeviceReport{Seq: 2, Node: "ready"}, job: "failed", head: true,
			want: want{job: "cur"}},
		{name: "fault cleared with the part: the job is done, next job", stored: "error", report: &fsm.DeviceReport{Seq: 2, Node: "ready", LastCommand: 3}, job: "awaiting_retrieval", head: true,
			pending: fsm.Command{Seq: 3, Name: "cleared", Node: "error", Job: "cur"},
			want:    want{command: "print:head", steps: []string{"cur:cleared", "head:dispatch"}, dispatched: true, job: "head"}},
		{name: "cancel a printing job: the printer is told to stop", stored: "printing", job: "canceling",
			want: want{command: "cancel:cur", job: "cur"}},
		{name: "cancel confirmed: the job ends, the bed waits for the operator", stored: "printing", report: &fsm.DeviceReport{Seq: 2, Node: "waiting_retrieval", LastCommand: 3}, job: "canceling", head: true,
			pending: fsm.Command{Seq: 3, Name: "cancel", Node: "printing", Job: "cur"},
			want:    want{steps: []string{"cur:stopped"}, notices: 1}},
		{name: "finished before the cancel came: the part waits for the operator", stored: "printing", report: &fsm.DeviceReport{Seq: 2, Node: "waiting_retrieval", Job: "cur", Progress: 1}, job: "canceling", head: true,
			pending: fsm.Command{Seq: 3, Name: "cancel", Node: "printing", Job: "cur"},
			want:    want{steps: []string{"cur:finished"}, job: "cur", notices: 1}},
		{name: "failed before the cancel came", stored: "printing", report: &fsm.DeviceReport{Seq: 2, Node: "error", Job: "cur"}, job: "canceling",
			want: want{steps: []string{"cur:failed"}, job: "cur", notices: 1}},
		{name: "cancel with the print command outstanding waits, the print sent again", stored: "ready", report: &fsm.DeviceReport{Seq: 2, Node: "ready", LastCommand: 2}, job: "canceling",
			pending: fsm.Command{Seq: 3, Name: "print", Node: "ready", Job: "cur"},
			want:    want{command: "print:cur", job: "cur"}},
		{name: "server round: cancel with the print command outstanding waits", stored: "ready", job: "canceling",
			pending: fsm.Command{Seq: 3, Name: "print", Node: "ready", Job: "cur"},
			want:    want{job: "cur"}},
		{name: "cancel after the print was lost with its stream: the job ends", stored: "ready", report: &fsm.DeviceReport{Seq: 1, Node: "ready", LastCommand: 2}, job: "canceling",
			pending: fsm.Command{Seq: 3, Name: "print", Node: "ready", Job: "cur"},
			want:    want{steps: []string{"cur:stopped"}}},
		{name: "current job cancelled: the next one", stored: "ready", report: &fsm.DeviceReport{Seq: 2, Node: "ready"}, job: "canceled", head: true,
			want: want{command: "print:head", steps: []string{"head:dispatch"}, dispatched: true, job: "head"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := fsm.ReconcileInput{
				Machine: pm,
				Device:  fsm.Device{ID: "p1", Machine: "printer", Node: tt.stored, ReportSeq: 1, CommandSeq: 3, Pending: tt.pending},
				Report:  tt.report,
				First:   tt.report != nil && tt.report.Seq == 1,
				Now:     now,
			}
			if tt.job != "" {
				in.Device.Job = "cur"
				in.Job, in.JobMachine = jobAt("cur", tt.job, jm), jm
			}
			if tt.head {
				in.Head, in.HeadMachine = jobAt("head", "queued", jm), jm
			}
			d, err := fsm.Reconcile(in)
			if err != nil {
				t.Fatal(err)
			}
			cmd := ""
			if d.Command != nil {
				cmd = d.Command.Name + ":" + d.Command.Job
				// A new command gets seq 4; the pending one sent again
				// keeps its seq 3.
				seq := uint64(4)
				if p := tt.pending; p.Name == d.Command.Name && p.Job == d.Command.Job && p.Node == d.Command.Node {
					seq = 3
				}
				if d.Command.Seq != seq || d.Device.CommandSeq != max(seq, 3) || d.Device.Pending != d.Command.Command {
					t.Errorf("command %+v, device seq %d pending %+v; want seq %d pending", d.Command, d.Device.CommandSeq, d.Device.Pending, seq)
				}
				if d.Command.Params["model"] != "benchy" {
					t.Errorf("command params %v, want the job's", d.Command.Params)
				}
				if d.Command.Node != d.Device.Node || !pm.Node(d.Command.Node).Blocking {
					t.Errorf("command for node %q sent to a device in %q", d.Command.Node, d.Device.Node)
				}
				if kinds(d, fsm.ChangeDeviceCommand) != 1 {
					t.Errorf("changes %+v: want one DEVICE_COMMAND", d.Changes)
				}
			} else if d.Device.CommandSeq != 3 {
				t.Errorf("command seq moved to %d without a command", d.Device.CommandSeq)
			}
			got := want{command: cmd, steps: steps(d), dispatched: d.Dispatched, job: d.Device.Job, notices: kinds(d, fsm.ChangeDeviceNotice)}
			if got.command != tt.want.command || !slices.Equal(got.steps, tt.want.steps) || got.dispatched != tt.want.dispatched ||
				got.job != tt.want.job || got.notices != tt.want.notices {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			if len(d.Jobs) != len(tt.want.steps) {
				t.Errorf("%d job states for %d steps", len(d.Jobs), len(tt.want.steps))
			}
			for _, c := range d.Changes {
				if c.Kind == fsm.ChangeTransitioned && (c.Device != "p1" || c.ToStatus == fsm.StatusReady) {
					t.Errorf("job change %+v: want device p1 and never READY", c)
				}
			}
			if tt.report != nil {
				if d.Device.Node != tt.report.Node || d.Device.ReportSeq != tt.report.Seq || !d.Device.LastSeen.Equal(now) {
					t.Errorf("device %+v does not record the report %+v", d.Device, *tt.report)
				}
				moved := kinds(d, fsm.ChangeDeviceMoved)
				if (tt.stored != tt.report.Node) != (moved == 1) {
					t.Errorf("%d DEVICE_MOVED changes for %q -> %q", moved, tt.stored, tt.report.Node)
				}
			}
		})
	}
}

func TestReconcileRefuses(t *testing.T) {
	pm, jm := bundled(t)
	base := fsm.Device{ID: "p1", Machine: "printer", Node: "ready", ReportSeq: 5}
	tests := []struct {
		name    string
		dev     fsm.Device
		report  fsm.DeviceReport
		first   bool
		illegal bool // else invalid
	}{
		{name: "ready cannot jump to waiting_retrieval", dev: base, report: fsm.DeviceReport{Seq: 6, Node: "waiting_retrieval", Job: "cur"}, illegal: true},
		{name: "not even on a new stream", dev: base, report: fsm.DeviceReport{Seq: 1, Node: "waiting_retrieval", Job: "cur"}, first: true, illegal: true},
		{name: "error cannot leave without recover", dev: fsm.Device{ID: "p1", Node: "error", ReportSeq: 5}, report: fsm.DeviceReport{Seq: 6, Node: "ready"}, illegal: true},
		{name: "a pending command from another node does not count", dev: fsm.Device{ID: "p1", Node: "error", ReportSeq: 5,
			Pending: fsm.Command{Seq: 2, Name: "done", Node: "waiting_retrieval"}}, report: fsm.DeviceReport{Seq: 6, Node: "ready"}, illegal: true},
		{name: "unknown node", dev: base, report: fsm.DeviceReport{Seq: 6, Node: "melting"}},
		{name: "empty node", dev: base, report: fsm.DeviceReport{Seq: 6}},
		{name: "progress past 1", dev: base, report: fsm.DeviceReport{Seq: 6, Node: "ready", Progress: 1.5}},
		{name: "seq does not grow", dev: base, report: fsm.DeviceReport{Seq: 5, Node: "ready"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := fsm.ReconcileInput{Machine: pm, Device: tt.dev, Report: &tt.report, First: tt.first, Now: now}
			if tt.report.Job == "cur" {
				in.Device.Job = "cur"
				in.Job, in.JobMachine = jobAt("cur", "printing", jm), jm
			}
			d, err := fsm.Reconcile(in)
			if err == nil {
				t.Fatalf("Reconcile accepted it: %+v", d)
			}
			var me *fsm.MoveError
			var ie *fsm.InvalidError
			switch {
			case tt.illegal && (!errors.As(err, &me) || !errors.Is(err, fsm.ErrIllegalTransition)):
				t.Fatalf("error %v (%T), want a MoveError", err, err)
			case !tt.illegal && !errors.As(err, &ie):
				t.Fatalf("error %v (%T), want an InvalidError", err, err)
			}
			if d.Command != nil || len(d.Changes) > 0 {
				t.Fatalf("a refused round decided %+v", d)
			}
		})
	}
	// The move error names both nodes, for the printer's operator.
	_, err := fsm.Reconcile(fsm.ReconcileInput{Machine: pm, Device: base, Report: &fsm.DeviceReport{Seq: 6, Node: "waiting_retrieval"}, Now: now})
	if err == nil || err.Error() != `device "p1" cannot move from "ready" to "waiting_retrieval": no path of transitions the device takes on its own leads there, and no command is pending` {
		t.Fatalf("error %v", err)
	}
}

// TestReconcileRejection: a device's refusal of a late command is
// recorded, clears the command it refuses, and the loop decides again.
func TestReconcileRejection(t *testing.T) {
	pm, jm := bundled(t)
	pending := fsm.Command{Seq: 7, Name: "print", Node: "ready", Job: "cur"}
	for _, tt := range []struct {
		name        string
		seq         uint64
		wantPending bool
	}{
		{"the pending command", 7, false},
		{"an older command", 6, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, err := fsm.Reconcile(fsm.ReconcileInput{
				Machine: pm,
				Device:  fsm.Device{ID: "p1", Node: "printing", Job: "cur", ReportSeq: 1, CommandSeq: 7, Pending: pending},
				Report:  &fsm.DeviceReport{Seq: 2, Node: "printing", Job: "cur", Rejection: &fsm.Rejection{CommandSeq: tt.seq, Reason: "stale: printing"}},
				Job:     jobAt("cur", "printing", jm), JobMachine: jm, Now: now,
			})
			if err != nil {
				t.Fatal(err)
			}
			if kinds(d, fsm.ChangeDeviceRejected) != 1 || d.Changes[0].Token != tt.seq || d.Changes[0].Reason != "stale: printing" {
				t.Fatalf("changes %+v: want one DEVICE_REJECTED for seq %d", d.Changes, tt.seq)
			}
			if got := d.Device.Pending != (fsm.Command{}); got != tt.wantPending {
				t.Fatalf("pending %+v, want pending %v", d.Device.Pending, tt.wantPending)
			}
			if d.Command != nil || len(d.Jobs) != 0 {
				t.Fatalf("a busy printer's round decided %+v", d)
			}
		})
	}
}

// TestReconcileDeviceSignal: an operator's signal on the printer itself is
// sent by the next round, again when the printer reports it was not carried
// out, and lets the printer leave error.
func TestReconcileDeviceSignal(t *testing.T) {
	pm, _ := bundled(t)
	asked := fsm.Command{Name: "cleared", Node: "error"}
	sent := fsm.Command{Seq: 4, Name: "cleared", Node: "error"}
	for _, tt := range []struct {
		name    string
		pending fsm.Command
		report  *fsm.DeviceReport
		want    string // command name:seq, or "" none
	}{
		{"server round sends the operator's signal", asked, nil, "cleared:4"},
		{"the printer's report sends it too", asked, &fsm.DeviceReport{Seq: 2, Node: "error"}, "cleared:4"},
		{"server round does not repeat it", sent, nil, ""},
		{"not carried out: sent again, same seq", sent, &fsm.DeviceReport{Seq: 2, Node: "error", LastCommand: 3}, "cleared:4"},
		{"carried out, and in error again: done with", sent, &fsm.DeviceReport{Seq: 2, Node: "error", LastCommand: 4}, ""},
		{"no signal, no command", fsm.Command{}, &fsm.DeviceReport{Seq: 2, Node: "error"}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			seq := tt.pending.Seq
			if seq == 0 {
				seq = 3
			}
			d, err := fsm.Reconcile(fsm.ReconcileInput{Machine: pm, Now: now, Report: tt.report,
				Device: fsm.Device{ID: "p1", Node: "error", ReportSeq: 1, CommandSeq: seq, Pending: tt.pending}})
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if d.Command != nil {
				got = fmt.Sprintf("%s:%d", d.Command.Name, d.Command.Seq)
				if d.Device.Pending != d.Command.Command || d.Command.Node != "error" {
					t.Errorf("pending %+v for command %+v", d.Device.Pending, d.Command.Command)
				}
			}
			if got != tt.want {
				t.Errorf("command %q, want %q", got, tt.want)
			}
		})
	}
	// The printer leaves error only with the signal sent to it.
	for _, p := range []fsm.Command{sent, asked, {}} {
		_, err := fsm.Reconcile(fsm.ReconcileInput{Machine: pm, Now: now, Report: &fsm.DeviceReport{Seq: 2, Node: "ready"},
			Device: fsm.Device{ID: "p1", Node: "error", ReportSeq: 1, CommandSeq: 4, Pending: p}})
		if ok := err == nil; ok != (p == sent) {
			t.Errorf("error -> ready with pending %+v: err %v", p, err)
		}
	}
}

// TestReconcileNoRuleTellsOperators: a device machine whose table misses
// a pair sends nothing for it and tells operators, on the device's report.
func TestReconcileNoRuleTellsOperators(t *testing.T) {
	_, jm := bundled(t)
	src := `id: tiny
kind: device
nodes:
  ready: {start: true, blocking: true, timeout: 0, transitions: {print: busy, retire: gone}}
  busy: {timeout: 0, transitions: {finish: ready}}
  gone: {final: true}
reconcile:
  jobs: print_job
  rules:
    - {device: ready, job: queued, command: print, transition: dispatch}
`
	m, err := machines.CompileWith("tiny.yaml", []byte(src), func(id string) (*fsm.Machine, bool) { return jm, id == jm.ID })
	if err != nil {
		t.Fatal(err)
	}
	m.Version = 1
	in := fsm.ReconcileInput{Machine: m, Now: now, Device: fsm.Device{ID: "p1", Node: "busy", Job: "cur", ReportSeq: 1},
		Job: jobAt("cur", "printing", jm), JobMachine: jm}
	for _, rep := range []*fsm.DeviceReport{{Seq: 2, Node: "busy", Job: "cur"}, nil} {
		in.Report = rep
		d, err := fsm.Reconcile(in)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: 1, false: 0}[rep != nil]; kinds(d, fsm.ChangeDeviceNotice) != want || d.Command != nil || len(d.Jobs) != 0 {
			t.Errorf("report %v: decision %+v, want %d notice and nothing else", rep, d, want)
		}
	}
}
