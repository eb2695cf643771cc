package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// Bounds of the bulk actions (CancelInstances, RetryInstances).
const (
	// BulkBatch is how many instances one transaction of a bulk action
	// changes, so that a large action never makes a huge transaction and
	// other writers get their turn between batches.
	BulkBatch = 256
	// MaxBulk bounds the instances one bulk action changes: the ids it
	// counted are held in memory until it has changed them. More is
	// ErrBulkTooLarge; a dry run counts any number.
	MaxBulk = 100_000
	// BulkSample is how many of the matching ids a bulk result names.
	BulkSample = 20
)

// ErrBulkTooLarge: a bulk action matched more than MaxBulk instances.
var ErrBulkTooLarge = errors.New("too many matching instances for one bulk action")

// BulkArgs select the instances of a bulk action and guard it.
type BulkArgs struct {
	// Machine, Node and Status filter the instances; an empty value
	// matches any. Node needs Machine. For RetryInstances, Node is the node
	// the instances failed in, and Status is not used.
	Machine string
	Node    string
	Status  fsm.Status
	// All must be set to act with no filter at all: an empty filter is
	// never taken to mean every instance by accident.
	All bool
	// DryRun counts the matching instances and changes nothing.
	DryRun bool
	// Expected, when HasExpected, is the count the caller showed for
	// confirmation: if another number matches now, the action is a
	// *CountChangedError and changes nothing.
	Expected    int
	HasExpected bool
	// Reason is recorded in every change.
	Reason string
	// Actor is recorded in the changelog.
	Actor string
}

// BulkResult is what a bulk action counted and did.
type BulkResult struct {
	// Matched is how many instances matched when the action started.
	Matched int
	// Changed is how many of them the action changed (0 for a dry run).
	Changed int
	// Skipped is how many of them no longer matched when their batch ran
	// (finished, cancelled or retried meanwhile) and were left alone.
	Skipped int
	// Sample is the first BulkSample matching ids, in id order.
	Sample []string
}

// CancelInstances cancels, like CancelInstance, every instance that is not
// FINAL and matches a's filter. The matching instances are counted in one
// read; they are then cancelled BulkBatch per transaction, each one checked
// again: an instance that went FINAL or left the filter in between is
// skipped, and one that came to match after the count is not touched. An
// error ends the action: the batches before it stay committed.
func (e *Engine) CancelInstances(ctx context.Context, a BulkArgs) (BulkResult, error) {
	if a.Status == fsm.StatusFinal {
		return BulkResult{}, invalid("status", "FINAL instances cannot be cancelled")
	}
	if err := a.check(a.Status != fsm.StatusUnspecified); err != nil {
		return BulkResult{}, err
	}
	f, match, act := e.cancelPlan(a)
	return e.bulk(ctx, a, f, match, act)
}

// matchFunc says whether an instance is one a bulk action acts on; actFunc
// acts on one, in the batch's transaction.
type (
	matchFunc func(store.ReadTx, fsm.Instance) (bool, error)
	actFunc   func(store.Tx, *fsm.Machine, fsm.Instance, time.Time) error
)

// cancelPlan is what CancelInstances selects and does.
func (e *Engine) cancelPlan(a BulkArgs) (store.InstanceFilter, matchFunc, actFunc) {
	f := store.InstanceFilter{Machine: a.Machine, Node: a.Node, Status: a.Status}
	match := func(_ store.ReadTx, in fsm.Instance) (bool, error) {
		return in.Status != fsm.StatusFinal && matches(f, in), nil
	}
	act := func(tx store.Tx, m *fsm.Machine, in fsm.Instance, now time.Time) error {
		return e.apply(tx, m, in, fsm.Cancel{Reason: a.Reason}, now, a.Actor, nil)
	}
	return f, match, act
}

// RetryInstances retries, like RetryInstance, every instance in
// dfsmr.failed of a.Machine (any machine with a.All) that failed in node
// a.Node (any node when empty). It counts and acts in batches as
// CancelInstances does. Failed jobs of devices do not match: they are not
// retried.
func (e *Engine) RetryInstances(ctx context.Context, a BulkArgs) (BulkResult, error) {
	if a.Status != fsm.StatusUnspecified {
		return BulkResult{}, invalid("status", "a retry selects failed instances; it takes no status")
	}
	if err := a.check(false); err != nil {
		return BulkResult{}, err
	}
	f := store.InstanceFilter{Machine: a.Machine, Node: fsm.NodeFailed}
	match := func(tx store.ReadTx, in fsm.Instance) (bool, error) {
		if !matches(f, in) {
			return false, nil
		}
		m, err := e.machineVersion(tx, in.Machine, in.Version)
		if err != nil || m.Kind == fsm.KindJob {
			return false, err
		}
		if a.Node == "" {
			return true, nil
		}
		node, err := failedIn(tx, in.ID)
		if errors.Is(err, fsm.ErrNotRetryable) {
			return false, nil
		}
		return node == a.Node, err
	}
	return e.bulk(ctx, a, f, match, func(tx store.Tx, m *fsm.Machine, in fsm.Instance, now time.Time) error {
		_, err := e.retryOne(tx, m, in, a.Reason, a.Actor, now)
		return err
	})
}

