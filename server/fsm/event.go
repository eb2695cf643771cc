package fsm

import "time"

// MaxDelay bounds any delay an event may ask for.
const MaxDelay = 366 * 24 * time.Hour

// Event is one input to Apply. The concrete types below are the only events.
type Event interface{ event() }

// StartArgs describe a new instance.
type StartArgs struct {
	// ID is the client-chosen instance id.
	ID string
	// Params are the initial params.
	Params map[string]string
	// Priority orders READY instances: higher first.
	Priority int32
	// DueAt, when after now, starts the instance WAITING until then.
	DueAt time.Time
}

// Acquire leases a READY instance to a worker.
type Acquire struct {
	// Worker identifies the lease holder (the name it gave itself).
	Worker string
	// Holder is the authenticated principal taking the lease; empty
	// without authentication (see Lease.Holder).
	Holder string
	// For is the lease duration; zero means the lease never expires.
	For time.Duration
}

// Report is a worker's Transition: the leased work is done and the named
// transition happened.
type Report struct {
	// Token must be the live lease's fencing token.
	Token uint64
	// Holder is the authenticated principal reporting; it must be the
	// lease's holder. Empty without authentication.
	Holder string
	// Transition is the name of a non-signal transition of the node.
	Transition string
	// Params are merged into the instance's params.
	Params map[string]string
	// RequestID, when set, makes a retry of the same report (same request
	// id and token, one of the instance's last MaxApplied) a no-op.
	RequestID string
	// Delay overrides the transition's delay when OverrideDelay is set
	// (a worker passing on a Retry-After, say).
	Delay         time.Duration
	OverrideDelay bool
	// Jitter is a uniform draw in [0, 1) for the retry policy.
	Jitter float64
	// ExtraDelay is added to the backoff when the report is a failed
	// attempt that is retried (the machine's Breaker.ExtraDelay); it does
	// not delay a failure into dfsmr.failed nor any other move.
	ExtraDelay time.Duration
}

// Heartbeat extends a live lease to now+For (zero: never expires).
type Heartbeat struct {
	Token uint64
	// Holder is the authenticated caller; it must be the lease's holder.
	Holder string
	For    time.Duration
}

// Relinquish gives a live lease back; the instance is READY again at once
// and the attempt does not count as failed.
type Relinquish struct {
	Token uint64
	// Holder is the authenticated caller; it must be the lease's holder.
	Holder string
}

// Signal applies a transition marked as a signal; it needs no lease and
// revokes any live one.
type Signal struct {
	// Name is the signal transition's name.
	Name string
	// Params are merged into the instance's params.
	Params map[string]string
	// Jitter is a uniform draw in [0, 1) for the retry policy.
	Jitter float64
}

// Cancel ends the instance in dfsmr.aborted.
type Cancel struct {
	Reason string
}

// Expire times out the lease with Token: the system transition dfsmr.timeout.
type Expire struct {
	Token uint64
	// Jitter is a uniform draw in [0, 1) for the retry policy.
	Jitter float64
	// ExtraDelay is added to the backoff when the attempt is retried (the
	// machine's Breaker.ExtraDelay).
	ExtraDelay time.Duration
}

// Wake makes a WAITING instance whose due time has come READY.
type Wake struct{}

// Drive takes a non-signal transition of a HELD instance (a job of a
// device) on behalf of its device's reconcile round: such instances hold no
// lease, their device's reports move them.
type Drive struct {
	// Transition is the name of a non-signal transition of the node.
	Transition string
	// Device is the device whose round took it (recorded in the change).
	Device string
}

func (Acquire) event()    {}
func (Report) event()     {}
func (Heartbeat) event()  {}
func (Relinquish) event() {}
func (Signal) event()     {}
func (Cancel) event()     {}
func (Expire) event()     {}
func (Wake) event()       {}
func (Drive) event()      {}
