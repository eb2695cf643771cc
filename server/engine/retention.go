package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// DefaultRetentionInterval is the default of Retention.Interval.
const DefaultRetentionInterval = time.Minute

// retentionBatch bounds what one transaction of the sweeper deletes
// (changes plus instances), so that a backlog (a first start with
// retention on an old file) is worked off in many small commits instead of
// one huge one that holds the writer.
const retentionBatch = 1000

// Retention says what the sweeper deletes. The zero value deletes nothing.
type Retention struct {
	// Changes is the age of the oldest change the changelog keeps (by the
	// change's time). Zero: no age bound.
	Changes time.Duration
	// ChangesCount is how many of the newest changes the changelog keeps at
	// most. Zero: no count bound.
	ChangesCount int
	// Finished is how long a FINAL instance is kept after it became FINAL;
	// then it is deleted with its index and history entries (its changes
	// stay in the changelog until Changes or ChangesCount deletes them).
	// Zero: FINAL instances are kept for ever.
	Finished time.Duration
	// Interval is the time between two sweeps; default
	// DefaultRetentionInterval.
	Interval time.Duration
	// OnDeleted, when set, is called after each committed batch with what
	// it deleted. It runs on the sweeper's goroutine.
	OnDeleted func(changes int, instances []fsm.Instance)
}

func (r Retention) on() bool { return r.Changes > 0 || r.ChangesCount > 0 || r.Finished > 0 }

// Swept counts what one Sweep deleted.
type Swept struct {
	Changes, Instances int
}

// Sweep deletes, as of the engine's clock, the changes and the FINAL
// instances Options.Retention no longer keeps, retentionBatch of them to a
// transaction, until none is left. The sweeper runs it every
// Retention.Interval; tests and tools call it directly. One Sweep runs at a
// time: when Sweep returns, whatever expired is deleted and reported to
// Retention.OnDeleted, by this call or by one that ran before it.
func (e *Engine) Sweep(ctx context.Context) (Swept, error) {
	var total Swept
	if !e.retention.on() {
		return total, nil
	}
	e.sweepMu.Lock()
	defer e.sweepMu.Unlock()
	for {
		n, instances, more, err := e.sweepBatch(ctx, e.clock.Now())
		if err != nil {
			return total, err
		}
		total.Changes += n
		total.Instances += len(instances)
		if (n > 0 || len(instances) > 0) && e.retention.OnDeleted != nil {
			e.retention.OnDeleted(n, instances)
		}
		if !more {
			return total, nil
		}
	}
}

// sweepBatch deletes up to retentionBatch expired instances and changes in
// one transaction, instances first. more reports that a batch was full.
func (e *Engine) sweepBatch(ctx context.Context, now time.Time) (changes int, instances []fsm.Instance, more bool, err error) {
	r := e.retention
	err = e.st.Update(ctx, func(tx store.Tx) error {
		changes, instances, more = 0, instances[:0], false
		if r.Finished > 0 {
			ids, err := tx.Finished(now.Add(-r.Finished), retentionBatch)
			if err != nil {
				return err
			}
			more = len(ids) == retentionBatch
			for _, id := range ids {
				in, err := tx.Instance(id)
				if errors.Is(err, store.ErrCorrupt) {
					continue // logged and counted by the store; Check lists it
				}
				if err != nil {
					return fmt.Errorf("retention: instance %q: %w", id, err)
				}
				if err := tx.DeleteInstance(id); err != nil {
					return err
				}
				instances = append(instances, in)
			}
		}
		left := retentionBatch - len(instances)
		if left == 0 || (r.Changes <= 0 && r.ChangesCount <= 0) {
			return nil
		}
		var keepFrom uint64
		if r.ChangesCount > 0 {
			head, err := tx.Head()
			if err != nil {
				return err
			}
			if head > uint64(r.ChangesCount) {
				keepFrom = head - uint64(r.ChangesCount) + 1
			}
		}
		var before time.Time
		if r.Changes > 0 {
			before = now.Add(-r.Changes)
		}
		var err error
		if changes, err = tx.TrimChanges(keepFrom, before, left); err != nil {
			return err
		}
		more = more || changes == left
		return nil
	})
	if err != nil {
		return 0, nil, false, fmt.Errorf("retention sweep: %w", err)
	}
	return changes, instances, more, nil
}

// StartRetention runs Sweep every Retention.Interval until StopRetention.
// It does nothing when Options.Retention deletes nothing, or when the
// sweeper runs already. Lead calls it and Follow stops it, so that it runs
// only where writes are made: on the leader.
func (e *Engine) StartRetention(ctx context.Context) {
	e.retMu.Lock()
	defer e.retMu.Unlock()
	if !e.retention.on() || e.retStop != nil {
		return
	}
	rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	e.retStop, e.retDone = stop, done
	// The timer exists before StartRetention returns, so that a test's
	// fake clock moved after it fires it.
	t := e.clock.NewTimer(e.retention.Interval)
	go func() {
		defer close(done)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C():
			}
			s, err := e.Sweep(rctx)
			switch {
			case err != nil && rctx.Err() == nil:
				e.log.Warn("retention sweep failed", "err", err)
			case s.Changes > 0 || s.Instances > 0:
				e.log.Info("retention deleted", "changes", s.Changes, "instances", s.Instances)
			}
			t.Reset(e.retention.Interval)
		}
	}()
}

// StopRetention ends the sweeper and waits for it (or for ctx). It is
// idempotent and safe when the sweeper never started.
func (e *Engine) StopRetention(ctx context.Context) error {
	e.retMu.Lock()
	stop, done := e.retStop, e.retDone
	e.retStop, e.retDone = nil, nil
	e.retMu.Unlock()
	if stop == nil {
		return nil
	}
	stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
