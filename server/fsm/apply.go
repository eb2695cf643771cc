package fsm

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// Start creates a new instance of m at its start node. The instance is READY
// at once, or WAITING until a.DueAt when that lies after now.
func Start(m *Machine, a StartArgs, now time.Time) (Instance, []Change, error) {
	if a.ID == "" {
		return Instance{}, nil, &InvalidError{Field: "id", Reason: "must not be empty"}
	}
	start := m.Node(m.Start)
	assert(start != nil, "machine %s: start node %q missing", m, m.Start)
	in := Instance{
		ID:        a.ID,
		Machine:   m.ID,
		Version:   m.Version,
		Node:      start.Name,
		Params:    maps.Clone(a.Params),
		Priority:  a.Priority,
		Attempt:   1,
		CreatedAt: now,
	}
	switch {
	case start.Final:
		in.Status = StatusFinal
	case a.DueAt.After(now):
		in.Status, in.DueAt = StatusWaiting, a.DueAt
	default:
		in.Status, in.DueAt = m.idle(), now
	}
	c := newChange(ChangeStarted, Instance{Machine: m.ID, Version: m.Version}, &in, now)
	c.Params = maps.Clone(a.Params)
	return finish(Instance{}, in, []Change{c}, now)
}

// Apply applies one event to an instance of m at clock value now. It returns
// the new instance and the changes to record, or a typed error and no change
// at all. A nil change list with a nil error means the event was a repeat of
// one already applied (an idempotent Transition retry).
//
// in is not modified; the returned instance shares nothing with it.
func Apply(m *Machine, in Instance, ev Event, now time.Time) (Instance, []Change, error) {
	assert(in.Machine == m.ID && in.Version == m.Version,
		"instance %q runs %s@%d, applied with machine %s", in.ID, in.Machine, in.Version, m)
	if r, ok := ev.(Report); ok {
		if a, ok := in.FindApplied(r.RequestID, r.Token); ok {
			if a.Holder != "" && a.Holder != r.Holder {
				return Instance{}, nil, &NotHolderError{Instance: in.ID, Caller: r.Holder}
			}
			return in.Clone(), nil, nil
		}
	}
	if in.Status == StatusFinal {
		if tok, ok := eventToken(ev); ok {
			return Instance{}, nil, &StaleLeaseError{Instance: in.ID, Have: tok}
		}
		return Instance{}, nil, fmt.Errorf("instance %q in node %q: %w", in.ID, in.Node, ErrFinal)
	}
	out := in.Clone()
	var changes []Change
	var err error
	switch e := ev.(type) {
	case Acquire:
		changes, err = acquire(&out, e, now)
	case Report:
		changes, err = report(m, &out, e, now)
	case Heartbeat:
		changes, err = heartbeat(&out, e, now)
	case Relinquish:
		changes, err = relinquish(&out, e, now)
	case Signal:
		changes, err = signal(m, &out, e, now)
	case Cancel:
		changes = cancel(&out, e, now)
	case Expire:
		changes, err = expire(m, &out, e, now)
	case Wake:
		changes, err = wake(&out, now)
	case Upgrade:
		changes, err = upgrade(m, &out, e, now)
	case Drive:
		changes, err = drive(m, &out, e, now)
	default:
		err = &InvalidError{Field: "event", Reason: fmt.Sprintf("unknown event %T", ev)}
	}
	if err != nil {
		return Instance{}, nil, err
	}
	return finish(in, out, changes, now)
}

func eventToken(ev Event) (uint64, bool) {
	switch e := ev.(type) {
	case Report:
		return e.Token, true
	case Heartbeat:
		return e.Token, true
	case Relinquish:
		return e.Token, true
	case Expire:
		return e.Token, true
	}
	return 0, false
}

func checkLease(in *Instance, token uint64) error {
	if in.Status != StatusLeased || in.Lease.Token != token {
		want := uint64(0)
		if in.Status == StatusLeased {
			want = in.Lease.Token
		}
		return &StaleLeaseError{Instance: in.ID, Have: token, Want: want}
	}
	return nil
}

