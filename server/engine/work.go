package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// ReadyArgs are the inputs of Ready.
type ReadyArgs struct {
	// Worker names the caller; it is recorded on the lease and in the
	// LEASED change.
	Worker string
	// Principal is the authenticated caller, empty without authentication.
	// It holds the leases (only it may use them) and is the changes'
	// actor; without it the actor is Worker.
	Principal string
	// Machine and Node filter the instances offered (Node needs Machine).
	Machine string
	Node    string
	// Wait, when positive, blocks until work appears or Wait has passed.
	Wait time.Duration
	// Max is the most instances one call leases (ReadyBatch only): zero
	// means 1, at most MaxReadyBatch.
	Max int
}

// Ready leases the next READY instance matching the filter: highest
// priority, then earliest due time, then smallest id. ok is false when
// nothing was available before the wait ended. a.Max is ignored.
func (e *Engine) Ready(ctx context.Context, a ReadyArgs) (in fsm.Instance, ok bool, err error) {
	a.Max = 1
	list, err := e.ReadyBatch(ctx, a)
	if err != nil || len(list) == 0 {
		return in, false, err
	}
	return list[0], true, nil
}

// ReadyBatch leases up to a.Max READY instances matching the filter, in
// offer order (as Ready), all in one store transaction: one commit, one
// fsync for the whole batch. With a wait, it returns as soon as at least one
// instance is leased; it never waits to fill the batch. An empty result
// means nothing was available before the wait ended.
func (e *Engine) ReadyBatch(ctx context.Context, a ReadyArgs) ([]fsm.Instance, error) {
	if err := checkText("worker", a.Worker, true, MaxIDBytes); err != nil {
		return nil, err
	}
	if err := checkText("machine", a.Machine, false, MaxIDBytes); err != nil {
		return nil, err
	}
	if err := checkText("node", a.Node, false, MaxIDBytes); err != nil {
		return nil, err
	}
	if a.Node != "" && a.Machine == "" {
		return nil, invalid("node", "filtering by node needs a machine")
	}
	if a.Wait < 0 || a.Wait > MaxWait {
		return nil, invalid("wait", "must be between 0 and %s", MaxWait)
	}
	if a.Max < 0 || a.Max > MaxReadyBatch {
		return nil, invalid("max_count", "must be between 0 and %d", MaxReadyBatch)
	}
	n := max(a.Max, 1)
	f := store.ReadyFilter{Machine: a.Machine, Node: a.Node}
	if a.Wait == 0 {
		list, err := e.tryReady(ctx, f, a, n)
		if len(list) > 0 || err != nil {
			return list, err
		}
		// Nothing leased: say so if nothing ever could be. Looking only
		// now keeps the check off the path that finds work.
		return nil, e.checkReadyFilter(ctx, a.Machine, a.Node)
	}
	if err := e.checkReadyFilter(ctx, a.Machine, a.Node); err != nil {
		return nil, err
	}
	// Register before looking, so that an instance made READY between the
	// look and the wait still wakes this caller.
	w := e.wait.add(f)
	defer e.wait.remove(w)
	timer := e.clock.NewTimer(a.Wait)
	defer timer.Stop()
	for {
		list, err := e.tryReady(ctx, f, a, n)
		if len(list) > 0 || err != nil {
			return list, err
		}
		select {
		case <-w.ch:
		case <-timer.C():
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// checkReadyFilter refuses, as not found, a Ready filter that can match
// nothing: a machine that is not defined, or a node that no version of it
// has (a node the latest version dropped may still hold instances of an
// older one).
func (e *Engine) checkReadyFilter(ctx context.Context, machine, node string) error {
	if machine == "" {
		return nil
	}
	return e.st.View(ctx, func(tx store.ReadTx) error {
		m, err := e.machineVersion(tx, machine, 0)
		if err != nil || node == "" || m.Node(node) != nil {
			return err
		}
		recs, err := tx.MachineVersions(machine)
		if err != nil {
			return err
		}
		for _, r := range recs {
			old, err := e.compiled(r)
			if err != nil {
				return err
			}
			if old.Node(node) != nil {
				return nil
			}
		}
		return fmt.Errorf("machine %q has no node %q: %w", machine, node, store.ErrNotFound)
	})
}

// tryReady leases up to n READY instances matching f in one transaction.
func (e *Engine) tryReady(ctx context.Context, f store.ReadyFilter, a ReadyArgs, n int) (list []fsm.Instance, err error) {
	var more *wake
	err = e.st.Update(ctx, func(tx store.Tx) error {
		// The store may run this function more than once: start clean.
		list, more = list[:0], nil
		ids, err := tx.Ready(f, n+1)
		if err != nil || len(ids) == 0 {
			return err
		}
		now := e.clock.Now()
		for i, id := range ids {
			cur, err := tx.Instance(id)
			if err != nil {
				return fmt.Errorf("ready instance %q: %w", id, err)
			}
			if i == n {
				more = &wake{cur.Machine, cur.Node}
				break
			}
			m, err := e.machineVersion(tx, cur.Machine, cur.Version)
			if err != nil {
				return err
			}
			var in fsm.Instance
			if err := e.lease(tx, m, cur, a.Worker, a.Principal, now, &in); err != nil {
				return err
			}
			list = append(list, in)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if more != nil {
		// This caller may have been woken for an instance that is still
		// READY: make sure another waiter looks at it.
		e.wait.wakeOne(more.machine, more.node)
	}
	return list, nil
}

// lease leases the READY instance in to worker, held by principal (empty
// without authentication), within tx, for its node's lease duration, into
// out.
func (e *Engine) lease(tx store.Tx, m *fsm.Machine, in fsm.Instance, worker, principal string, now time.Time, out *fsm.Instance) error {
	d, err := leaseFor(tx, m, in.Node)
	if err != nil {
		return err
	}
	return e.apply(tx, m, in, fsm.Acquire{Worker: worker, Holder: principal, For: d}, now, workActor(principal, worker), out)
}

// workActor is the changelog actor of a work call: the authenticated
// principal, or without authentication the worker name the call gave
// (empty: the lease's worker, see apply).
func workActor(principal, worker string) string {
	if principal != "" {
		return principal
	}
	return worker
}

// leaseFor is how long a lease in node lasts (zero: never expires, and for
// a system node). A learned (percentile) timeout comes from the node's
// recent successful lease durations; fixed ones read nothing.
func leaseFor(tx store.ReadTx, m *fsm.Machine, node string) (time.Duration, error) {
	n := m.Node(node)
	if n == nil {
		return 0, nil
	}
	if n.Timeout.Percentile <= 0 {
		return n.Timeout.Lease(nil), nil
	}
	samples, err := tx.DurationSamples(m.ID, m.Version, node)
	if err != nil {
		return 0, fmt.Errorf("lease durations of %s node %q: %w", m, node, err)
	}
	return n.Timeout.Lease(samples), nil
}

// learn records how long the lease on in lasted when a Transition moved it
// to out, for a node whose timeout is learned. Only a transition that leaves
// the node is a success for it: an error edge back to the same node, or a
// repeat of a request already applied, teaches nothing.
func learn(tx store.Tx, m *fsm.Machine, in, out fsm.Instance, transition string, now time.Time) error {
	n := m.Node(in.Node)
	if n == nil || n.Timeout.Percentile <= 0 || out.Rev == in.Rev {
		return nil
	}
	if t := n.Transitions[transition]; t == nil || t.To == in.Node {
		return nil
	}
	d := now.Sub(in.Lease.AcquiredAt)
	if d < 0 { // the clock went back
		d = 0
	}
	return tx.AddDurationSample(m.ID, m.Version, in.Node, d)
}

// TransitionArgs are the inputs of Transition.
type TransitionArgs struct {
	ID         string
	Token      uint64
	Transition string
	Params     map[string]string
	// RequestID, when set, makes a retry of this call (same request id
	// and token, among the instance's last fsm.MaxApplied) a no-op that
	// returns the instance.
	RequestID string
	// Delay, when not nil, overrides the transition's delay.
	Delay *time.Duration
	// Principal is the authenticated caller, empty without authentication:
	// it must hold the lease, and it is the change's actor (without it, the
	// lease's worker is).
	Principal string
}

// Transition reports the transition a worker took on its leased instance.
func (e *Engine) Transition(ctx context.Context, a TransitionArgs) (fsm.Instance, error) {
	ev, err := transitionEvent(a)
	if err != nil {
		return fsm.Instance{}, err
	}
	var retried bool // by the last run of the update
	out, err := e.updateInstance(ctx, a.ID, func(tx store.Tx, m *fsm.Machine, in fsm.Instance, now time.Time) (out fsm.Instance, err error) {
		out, retried, err = e.transition(tx, m, in, a, ev, now, nil)
		return out, err
	})
	if err == nil && retried {
		e.retries.Add(1)
	}
	return out, err
}

// transitionEvent validates a and returns its event (without jitter).
func transitionEvent(a TransitionArgs) (fsm.Report, error) {
	if err := checkText("transition", a.Transition, true, MaxIDBytes); err != nil {
		return fsm.Report{}, err
	}
	if err := checkText("request_id", a.RequestID, false, MaxRequestIDBytes); err != nil {
		return fsm.Report{}, err
	}
	if err := checkParams("params", a.Params); err != nil {
		return fsm.Report{}, err
	}
	if a.Token == 0 {
		return fsm.Report{}, invalid("token", "must be the lease's fencing token (non-zero)")
	}
	ev := fsm.Report{Token: a.Token, Holder: a.Principal, Transition: a.Transition, Params: a.Params, RequestID: a.RequestID}
	if a.Delay != nil {
		if *a.Delay < 0 || *a.Delay > fsm.MaxDelay {
			return fsm.Report{}, invalid("delay", "must be between 0 and %s", fsm.MaxDelay)
		}
		ev.Delay, ev.OverrideDelay = *a.Delay, true
	}
	return ev, nil
}

// transition applies a's event to in within tx. prepare is as for
// applyPrepared. retried says the attempt failed and the node will be
// tried again.
func (e *Engine) transition(tx store.Tx, m *fsm.Machine, in fsm.Instance, a TransitionArgs, ev fsm.Report, now time.Time, prepare func(*fsm.Instance) error) (out fsm.Instance, retried bool, err error) {
	ev.Jitter = e.jitter()
	if retried, err = e.applyAttempt(tx, m, in, ev, now, a.Principal, &out, prepare); err != nil {
		return out, false, err
	}
	return out, retried, learn(tx, m, in, out, a.Transition, now)
}

// TransitionResult is the outcome of one item of TransitionBatch: the
// instance after the transition, or the error Transition would have
// returned.
type TransitionResult struct {
	Instance fsm.Instance
	Err      error
	// Next is the instance leased by continuation or refill; Continued
	// says whether there is one. For the retry of an item already applied,
	// it is the lease the first call granted, while that lease is live.
	Next      fsm.Instance
	Continued bool
}

// Continuation asks TransitionBatch to lease an instance again, to Worker,
// when its transition leaves it READY in one of Nodes, each written
// "machine/node".
type Continuation struct {
	Worker string
	// Principal is the authenticated caller, empty without authentication
	// (see ReadyArgs.Principal).
	Principal string
	Nodes     []string
	// Refill leases, for each successful item that is not continued, the
	// next READY instance in one of Nodes instead (in offer order).
	Refill bool
}

// TransitionBatch applies several transitions in one store transaction,
// in order; each succeeds or fails on its own, as Transition would. With
// a continuation, an instance left READY in one of its nodes is leased
// again in the same transaction. The returned error is for the batch as a
// whole (too many items, a bad continuation, or a store failure, and then
// nothing was applied).
func (e *Engine) TransitionBatch(ctx context.Context, batch []TransitionArgs, cont Continuation) ([]TransitionResult, error) {
	if len(batch) == 0 || len(batch) > MaxTransitionBatch {
		return nil, invalid("transitions", "must have between 1 and %d items", MaxTransitionBatch)
	}
	if len(cont.Nodes) > 0 {
		if err := checkText("worker", cont.Worker, true, MaxIDBytes); err != nil {
			return nil, err
		}
	}
	if len(cont.Nodes) > MaxContinueNodes {
		return nil, invalid("continue_nodes", "must have at most %d items", MaxContinueNodes)
	}
	for _, mn := range cont.Nodes {
		if machine, node, ok := strings.Cut(mn, "/"); !ok || machine == "" || node == "" || len(mn) > 2*MaxIDBytes {
			return nil, invalid("continue_nodes", "%q must be machine/node", mn)
		}
	}
	if cont.Refill && len(cont.Nodes) == 0 {
		return nil, invalid("refill", "needs continue_nodes")
	}
	res := make([]TransitionResult, len(batch))
	evs := make([]fsm.Report, len(batch))
	valid := make([]bool, len(batch))
	for i, a := range batch {
		if err := checkText("id", a.ID, true, MaxIDBytes); err != nil {
			res[i].Err = err
			continue
		}
		evs[i], res[i].Err = transitionEvent(a)
		valid[i] = res[i].Err == nil
	}
	var retries uint64 // by the last run of the update
	err := e.st.Update(ctx, func(tx store.Tx) error {
		now := e.clock.Now()
		retries = 0
		for i, a := range batch {
			if !valid[i] {
				continue
			}
			// The store may run this function more than once: each run
			// overwrites every valid item's result.
			res[i] = TransitionResult{}
			in, err := tx.Instance(a.ID)
			if err != nil {
				if errors.Is(err, store.ErrNotFound) {
					res[i].Err = err
					continue
				}
				return fmt.Errorf("instance %q: %w", a.ID, err)
			}
			m, err := e.machineVersion(tx, in.Machine, in.Version)
			if err != nil {
				return err
			}
			// The lease this item's call grants besides (continuation or
			// refill), decided before the transition is written, so that
			// the applied request records it even when the instance goes
			// FINAL (see fsm.Instance.LinkNext).
			var grant fsm.Instance
			var grants bool
			prepare := func(out *fsm.Instance) error {
				switch {
				case continues(*out, cont):
					grant, grants = *out, true
				case cont.Refill:
					var err error
					if grant, grants, err = refillCandidate(tx, cont); err != nil {
						return err
					}
				}
				if grants {
					out.LinkNext(a.RequestID, a.Token, grant.ID, grant.Token+1)
				}
				return nil
			}
			var retried bool
			res[i].Instance, retried, err = e.transition(tx, m, in, a, evs[i], now, prepare)
			if isRefusal(err) {
				// The core refuses before anything is written: the
				// transaction is clean and the other items go on.
				res[i].Err = err
				continue
			}
			if err != nil {
				return err
			}
			if retried {
				retries++
			}
			out := res[i].Instance
			if out.Rev == in.Rev {
				// A retry of an item already applied: no new lease, but
				// the one the first call granted, so that a worker that
				// lost that reply learns the token it holds.
				if res[i].Continued, err = grantedNext(tx, out, a, &res[i].Next); err != nil {
					return err
				}
				continue
			}
			if !grants {
				continue
			}
			if grant.ID == out.ID {
				grant = out // continued: lease it as the transition left it
			}
			gm, err := e.machineVersion(tx, grant.Machine, grant.Version)
			if err != nil {
				return err
			}
			if err := e.lease(tx, gm, grant, cont.Worker, cont.Principal, now, &res[i].Next); err != nil {
				return err
			}
			if res[i].Next.Lease.Token != grant.Token+1 {
				panic(&fsm.InvariantError{Msg: fmt.Sprintf("instance %q leased with token %d; its grant recorded %d", grant.ID, res[i].Next.Lease.Token, grant.Token+1)})
			}
			res[i].Continued = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	e.retries.Add(retries)
	return res, nil
}

// continues reports whether a transition that left out so is continued:
// READY in one of cont's nodes.
func continues(out fsm.Instance, cont Continuation) bool {
	return out.Status == fsm.StatusReady && slices.Contains(cont.Nodes, out.Machine+"/"+out.Node)
}

// grantedNext loads into out the lease that the first call of the
// applied request a granted by continuation or refill, if that lease is
// still live. ok is false when there was none or it has ended.
func grantedNext(tx store.Tx, in fsm.Instance, a TransitionArgs, out *fsm.Instance) (ok bool, err error) {
	ap, found := in.FindApplied(a.RequestID, a.Token)
	if !found || ap.NextID == "" {
		return false, nil
	}
	next := in
	if ap.NextID != in.ID {
		next, err = tx.Instance(ap.NextID)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
	if next.Status != fsm.StatusLeased || next.Lease.Token != ap.NextToken {
		return false, nil
	}
	*out = next
	return true, nil
}

// refillCandidate returns, within tx, the READY instance that Ready would
// offer first among cont.Nodes (highest priority, then earliest due time,
// then id). ok is false when none is READY.
func refillCandidate(tx store.Tx, cont Continuation) (best fsm.Instance, ok bool, err error) {
	for _, mn := range cont.Nodes {
		machine, node, _ := strings.Cut(mn, "/")
		ids, err := tx.Ready(store.ReadyFilter{Machine: machine, Node: node}, 1)
		if err != nil {
			return best, false, err
		}
		if len(ids) == 0 {
			continue
		}
		cur, err := tx.Instance(ids[0])
		if err != nil {
			return best, false, fmt.Errorf("ready instance %q: %w", ids[0], err)
		}
		if !ok || offeredBefore(cur, best) {
			best, ok = cur, true
		}
	}
	return best, ok, nil
}

// offeredBefore reports whether Ready offers a before b.
func offeredBefore(a, b fsm.Instance) bool {
	if a.Priority != b.Priority {
		return a.Priority > b.Priority
	}
	if !a.DueAt.Equal(b.DueAt) {
		return a.DueAt.Before(b.DueAt)
	}
	return a.ID < b.ID
}

// isRefusal reports whether err is the core refusing an event (the
// caller's mistake or a lost race), as opposed to a failure of the store.
func isRefusal(err error) bool {
	var inv *fsm.InvalidError
	return errors.Is(err, fsm.ErrStaleLease) || errors.Is(err, fsm.ErrIllegalTransition) || errors.Is(err, fsm.ErrNotHolder) ||
		errors.Is(err, fsm.ErrFinal) || errors.Is(err, fsm.ErrNotReady) || errors.As(err, &inv)
}

// Heartbeat extends a live lease by its node's timeout and returns the new
// expiry (zero: never expires). principal is the authenticated caller,
// empty without authentication (see TransitionArgs.Principal).
func (e *Engine) Heartbeat(ctx context.Context, id string, token uint64, principal string) (time.Time, error) {
	if err := checkText("id", id, true, MaxIDBytes); err != nil {
		return time.Time{}, err
	}
	if token == 0 {
		return time.Time{}, invalid("token", "must be the lease's fencing token (non-zero)")
	}
	out, err := e.updateInstance(ctx, id, func(tx store.Tx, m *fsm.Machine, in fsm.Instance, now time.Time) (out fsm.Instance, err error) {
		d, err := leaseFor(tx, m, in.Node)
		if err != nil {
			return out, err
		}
		err = e.apply(tx, m, in, fsm.Heartbeat{Token: token, Holder: principal, For: d}, now, principal, &out)
		return out, err
	})
	return out.Lease.ExpiresAt, err
}

// Relinquish gives a lease back without counting a failed attempt.
// principal is as for Heartbeat.
func (e *Engine) Relinquish(ctx context.Context, id string, token uint64, principal string) (fsm.Instance, error) {
	if token == 0 {
		return fsm.Instance{}, invalid("token", "must be the lease's fencing token (non-zero)")
	}
	return e.applyTo(ctx, id, principal, func(*fsm.Machine, fsm.Instance) fsm.Event {
		return fsm.Relinquish{Token: token, Holder: principal}
	})
}
