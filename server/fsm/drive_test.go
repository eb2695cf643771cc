package fsm

import (
	"errors"
	"testing"
)

// jobMachine is a device job machine in miniature: queued -> printing ->
// done, with an operator signal.
func jobMachine() *Machine {
	return &Machine{
		ID: "job", Version: 1, Kind: KindJob, UpgradeStrategy: UpgradeContinue, Start: "queued",
		Order: []string{"queued", "printing", "done", "canceled"},
		Nodes: map[string]*Node{
			"queued": {Name: "queued", Order: []string{"dispatch", "cancel"}, Transitions: map[string]*Transition{
				"dispatch": {Name: "dispatch", To: "printing"},
				"cancel":   {Name: "cancel", To: "canceled", Signal: true},
			}},
			"printing": {Name: "printing", Order: []string{"finished"}, Transitions: map[string]*Transition{
				"finished": {Name: "finished", To: "done"},
			}},
			"done":     {Name: "done", Final: true},
			"canceled": {Name: "canceled", Final: true},
		},
	}
}

// TestJobsAreHeld: a job machine's instances start HELD, cannot be leased,
// and are moved only by Drive and signals.
func TestJobsAreHeld(t *testing.T) {
	m := jobMachine()
	in := mustStart(t, m)
	if in.Status != StatusHeld {
		t.Fatalf("started %s, want HELD", in.Status)
	}
	if _, _, err := Apply(m, in, Acquire{Worker: "w"}, t0); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Acquire of a HELD job: %v, want ErrNotReady", err)
	}
	if _, _, err := Apply(m, in, Drive{Transition: "cancel", Device: "p"}, t0); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("Drive of a signal: %v, want ErrIllegalTransition", err)
	}
	if _, _, err := Apply(m, in, Drive{Transition: "finished", Device: "p"}, t0); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("Drive of another node's transition: %v, want ErrIllegalTransition", err)
	}
	out, ch := mustApply(t, m, in, Drive{Transition: "dispatch", Device: "p"}, t0)
	if out.Node != "printing" || out.Status != StatusHeld || len(ch) != 1 ||
		ch[0].Kind != ChangeTransitioned || ch[0].Device != "p" || ch[0].ToStatus != StatusHeld || ch[0].Transition != "dispatch" {
		t.Fatalf("after dispatch: %+v, changes %+v", out, ch)
	}
	out, _ = mustApply(t, m, out, Drive{Transition: "finished", Device: "p"}, t0)
	if out.Status != StatusFinal {
		t.Fatalf("after finished: %s, want FINAL", out.Status)
	}
	sig, _ := mustApply(t, m, in, Signal{Name: "cancel"}, t0)
	if sig.Status != StatusFinal || sig.Node != "canceled" {
		t.Fatalf("after cancel: %+v", sig)
	}
}

// TestDriveNeedsAHeldJob: a workflow instance is never driven by a device.
func TestDriveNeedsAHeldJob(t *testing.T) {
	m := testMachine()
	if _, _, err := Apply(m, mustStart(t, m), Drive{Transition: "ok", Device: "p"}, t0); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("Drive of a READY workflow instance: %v, want ErrIllegalTransition", err)
	}
}
