package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// RetryInstance takes an instance that ended in dfsmr.failed back to the
// node it failed in, READY there with attempt 1 (see fsm.RetryFailed). It
// runs on the machine version it failed on. Any other instance is
// fsm.ErrNotRetryable: a second retry of the same failure finds the
// instance running again and changes nothing, and a cancelled or aborted
// instance stays ended.
func (e *Engine) RetryInstance(ctx context.Context, id, reason, actor string) (fsm.Instance, error) {
	if err := checkReason(reason); err != nil {
		return fsm.Instance{}, err
	}
	return e.updateInstance(ctx, id, func(tx store.Tx, m *fsm.Machine, in fsm.Instance, now time.Time) (fsm.Instance, error) {
		return e.retryOne(tx, m, in, reason, actor, now)
	})
}

func (e *Engine) retryOne(tx store.Tx, m *fsm.Machine, in fsm.Instance, reason, actor string, now time.Time) (fsm.Instance, error) {
	var node string
	if in.Node == fsm.NodeFailed {
		var err error
		if node, err = failedIn(tx, in.ID); err != nil {
			return fsm.Instance{}, err
		}
	}
	next, changes, err := fsm.RetryFailed(m, in, fsm.RetryArgs{Node: node, Reason: reason}, now)
	if err != nil {
		return fsm.Instance{}, err
	}
	return next, e.write(tx, next, changes, actor)
}

// historyChunk is how many changes failedIn reads at a time.
const historyChunk = 256

// failedIn returns the node instance id failed in: the from_node of its
// last FAILED change. The instance does not record it; its history does.
func failedIn(tx store.ReadTx, id string) (string, error) {
	node := ""
	for seq := uint64(0); ; {
		chunk, err := tx.HistoryFrom(id, seq, historyChunk)
		if err != nil {
			return "", fmt.Errorf("history of instance %q: %w", id, err)
		}
		for _, c := range chunk {
			if c.Kind == fsm.ChangeFailed {
				node = c.FromNode
			}
		}
		if len(chunk) < historyChunk {
			break
		}
		seq = chunk[len(chunk)-1].Seq + 1
	}
	if node == "" {
		return "", fmt.Errorf("instance %q: its history holds no FAILED change naming the node it failed in: %w", id, fsm.ErrNotRetryable)
	}
	return node, nil
}

// checkReason checks an operator's free-text reason: optional, at most
// MaxReasonBytes, no control characters.
func checkReason(reason string) error {
	return checkText("reason", reason, false, MaxReasonBytes)
}

// ErrCountChanged is wrapped by *CountChangedError.
var ErrCountChanged = errors.New("the number of matching instances changed")

// CountChangedError says that a bulk action's expected count is not the
// number of instances that match now: nothing was changed.
type CountChangedError struct {
	Expected, Found int
}

func (e *CountChangedError) Error() string {
	return fmt.Sprintf("expected_count is %d but %d instances match now: nothing was changed; count again", e.Expected, e.Found)
}

// Unwrap makes errors.Is(err, ErrCountChanged) true.
func (e *CountChangedError) Unwrap() error { return ErrCountChanged }