func (a *BulkArgs) check(hasStatus bool) error {
	if err := errors.Join(checkText("machine", a.Machine, false, MaxIDBytes), checkText("node", a.Node, false, MaxIDBytes), checkReason(a.Reason)); err != nil {
		return err
	}
	switch {
	case a.Node != "" && a.Machine == "":
		return invalid("node", "filtering by node needs a machine")
	case a.Machine == "" && !hasStatus && !a.All:
		return invalid("machine", "a bulk action needs a filter; set all to act on every instance")
	case a.HasExpected && a.Expected < 0:
		return invalid("expected_count", "must not be negative")
	}
	return nil
}

func matches(f store.InstanceFilter, in fsm.Instance) bool {
	return (f.Machine == "" || in.Machine == f.Machine) &&
		(f.Node == "" || in.Node == f.Node) &&
		(f.Status == fsm.StatusUnspecified || in.Status == f.Status)
}

// bulk counts the instances of f that match in one read, checks the
// caller's expected count, and unless it is a dry run applies act to each
// (see bulkApply).
func (e *Engine) bulk(ctx context.Context, a BulkArgs, f store.InstanceFilter,
	match matchFunc, act actFunc) (BulkResult, error) {
	res, ids, err := e.bulkCount(ctx, f, a.DryRun, match)
	switch {
	case err != nil:
		return BulkResult{}, err
	case a.HasExpected && a.Expected != res.Matched:
		return BulkResult{}, &CountChangedError{Expected: a.Expected, Found: res.Matched}
	case a.DryRun:
		return res, nil
	case res.Matched > MaxBulk:
		return BulkResult{}, fmt.Errorf("%d instances match; the limit is %d: narrow the filter: %w", res.Matched, MaxBulk, ErrBulkTooLarge)
	}
	res.Changed, res.Skipped, err = e.bulkApply(ctx, ids, match, act)
	return res, err
}

// bulkCount counts the instances of f that match, in one read. Unless
// countOnly, it returns their ids too, up to MaxBulk+1 of them.
func (e *Engine) bulkCount(ctx context.Context, f store.InstanceFilter, countOnly bool, match matchFunc) (res BulkResult, ids []string, err error) {
	err = e.st.View(ctx, func(tx store.ReadTx) error {
		res, ids = BulkResult{}, nil
		for after := ""; ; {
			chunk, err := tx.Instances(f, after, historyChunk)
			if err != nil {
				return err
			}
			for _, in := range chunk {
				ok, err := match(tx, in)
				if err != nil {
					return err
				}
				if !ok {
					continue
				}
				res.Matched++
				if len(res.Sample) < BulkSample {
					res.Sample = append(res.Sample, in.ID)
				}
				if !countOnly && len(ids) <= MaxBulk {
					ids = append(ids, in.ID)
				}
			}
			if len(chunk) < historyChunk {
				return nil
			}
			after = chunk[len(chunk)-1].ID
		}
	})
	return res, ids, err
}

// bulkApply applies act to the instances ids, BulkBatch per transaction,
// each one loaded and checked with match again first: one that no longer
// matches (or no longer exists) is skipped. An error ends it; the batches
// before stay committed and are counted.
func (e *Engine) bulkApply(ctx context.Context, ids []string, match matchFunc, act actFunc) (changed, skipped int, err error) {
	for len(ids) > 0 {
		batch := ids[:min(len(ids), BulkBatch)]
		ids = ids[len(batch):]
		var c, s int
		err := e.st.Update(ctx, func(tx store.Tx) error {
			c, s = 0, 0
			now := e.clock.Now()
			for _, id := range batch {
				in, err := tx.Instance(id)
				if errors.Is(err, store.ErrNotFound) {
					s++
					continue
				}
				if err != nil {
					return wrap(err, "instance %q", id)
				}
				ok, err := match(tx, in)
				if err != nil {
					return err
				}
				if !ok {
					s++
					continue
				}
				m, err := e.machineVersion(tx, in.Machine, in.Version)
				if err != nil {
					return err
				}
				if err := act(tx, m, in, now); err != nil {
					return err
				}
				c++
			}
			return nil
		})
		if err != nil {
			return changed, skipped, err
		}
		changed, skipped = changed+c, skipped+s
	}
	return changed, skipped, nil
}