// checkHolder refuses a caller other than the principal that took the
// live lease. A lease taken without authentication binds no one.
func checkHolder(in *Instance, holder string) error {
	if in.Lease.Holder != "" && in.Lease.Holder != holder {
		return &NotHolderError{Instance: in.ID, Caller: holder}
	}
	return nil
}

func acquire(in *Instance, e Acquire, now time.Time) ([]Change, error) {
	if in.Status != StatusReady {
		return nil, fmt.Errorf("instance %q is %s: %w", in.ID, in.Status, ErrNotReady)
	}
	if e.For < 0 {
		return nil, &InvalidError{Field: "lease duration", Reason: "must not be negative"}
	}
	from := *in
	in.Token++
	in.Status = StatusLeased
	in.Lease = Lease{Token: in.Token, Worker: e.Worker, Holder: e.Holder, AcquiredAt: now}
	if e.For > 0 {
		in.Lease.ExpiresAt = now.Add(e.For)
	}
	in.DueAt = time.Time{}
	c := newChange(ChangeLeased, from, in, now)
	c.Worker = e.Worker
	return []Change{c}, nil
}

func report(m *Machine, in *Instance, e Report, now time.Time) ([]Change, error) {
	if err := checkLease(in, e.Token); err != nil {
		return nil, err
	}
	if err := checkHolder(in, e.Holder); err != nil {
		return nil, err
	}
	t, err := lookup(m, in, e.Transition)
	if err != nil {
		return nil, err
	}
	if t.Signal {
		return nil, &IllegalTransitionError{Instance: in.ID, Node: in.Node, Transition: e.Transition,
			Reason: "it is a signal: send it with SignalInstance"}
	}
	if e.OverrideDelay && (e.Delay < 0 || e.Delay > MaxDelay) {
		return nil, &InvalidError{Field: "delay", Reason: fmt.Sprintf("must be between 0 and %s", MaxDelay)}
	}
	if e.RequestID != "" {
		in.Applied = append(in.Applied, Applied{RequestID: e.RequestID, Token: e.Token, Holder: in.Lease.Holder})
		if n := len(in.Applied); n > MaxApplied {
			in.Applied = slices.Clone(in.Applied[n-MaxApplied:])
		}
	}
	worker := in.Lease.Worker
	changes := move(m, in, t, ChangeTransitioned, e.Params, e.Delay, e.OverrideDelay, e.Jitter, e.ExtraDelay, now)
	changes[0].Worker = worker
	return changes, nil
}

func heartbeat(in *Instance, e Heartbeat, now time.Time) ([]Change, error) {
	if err := checkLease(in, e.Token); err != nil {
		return nil, err
	}
	if err := checkHolder(in, e.Holder); err != nil {
		return nil, err
	}
	if e.For < 0 {
		return nil, &InvalidError{Field: "lease duration", Reason: "must not be negative"}
	}
	from := *in
	in.Lease.ExpiresAt = time.Time{}
	if e.For > 0 {
		in.Lease.ExpiresAt = now.Add(e.For)
	}
	c := newChange(ChangeHeartbeat, from, in, now)
	c.Worker = in.Lease.Worker
	return []Change{c}, nil
}

func relinquish(in *Instance, e Relinquish, now time.Time) ([]Change, error) {
	if err := checkLease(in, e.Token); err != nil {
		return nil, err
	}
	if err := checkHolder(in, e.Holder); err != nil {
		return nil, err
	}
	from := *in
	in.Lease = Lease{}
	in.Status, in.DueAt = StatusReady, now
	c := newChange(ChangeRelinquished, from, in, now)
	c.Worker = from.Lease.Worker
	return []Change{c}, nil
}

func signal(m *Machine, in *Instance, e Signal, now time.Time) ([]Change, error) {
	t, err := lookup(m, in, e.Name)
	if err != nil {
		return nil, err
	}
	if !t.Signal {
		return nil, &IllegalTransitionError{Instance: in.ID, Node: in.Node, Transition: e.Name,
			Reason: "it is not a signal: only a worker holding the lease may take it"}
	}
	return move(m, in, t, ChangeSignaled, e.Params, 0, false, e.Jitter, 0, now), nil
}

