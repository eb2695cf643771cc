package fsm

import (
	"fmt"
	"time"
)

// System transitions of an upgrade.
const (
	// TransitionUpgrade is recorded when an instance moves to a newer
	// machine version: it passes through the system node dfsmr.upgraded
	// and comes out in the same node of the new version.
	TransitionUpgrade = "dfsmr.upgrade"
	// TransitionAbort is recorded when a newer machine version ends an
	// instance in dfsmr.aborted.
	TransitionAbort = "dfsmr.abort"
)

// Upgrade applies a newly defined version To of the instance's machine, as
// To's upgrade strategy says (the strategy of the new version decides):
//
//   - upgrade: an instance whose node exists in To and is not final there
//     moves to To.Version through the system node dfsmr.upgraded, keeping
//     its node, status, attempt, due time and lease; a leased worker may
//     still report with its token, under To's transitions. Any other
//     instance is aborted.
//   - abort: the instance ends in dfsmr.aborted, on its own version.
//   - continue: the instance finishes on its own version; applying Upgrade
//     is an error.
//
// Apply it with the instance's current machine.
type Upgrade struct {
	To *Machine
}

func (Upgrade) event() {}

func upgrade(m *Machine, in *Instance, e Upgrade, now time.Time) ([]Change, error) {
	to := e.To
	if to == nil || to.ID != m.ID || to.Version <= m.Version {
		return nil, &InvalidError{Field: "upgrade", Reason: fmt.Sprintf("%v is not a newer version of %s", to, m)}
	}
	switch to.UpgradeStrategy {
	case UpgradeAbort:
		return abort(in, fmt.Sprintf("version %d was defined with upgrade strategy abort", to.Version), now), nil
	case UpgradeUpgrade:
	default:
		return nil, &InvalidError{Field: "upgrade", Reason: fmt.Sprintf("version %d has upgrade strategy %s: instances stay on their version", to.Version, to.UpgradeStrategy)}
	}
	switch node := to.Node(in.Node); {
	case node == nil:
		return abort(in, fmt.Sprintf("node %q does not exist in version %d", in.Node, to.Version), now), nil
	case node.Final:
		return abort(in, fmt.Sprintf("node %q is final in version %d", in.Node, to.Version), now), nil
	}
	from := *in
	in.Version = to.Version
	c := newChange(ChangeUpgraded, from, in, now)
	c.Transition, c.FromVersion = TransitionUpgrade, from.Version
	c.Reason = fmt.Sprintf("upgraded from version %d to version %d through %s", from.Version, to.Version, NodeUpgraded)
	return []Change{c}, nil
}

// abort ends an instance in dfsmr.aborted because of a machine upgrade.
func abort(in *Instance, reason string, now time.Time) []Change {
	from := *in
	end(in, NodeAborted)
	c := newChange(ChangeAborted, from, in, now)
	c.Transition, c.FromVersion, c.Reason = TransitionAbort, from.Version, reason
	return []Change{c}
}
