package fsm

import (
	"maps"
	"slices"
	"time"
)

// Status is where an instance stands with respect to workers.
type Status uint8

// Instance statuses.
const (
	StatusUnspecified Status = iota
	// StatusWaiting instances become READY at DueAt.
	StatusWaiting
	// StatusReady instances can be leased by Ready.
	StatusReady
	// StatusLeased instances are held by a worker until the lease ends.
	StatusLeased
	// StatusFinal instances are in a final node and never change again,
	// but for an operator's retry out of dfsmr.failed (RetryFailed).
	StatusFinal
	// StatusHeld instances belong to a machine of kind job: never leased,
	// moved by their device's rounds (Drive) and by signals.
	StatusHeld
)

func (s Status) String() string {
	switch s {
	case StatusWaiting:
		return "WAITING"
	case StatusReady:
		return "READY"
	case StatusLeased:
		return "LEASED"
	case StatusFinal:
		return "FINAL"
	case StatusHeld:
		return "HELD"
	}
	return "UNSPECIFIED"
}

// Instance is one run of one machine version.
type Instance struct {
	// ID is chosen by the client and is the idempotency key of StartInstance.
	ID string
	// Machine and Version name the definition the instance runs on.
	Machine string
	Version uint32
	// Node is the current node.
	Node string
	// Status is WAITING, READY, LEASED or FINAL.
	Status Status
	// Params are the instance's key/value parameters; transitions and
	// signals merge their params in.
	Params map[string]string
	// Priority orders READY instances: higher first.
	Priority int32
	// Attempt counts attempts in the current node, from 1.
	Attempt int32
	// DueAt is when a WAITING instance becomes READY; for a READY instance
	// it is when it became ready (older first among equal priorities).
	DueAt time.Time
	// Lease is the live lease of a LEASED instance; zero otherwise.
	Lease Lease
	// Token is the last fencing token issued for this instance. It only
	// ever grows, across restarts, because it is stored with the instance.
	Token uint64
	// Applied are the last MaxApplied Transitions applied with a request
	// id, oldest first, so that a retry of any of them is recognised and
	// answered without effect, even after the instance was leased again or
	// went FINAL.
	Applied []Applied
	// Rev counts the changes applied to the instance, from 1 at start.
	Rev uint64
	// CreatedAt and UpdatedAt are clock values of the first and last change.
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Lease is what a worker holds while it works on an instance.
type Lease struct {
	// Token fences the lease: Transition, Heartbeat and Relinquish must
	// present it.
	Token uint64
	// Worker identifies the holder (free text chosen by the worker).
	Worker string
	// Holder is the authenticated principal that took the lease; only it
	// may report on, extend or give back the lease. Empty when the server
	// runs without authentication: then any caller with the token may.
	Holder string
	// AcquiredAt is when the lease was granted.
	AcquiredAt time.Time
	// ExpiresAt is when the lease times out; zero means never.
	ExpiresAt time.Time
}

// MaxApplied bounds Instance.Applied: a Transition retried with its
// request id is recognised as long as fewer than MaxApplied Transitions
// with a request id were applied to the instance after it.
const MaxApplied = 8

// Applied records one Transition applied with a request id.
type Applied struct {
	// RequestID and Token are the request id and the token the Transition
	// presented; a retry must present both.
	RequestID string
	Token     uint64
	// Holder is the lease's holder when it was applied (see Lease.Holder).
	Holder string
	// NextID and NextToken name the lease the same call granted by
	// continuation or refill (see TransitionBatch); empty and zero when it
	// granted none.
	NextID    string
	NextToken uint64
}

// Clone returns a deep copy of the instance (params and applied requests
// are copied).
func (in Instance) Clone() Instance {
	in.Params = maps.Clone(in.Params)
	in.Applied = slices.Clone(in.Applied)
	return in
}

// FindApplied returns the applied Transition with requestID and token.
func (in *Instance) FindApplied(requestID string, token uint64) (Applied, bool) {
	if i := in.appliedIndex(requestID, token); i >= 0 {
		return in.Applied[i], true
	}
	return Applied{}, false
}

// LinkNext records on the applied Transition with requestID and token the
// lease (nextID, nextToken) its call granted, so that a retry of the call
// can answer with it too. It reports whether such a Transition is recorded.
func (in *Instance) LinkNext(requestID string, token uint64, nextID string, nextToken uint64) bool {
	i := in.appliedIndex(requestID, token)
	if i < 0 {
		return false
	}
	in.Applied[i].NextID, in.Applied[i].NextToken = nextID, nextToken
	return true
}

// appliedIndex is the index in Applied of the Transition with requestID
// and token, or -1 (always for an empty requestID).
func (in *Instance) appliedIndex(requestID string, token uint64) int {
	if requestID == "" {
		return -1
	}
	return slices.IndexFunc(in.Applied, func(a Applied) bool { return a.RequestID == requestID && a.Token == token })
}

// DueTime returns the time at which the scheduler must look at the instance
// again: the due time of a WAITING instance or the expiry of a lease. ok is
// false when nothing is due.
func (in *Instance) DueTime() (t time.Time, ok bool) {
	switch in.Status {
	case StatusWaiting:
		return in.DueAt, true
	case StatusLeased:
		if !in.Lease.ExpiresAt.IsZero() {
			return in.Lease.ExpiresAt, true
		}
	}
	return time.Time{}, false
}
