package fsm

import (
	"fmt"
	"time"
)

// RetryArgs describe an operator's retry of a failed instance.
type RetryArgs struct {
	// Node is the node the instance failed in: the FromNode of its last
	// FAILED change. The core does not read history; the caller finds it.
	Node string
	// Reason is free text recorded in the change.
	Reason string
}

// RetryFailed takes an instance that ended in dfsmr.failed back to the node it
// failed in (a.Node), READY there with attempt 1, as if it had just
// entered it; its params, priority and fencing token are kept. It records
// one RETRIED change (system transition dfsmr.retry). It is the only event
// that changes a FINAL instance, and only this one final node: a cancelled
// or aborted instance was ended on purpose and stays ended.
//
// Errors, all wrapping ErrNotRetryable: the instance is not in
// dfsmr.failed (a second retry of the same failure finds it running
// again); its machine is a job machine (a job runs on a device's queue: a
// new order replaces it); a.Node is not a non-final node of the
// instance's machine version.
//
// in is not modified; the returned instance shares nothing with it.
func RetryFailed(m *Machine, in Instance, a RetryArgs, now time.Time) (Instance, []Change, error) {
	assert(in.Machine == m.ID && in.Version == m.Version,
		"instance %q runs %s@%d, retried with machine %s", in.ID, in.Machine, in.Version, m)
	if in.Node != NodeFailed {
		why := fmt.Sprintf("it is %s in node %q", in.Status, in.Node)
		if in.Node == NodeAborted {
			why = "it was cancelled or aborted, which is not undone"
		}
		return Instance{}, nil, fmt.Errorf("instance %q: only an instance in %s can be retried; %s: %w", in.ID, NodeFailed, why, ErrNotRetryable)
	}
	if m.Kind == KindJob {
		return Instance{}, nil, fmt.Errorf("instance %q is a job of %s: submit a new order instead: %w", in.ID, m, ErrNotRetryable)
	}
	node := m.Node(a.Node)
	if node == nil || node.Final {
		return Instance{}, nil, fmt.Errorf("instance %q: node %q it failed in is not a working node of %s: %w", in.ID, a.Node, m, ErrNotRetryable)
	}
	out := in.Clone()
	out.Node, out.Status, out.DueAt = node.Name, m.idle(), now
	out.Attempt, out.Lease = 1, Lease{}
	c := newChange(ChangeRetried, in, &out, now)
	c.Transition, c.Reason = TransitionRetry, a.Reason
	return settle(in, out, []Change{c}, now)
}
