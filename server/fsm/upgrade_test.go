package fsm

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// nextVersion returns testMachine as version 2 with strategy s, changed by
// edit when not nil.
func nextVersion(s UpgradeStrategy, edit func(*Machine)) *Machine {
	m := testMachine()
	m.Version, m.UpgradeStrategy = 2, s
	if edit != nil {
		edit(m)
	}
	return m
}

func TestUpgrade(t *testing.T) {
	m := testMachine()
	later := t0.Add(time.Minute)
	waiting, _, err := Start(m, StartArgs{ID: "i1", DueAt: t0.Add(time.Hour)}, t0)
	if err != nil {
		t.Fatal(err)
	}
	inB, _ := mustApply(t, m, leased(t, m), Report{Token: 1, Transition: "ok"}, t0)
	dropA := func(m *Machine) {
		delete(m.Nodes, "a")
		m.Nodes["a2"] = &Node{Name: "a2", Transitions: map[string]*Transition{"ok": {Name: "ok", To: "b"}}}
		m.Start = "a2"
	}
	finalB := func(m *Machine) { m.Nodes["b"] = &Node{Name: "b", Final: true} }
	tests := []struct {
		name    string
		in      Instance
		to      *Machine
		kind    ChangeKind
		node    string
		version uint32
		reason  string
	}{
		{"upgrade ready", mustStart(t, m), nextVersion(UpgradeUpgrade, nil), ChangeUpgraded, "a", 2, "version 1 to version 2"},
		{"upgrade waiting", waiting, nextVersion(UpgradeUpgrade, nil), ChangeUpgraded, "a", 2, "version 1 to version 2"},
		{"upgrade leased", leased(t, m), nextVersion(UpgradeUpgrade, nil), ChangeUpgraded, "a", 2, "version 1 to version 2"},
		{"upgrade, node gone", mustStart(t, m), nextVersion(UpgradeUpgrade, dropA), ChangeAborted, NodeAborted, 1, `node "a" does not exist in version 2`},
		{"upgrade, node final", inB, nextVersion(UpgradeUpgrade, finalB), ChangeAborted, NodeAborted, 1, `node "b" is final in version 2`},
		{"abort ready", mustStart(t, m), nextVersion(UpgradeAbort, nil), ChangeAborted, NodeAborted, 1, "version 2"},
		{"abort leased", leased(t, m), nextVersion(UpgradeAbort, nil), ChangeAborted, NodeAborted, 1, "version 2"},
		{"abort waiting", waiting, nextVersion(UpgradeAbort, nil), ChangeAborted, NodeAborted, 1, "version 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, ch := mustApply(t, m, tt.in, Upgrade{To: tt.to}, later)
			if out.Node != tt.node || out.Version != tt.version || len(ch) != 1 {
				t.Fatalf("got %s@%d in %q, %d changes; want version %d node %q", out.Machine, out.Version, out.Node, len(ch), tt.version, tt.node)
			}
			c := ch[0]
			if c.Kind != tt.kind || c.FromVersion != 1 || c.Version != tt.version || c.FromNode != tt.in.Node ||
				c.ToNode != tt.node || c.FromStatus != tt.in.Status || c.ToStatus != out.Status || !strings.Contains(c.Reason, tt.reason) {
				t.Fatalf("change = %+v", c)
			}
			switch tt.kind {
			case ChangeUpgraded:
				// Everything but the version is kept, a live lease included.
				want := tt.in.Clone()
				want.Version, want.Rev, want.UpdatedAt = 2, tt.in.Rev+1, later
				if !reflect.DeepEqual(out, want) || c.Transition != TransitionUpgrade {
					t.Fatalf("upgraded = %+v\nwant %+v", out, want)
				}
			case ChangeAborted:
				if out.Status != StatusFinal || out.Lease != (Lease{}) || !out.DueAt.IsZero() || c.Transition != TransitionAbort {
					t.Fatalf("aborted = %+v %+v", out, c)
				}
			}
		})
	}
}

// TestUpgradeLeaseCarriesOver: the worker holding a lease when its
// instance is upgraded reports under the new version's transitions.
func TestUpgradeLeaseCarriesOver(t *testing.T) {
	m := testMachine()
	to := nextVersion(UpgradeUpgrade, func(m *Machine) {
		a := m.Nodes["a"]
		delete(a.Transitions, "ok")
		a.Transitions["done"] = &Transition{Name: "done", To: "done"}
	})
	in := leased(t, m)
	up, _ := mustApply(t, m, in, Upgrade{To: to}, t0)
	if _, _, err := Apply(to, up, Report{Token: in.Lease.Token, Transition: "ok"}, t0); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("report of a removed transition: %v", err)
	}
	out, _ := mustApply(t, to, up, Report{Token: in.Lease.Token, Transition: "done"}, t0)
	if out.Node != "done" || out.Status != StatusFinal || out.Version != 2 {
		t.Fatalf("report after upgrade: %+v", out)
	}
}

func TestUpgradeRefused(t *testing.T) {
	m := testMachine()
	final, _ := mustApply(t, m, mustStart(t, m), Cancel{}, t0)
	other := nextVersion(UpgradeUpgrade, nil)
	other.ID = "other"
	same := testMachine()
	same.UpgradeStrategy = UpgradeUpgrade
	tests := []struct {
		name string
		in   Instance
		ev   Upgrade
		want error
	}{
		{"continue", mustStart(t, m), Upgrade{To: nextVersion(UpgradeContinue, nil)}, ErrInvalid},
		{"unspecified", mustStart(t, m), Upgrade{To: nextVersion(UpgradeUnspecified, nil)}, ErrInvalid},
		{"no machine", mustStart(t, m), Upgrade{}, ErrInvalid},
		{"other machine", mustStart(t, m), Upgrade{To: other}, ErrInvalid},
		{"not newer", mustStart(t, m), Upgrade{To: same}, ErrInvalid},
		{"final", final, Upgrade{To: nextVersion(UpgradeAbort, nil)}, ErrFinal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, ch, err := Apply(m, tt.in, tt.ev, t0)
			if !errors.Is(err, tt.want) || len(ch) != 0 || out.ID != "" {
				t.Fatalf("err = %v, want %v; %+v %+v", err, tt.want, out, ch)
			}
		})
	}
}
