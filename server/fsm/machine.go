package fsm

import (
	"fmt"
	"time"

	"github.com/dfsmr/dfsmr/client/backoff"
)

// SystemPrefix starts every reserved node and transition name.
const SystemPrefix = "dfsmr."

// System node and transition names.
const (
	// NodeFailed is the final node an instance reaches when its node's retry
	// policy runs out of attempts.
	NodeFailed = "dfsmr.failed"
	// NodeAborted is the final node of a cancelled instance.
	NodeAborted = "dfsmr.aborted"
	// NodeUpgraded is the transient node an instance passes through when it
	// moves to a newer machine version.
	NodeUpgraded = "dfsmr.upgraded"
	// TransitionTimeout is the system transition applied when a lease expires.
	TransitionTimeout = "dfsmr.timeout"
	// TransitionCancel is the system transition recorded by CancelInstance.
	TransitionCancel = "dfsmr.cancel"
	// TransitionFail is the system transition recorded when retries run out.
	TransitionFail = "dfsmr.fail"
	// TransitionRetry is the system transition recorded when an operator
	// retries a failed instance (RetryInstance).
	TransitionRetry = "dfsmr.retry"
)

// Kind says who drives a machine's instances.
type Kind uint8

// Machine kinds.
const (
	KindUnspecified Kind = iota
	// KindWorkflow instances are driven by workers through Ready/Transition.
	KindWorkflow
	// KindDevice machines describe the states of a connected device.
	KindDevice
	// KindJob instances are jobs of devices: HELD, never leased, moved by
	// their device's reconcile rounds (Drive) and by signals.
	KindJob
)

func (k Kind) String() string {
	switch k {
	case KindWorkflow:
		return "workflow"
	case KindDevice:
		return "device"
	case KindJob:
		return "job"
	}
	return "unspecified"
}

// UpgradeStrategy says what running instances do when a new version of their
// machine is defined.
type UpgradeStrategy uint8

// Upgrade strategies.
const (
	UpgradeUnspecified UpgradeStrategy = iota
	// UpgradeContinue lets running instances finish on their own version.
	UpgradeContinue
	// UpgradeUpgrade moves running instances to the new version.
	UpgradeUpgrade
	// UpgradeAbort ends running instances in dfsmr.aborted.
	UpgradeAbort
)

func (u UpgradeStrategy) String() string {
	switch u {
	case UpgradeContinue:
		return "continue"
	case UpgradeUpgrade:
		return "upgrade"
	case UpgradeAbort:
		return "abort"
	}
	return "unspecified"
}

// Machine is a compiled, validated machine definition. A Machine is
// immutable once compiled: it is shared between goroutines without locks.
type Machine struct {
	// ID names the machine; instances refer to it together with Version.
	ID string
	// Version is assigned by the store when the definition is first seen.
	Version uint32
	// Kind is workflow unless the definition says device.
	Kind Kind
	// UpgradeStrategy applies when a newer version is defined.
	UpgradeStrategy UpgradeStrategy
	// Description is free text from the definition.
	Description string
	// Start is the name of the start node.
	Start string
	// Nodes maps node names to nodes.
	Nodes map[string]*Node
	// Order lists the node names in definition order.
	Order []string
	// Reconcile is a device machine's reconcile table; nil for other kinds.
	Reconcile *ReconcileTable
	// Breaker is the circuit breaker policy of the machine's attempts; the
	// zero value is DefaultBreakerPolicy.
	Breaker BreakerPolicy
}

// idle is the status of an instance of m that rests in a non-final node:
// READY to be leased, or HELD for the jobs of devices.
func (m *Machine) idle() Status {
	if m.Kind == KindJob {
		return StatusHeld
	}
	return StatusReady
}