func cancel(in *Instance, e Cancel, now time.Time) []Change {
	from := *in
	end(in, NodeAborted)
	c := newChange(ChangeCanceled, from, in, now)
	c.Transition, c.Reason = TransitionCancel, e.Reason
	return []Change{c}
}

func expire(m *Machine, in *Instance, e Expire, now time.Time) ([]Change, error) {
	if err := checkLease(in, e.Token); err != nil {
		return nil, err
	}
	if in.Lease.ExpiresAt.IsZero() || now.Before(in.Lease.ExpiresAt) {
		return nil, fmt.Errorf("lease %d of instance %q expires at %v: %w", e.Token, in.ID, in.Lease.ExpiresAt, ErrNotDue)
	}
	from := *in
	node := m.Node(in.Node)
	assert(node != nil, "instance %q in unknown node %q of %s", in.ID, in.Node, m)
	in.Lease = Lease{}
	c := newChange(ChangeTimedOut, from, in, now)
	c.Transition = TransitionTimeout
	return retry(node, m.idle(), in, c, e.Jitter, e.ExtraDelay, now), nil
}

func wake(in *Instance, now time.Time) ([]Change, error) {
	if in.Status != StatusWaiting || now.Before(in.DueAt) {
		return nil, fmt.Errorf("instance %q is %s due %v: %w", in.ID, in.Status, in.DueAt, ErrNotDue)
	}
	from := *in
	in.Status = StatusReady
	return []Change{newChange(ChangeWoken, from, in, now)}, nil
}

func drive(m *Machine, in *Instance, e Drive, now time.Time) ([]Change, error) {
	if in.Status != StatusHeld {
		return nil, &IllegalTransitionError{Instance: in.ID, Node: in.Node, Transition: e.Transition,
			Reason: fmt.Sprintf("only a HELD job of a device is driven by its device; the instance is %s", in.Status)}
	}
	t, err := lookup(m, in, e.Transition)
	if err != nil {
		return nil, err
	}
	if t.Signal {
		return nil, &IllegalTransitionError{Instance: in.ID, Node: in.Node, Transition: e.Transition,
			Reason: "it is a signal: send it with SignalInstance"}
	}
	changes := move(m, in, t, ChangeTransitioned, nil, 0, false, 0, 0, now)
	for i := range changes {
		changes[i].Device = e.Device
	}
	return changes, nil
}

func lookup(m *Machine, in *Instance, name string) (*Transition, error) {
	node := m.Node(in.Node)
	assert(node != nil, "instance %q in unknown node %q of %s", in.ID, in.Node, m)
	t := node.Transitions[name]
	if t == nil {
		return nil, &IllegalTransitionError{Instance: in.ID, Node: in.Node, Transition: name,
			Reason: fmt.Sprintf("node has no such transition (it has %v)", node.Order)}
	}
	return t, nil
}

// move takes transition t. A transition back to the same node without a
// delay is an error edge: a failed attempt, retried under the node's policy.
// A delayed self-transition is a deliberate deferral and costs no attempt.
// extra is added to the backoff of such a retry (see retry).
func move(m *Machine, in *Instance, t *Transition, kind ChangeKind, params map[string]string,
	delay time.Duration, override bool, jitter float64, extra time.Duration, now time.Time) []Change {
	from := *in
	if len(params) > 0 {
		if in.Params == nil {
			in.Params = make(map[string]string, len(params))
		}
		maps.Copy(in.Params, params)
	}
	in.Lease = Lease{}
	if !override {
		delay = t.Delay
	}
	target := m.Node(t.To)
	assert(target != nil, "transition %q of %s targets unknown node %q", t.Name, m, t.To)
	c := newChange(kind, from, in, now)
	c.Transition, c.Params, c.ToNode = t.Name, maps.Clone(params), target.Name
	if t.To == from.Node && delay == 0 {
		return retry(target, m.idle(), in, c, jitter, extra, now)
	}
	in.Node = target.Name
	if t.To != from.Node {
		in.Attempt = 1
	}
	switch {
	case target.Final:
		in.Status, in.DueAt = StatusFinal, time.Time{}
	case delay > 0:
		in.Status, in.DueAt = StatusWaiting, now.Add(delay)
	default:
		in.Status, in.DueAt = m.idle(), now
	}
	fill(&c, in)
	return []Change{c}
}

