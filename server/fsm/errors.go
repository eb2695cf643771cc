package fsm

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers test with errors.Is; the typed errors below wrap
// them with the details.
var (
	// ErrIllegalTransition: the machine does not allow the move.
	ErrIllegalTransition = errors.New("illegal transition")
	// ErrStaleLease: the fencing token presented is not the live lease's.
	ErrStaleLease = errors.New("stale lease")
	// ErrFinal: the instance is in a final node and cannot change.
	ErrFinal = errors.New("instance is final")
	// ErrNotReady: only READY instances can be leased.
	ErrNotReady = errors.New("instance is not ready")
	// ErrNotDue: an instance was woken or timed out before its time.
	ErrNotDue = errors.New("instance is not due")
	// ErrInvalid: an event carries an invalid value.
	ErrInvalid = errors.New("invalid event")
	// ErrNotHolder: the caller is not the principal that holds the lease.
	ErrNotHolder = errors.New("not the lease holder")
	// ErrNotRetryable: only an instance that ended in dfsmr.failed can be
	// retried.
	ErrNotRetryable = errors.New("instance cannot be retried")
)

// IllegalTransitionError names the node and transition that were refused.
type IllegalTransitionError struct {
	Instance   string
	Node       string
	Transition string
	Reason     string
}

func (e *IllegalTransitionError) Error() string {
	return fmt.Sprintf("instance %q in node %q: transition %q: %s", e.Instance, e.Node, e.Transition, e.Reason)
}

// Unwrap makes errors.Is(err, ErrIllegalTransition) true.
func (e *IllegalTransitionError) Unwrap() error { return ErrIllegalTransition }

// StaleLeaseError says which token was presented and which one is live.
// Want is zero when the instance holds no lease at all.
type StaleLeaseError struct {
	Instance string
	Have     uint64
	Want     uint64
}

func (e *StaleLeaseError) Error() string {
	if e.Want == 0 {
		return fmt.Sprintf("instance %q: token %d is stale: the instance is not leased", e.Instance, e.Have)
	}
	return fmt.Sprintf("instance %q: token %d is stale: the live lease has token %d", e.Instance, e.Have, e.Want)
}

// Unwrap makes errors.Is(err, ErrStaleLease) true.
func (e *StaleLeaseError) Unwrap() error { return ErrStaleLease }

// NotHolderError says that a principal other than the lease's holder
// presented its token. The message names neither the holder nor the token.
type NotHolderError struct {
	Instance string
	Caller   string
}

func (e *NotHolderError) Error() string {
	return fmt.Sprintf("instance %q: %s does not hold its lease: only the principal that leased it may use the lease", e.Instance, e.Caller)
}

// Unwrap makes errors.Is(err, ErrNotHolder) true.
func (e *NotHolderError) Unwrap() error { return ErrNotHolder }

// InvalidError names the event field that is wrong.
type InvalidError struct {
	Field  string
	Reason string
}

func (e *InvalidError) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Reason) }

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Unwrap() error { return ErrInvalid }

// InvariantError reports a broken internal invariant: a bug, never a user
// mistake. The core panics with it so tests fail loudly; the store's writer
// recovers it and fails the one operation.
type InvariantError struct {
	Msg string
}

func (e *InvariantError) Error() string { return "dfsmr invariant broken: " + e.Msg }

func assert(ok bool, format string, args ...any) {
	if !ok {
		panic(&InvariantError{Msg: fmt.Sprintf(format, args...)})
	}
}