// Node is one state of a machine.
type Node struct {
	// Name is unique within the machine.
	Name string
	// Final nodes end the instance; they have no transitions.
	Final bool
	// Timeout decides how long a lease on an instance in this node lasts.
	Timeout Timeout
	// Retry decides what happens when an attempt in this node fails.
	Retry Retry
	// Transitions maps transition names to transitions.
	Transitions map[string]*Transition
	// Order lists the transition names in definition order.
	Order []string
	// Blocking marks a device machine's nodes in which the device waits for
	// a command; commands are only sent to a device in such a node.
	Blocking bool
}

// Transition is one named, legal move out of a node.
type Transition struct {
	// Name is unique within its node.
	Name string
	// To is the target node.
	To string
	// Delay, when positive, parks the instance in WAITING for that long
	// before the target node is offered again.
	Delay time.Duration
	// Signal marks transitions that are external events: they are applied
	// with SignalInstance and need no lease.
	Signal bool
}

// Node returns the named node or nil.
func (m *Machine) Node(name string) *Node {
	if m == nil {
		return nil
	}
	return m.Nodes[name]
}

// Timeout is a node's lease timeout policy.
//
// A zero Timeout means "never": the lease does not expire and the instance is
// never re-offered (at-most-once). Percentile > 0 learns the timeout from the
// node's recent successful lease durations, bounded by Min and Max; until
// MinSamples exist, Min is used (see Timeout.Lease).
type Timeout struct {
	// Fixed is the lease duration when Percentile is zero.
	Fixed time.Duration
	// Percentile (0 < p < 100) of recent successful lease durations.
	Percentile float64
	// Min bounds a learned timeout from below and is used until enough
	// samples exist.
	Min time.Duration
	// Max bounds a learned timeout from above.
	Max time.Duration
}

// Never reports whether leases in this node never expire.
func (t Timeout) Never() bool { return t.Fixed == 0 && t.Percentile == 0 }

// Backoff is how the delay between attempts grows.
type Backoff uint8

// Backoff kinds.
const (
	BackoffUnspecified Backoff = iota
	// BackoffFixed waits Initial before every retry.
	BackoffFixed
	// BackoffLinear waits Initial times the retry number.
	BackoffLinear
	// BackoffExponential doubles the wait with every retry, from Initial.
	BackoffExponential
)

func (b Backoff) String() string {
	switch b {
	case BackoffFixed:
		return "fixed"
	case BackoffLinear:
		return "linear"
	case BackoffExponential:
		return "exponential"
	}
	return "unspecified"
}

// Retry is a node's retry policy. An attempt fails when a worker takes a
// transition that loops back to the same node without an explicit delay (an
// error edge) or when its lease times out.
type Retry struct {
	// MaxAttempts is the number of attempts allowed in the node, counting the
	// first; zero means unlimited.
	MaxAttempts int32
	// Backoff is the growth of the delay between attempts.
	Backoff Backoff
	// Initial is the delay before the first retry.
	Initial time.Duration
	// Max caps the delay.
	Max time.Duration
	// Jitter spreads each delay uniformly by up to this fraction (0..1)
	// either way, so that retries of many instances do not line up.
	Jitter float64
}

// Delay returns how long to wait before attempt number attempt (2 for the
// first retry). u is a uniform random draw in [0, 1) supplied by the caller;
// it only matters when Jitter is non-zero.
func (r Retry) Delay(attempt int32, u float64) time.Duration {
	return r.Policy().Delay(int64(attempt)-1, u)
}

// Policy returns the retry policy as the shared backoff calculation's.
func (r Retry) Policy() backoff.Policy {
	p := backoff.Policy{Initial: r.Initial, Max: r.Max, Jitter: r.Jitter}
	switch r.Backoff {
	case BackoffLinear:
		p.Growth = backoff.Linear
	case BackoffExponential:
		p.Growth = backoff.Exponential
	default:
		p.Growth = backoff.Fixed
	}
	return p
}

// Exhausted reports whether attempt number attempt is past the policy.
func (r Retry) Exhausted(attempt int32) bool {
	return r.MaxAttempts > 0 && attempt > r.MaxAttempts
}

// String renders the machine as "id@version" for logs and errors.
func (m *Machine) String() string { return fmt.Sprintf("%s@%d", m.ID, m.Version) }
