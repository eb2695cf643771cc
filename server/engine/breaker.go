package engine

import (
	"fmt"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// applyAttempt applies ev, which ends an attempt (a worker's Report or a
// lease's Expire), under the machine's circuit breaker, with the policy of
// m (the instance's version): a retry gets the breaker's extra delay, and the attempt's outcome is recorded in the
// breaker in the same transaction. When the breaker opens or closes, a
// BREAKER_OPENED or BREAKER_CLOSED change goes to the changelog.
//
// The breaker is read on every such event, and written only when the
// outcome changed it: once a machine's window is full of successes, a
// success leaves it as it is.
//
// retried says the attempt failed and the instance will try its node again
// (not counting an attempt that used up the retries); the caller counts it
// in Stats once the transaction is committed. prepare, when not nil, may
// amend the new instance before it is written (see applyPrepared).
func (e *Engine) applyAttempt(tx store.Tx, m *fsm.Machine, in fsm.Instance, ev fsm.Event, now time.Time, actor string, out *fsm.Instance, prepare func(*fsm.Instance) error) (retried bool, err error) {
	br, err := tx.Breaker(m.ID)
	if err != nil {
		return false, fmt.Errorf("breaker of machine %q: %w", m.ID, err)
	}
	switch x := ev.(type) {
	case fsm.Report:
		x.ExtraDelay = br.ExtraDelay(m.Breaker)
		ev = x
	case fsm.Expire:
		x.ExtraDelay = br.ExtraDelay(m.Breaker)
		ev = x
	}
	var next fsm.Instance
	if err := e.applyPrepared(tx, m, in, ev, now, actor, &next, prepare); err != nil {
		return false, err
	}
	if out != nil {
		*out = next
	}
	success, ok := attemptOutcome(in, next)
	if !ok {
		return false, nil
	}
	retried = !success && next.Node != fsm.NodeFailed
	nb, changed := br.Record(m.Breaker, success, now)
	if nb == br {
		return retried, nil
	}
	if err := tx.PutBreaker(m.ID, nb); err != nil {
		return false, err
	}
	if !changed {
		return retried, nil
	}
	c := fsm.BreakerChange(m.ID, m.Version, m.Breaker, nb, br, now)
	c.Actor = SystemActor
	if _, err := tx.AppendChange(c); err != nil {
		return false, err
	}
	if nb.Open {
		e.log.Warn("circuit breaker opened: retries slowed", "machine", m.ID,
			"failure_share", nb.FailureShare(), "extra_delay", nb.ExtraDelay(m.Breaker))
	} else {
		e.log.Info("circuit breaker closed", "machine", m.ID)
	}
	return retried, nil
}

// attemptOutcome classifies the move from in to out. A failed attempt is
// retried (the attempt number went up) or used up the retries (dfsmr.failed
// reached from a live node); a success left the node. Anything else (an
// idempotent repeat, a delayed self-transition) is no outcome: ok is false.
func attemptOutcome(in, out fsm.Instance) (success, ok bool) {
	switch {
	case out.Rev == in.Rev:
		return false, false
	case out.Attempt > in.Attempt, out.Node == fsm.NodeFailed && in.Node != fsm.NodeFailed:
		return false, true
	case out.Node != in.Node:
		return true, true
	}
	return false, false
}