// retry counts a failed attempt in node: the instance waits out the backoff,
// or ends in dfsmr.failed when the attempts are used up. c is the change
// that caused the failure; it is completed and returned first. extra (the
// machine's circuit breaker delay) is added to the backoff of a retry; it
// does not hold back the failure into dfsmr.failed.
func retry(node *Node, idle Status, in *Instance, c Change, jitter float64, extra time.Duration, now time.Time) []Change {
	in.Attempt++
	if node.Retry.Exhausted(in.Attempt) {
		in.Status, in.DueAt = idle, now
		fill(&c, in)
		from := *in
		end(in, NodeFailed)
		f := newChange(ChangeFailed, from, in, now)
		f.Transition = TransitionFail
		f.Reason = fmt.Sprintf("%d attempts used up in node %q", node.Retry.MaxAttempts, node.Name)
		return []Change{c, f}
	}
	if d := node.Retry.Delay(in.Attempt, jitter) + max(extra, 0); d > 0 {
		in.Status, in.DueAt = StatusWaiting, now.Add(d)
	} else {
		in.Status, in.DueAt = idle, now
	}
	fill(&c, in)
	return []Change{c}
}

func end(in *Instance, node string) {
	in.Node, in.Status = node, StatusFinal
	in.Lease, in.DueAt = Lease{}, time.Time{}
}

func newChange(kind ChangeKind, from Instance, to *Instance, now time.Time) Change {
	c := Change{
		At:         now,
		Kind:       kind,
		Instance:   to.ID,
		Machine:    to.Machine,
		Version:    to.Version,
		FromNode:   from.Node,
		FromStatus: from.Status,
	}
	fill(&c, to)
	return c
}

// fill copies the instance's state after the change into c.
func fill(c *Change, in *Instance) {
	c.ToNode, c.ToStatus = in.Node, in.Status
	c.Token, c.Attempt = in.Token, in.Attempt
	c.DueAt, _ = in.DueTime()
}

// finish stamps the bookkeeping fields and checks the invariants that no
// event may break.
func finish(prev, in Instance, changes []Change, now time.Time) (Instance, []Change, error) {
	assert(prev.Status != StatusFinal, "instance %q: final instance changed", in.ID)
	return settle(prev, in, changes, now)
}

// settle is finish without the rule that a FINAL instance never changes:
// RetryFailed is the one way out of dfsmr.failed.
func settle(prev, in Instance, changes []Change, now time.Time) (Instance, []Change, error) {
	in.Rev = prev.Rev + uint64(len(changes))
	in.UpdatedAt = now
	assert(len(changes) > 0, "instance %q: event applied without a change", in.ID)
	assert(in.Token >= prev.Token, "instance %q: token went down from %d to %d", in.ID, prev.Token, in.Token)
	assert((in.Status == StatusLeased) == (in.Lease.Token != 0), "instance %q: %s with lease token %d", in.ID, in.Status, in.Lease.Token)
	assert(in.Status != StatusLeased || in.Lease.Token == in.Token, "instance %q: live lease %d is not the last token %d", in.ID, in.Lease.Token, in.Token)
	assert(in.Status != StatusWaiting || !in.DueAt.IsZero(), "instance %q: WAITING without a due time", in.ID)
	assert(in.Attempt >= 1, "instance %q: attempt %d", in.ID, in.Attempt)
	assert(len(in.Applied) <= MaxApplied, "instance %q: %d applied requests kept", in.ID, len(in.Applied))
	return in, changes, nil
}
