package fsm

import "time"

// ChangeKind says what a change did.
type ChangeKind uint8

// Change kinds.
const (
	ChangeUnspecified ChangeKind = iota
	// ChangeStarted: an instance was created.
	ChangeStarted
	// ChangeLeased: a worker leased the instance.
	ChangeLeased
	// ChangeTransitioned: a worker reported a transition.
	ChangeTransitioned
	// ChangeHeartbeat: a worker extended its lease.
	ChangeHeartbeat
	// ChangeRelinquished: a worker gave its lease back.
	ChangeRelinquished
	// ChangeSignaled: an external signal moved the instance.
	ChangeSignaled
	// ChangeCanceled: the instance was cancelled into dfsmr.aborted.
	ChangeCanceled
	// ChangeTimedOut: a lease expired (system transition dfsmr.timeout).
	ChangeTimedOut
	// ChangeWoken: a WAITING instance came due and became READY.
	ChangeWoken
	// ChangeFailed: retries ran out and the instance went to dfsmr.failed.
	ChangeFailed
	// ChangeMachineDefined: a new machine version was defined.
	ChangeMachineDefined
	// ChangeUpgraded: a newer machine version was defined with strategy
	// upgrade and the instance moved to it (system transition
	// dfsmr.upgrade, through the node dfsmr.upgraded), keeping its node.
	ChangeUpgraded
	// ChangeAborted: a newer machine version ended the instance in
	// dfsmr.aborted (system transition dfsmr.abort): its strategy is
	// abort, or upgrade and the instance's node is gone or final there.
	ChangeAborted
	// ChangeBreakerOpened: the machine's circuit breaker opened: too many
	// recent attempts failed and its retries now wait longer (see
	// Breaker). Instance is empty; Reason gives the failure share.
	ChangeBreakerOpened
	// ChangeBreakerClosed: the machine's circuit breaker closed: attempts
	// succeed again and retries follow their node's policy alone.
	// Instance is empty.
	ChangeBreakerClosed
	// ChangeDeviceOnline: a device registered on a Connect stream. Device
	// is set, Instance is empty; ToNode is its reported node.
	ChangeDeviceOnline
	// ChangeDeviceOffline: a device's stream ended; Reason says how.
	ChangeDeviceOffline
	// ChangeDeviceMoved: a device reported a new node of its machine.
	ChangeDeviceMoved
	// ChangeDeviceCommand: a command was sent to a device: Transition is
	// the command, Token its seq, Instance its job.
	ChangeDeviceCommand
	// ChangeDeviceRejected: a device refused a command: Token is its seq,
	// Reason the device's words.
	ChangeDeviceRejected
	// ChangeDeviceNotice: something for an operator (Reason), about the
	// job Instance on the device Device.
	ChangeDeviceNotice
	// ChangeRetried: an operator retried an instance that had failed
	// (system transition dfsmr.retry): it left dfsmr.failed for the node
	// it failed in, READY there with attempt 1 (see Retry).
	ChangeRetried
)

var changeKindNames = [...]string{
	ChangeUnspecified:    "UNSPECIFIED",
	ChangeStarted:        "STARTED",
	ChangeLeased:         "LEASED",
	ChangeTransitioned:   "TRANSITIONED",
	ChangeHeartbeat:      "HEARTBEAT",
	ChangeRelinquished:   "RELINQUISHED",
	ChangeSignaled:       "SIGNALED",
	ChangeCanceled:       "CANCELED",
	ChangeTimedOut:       "TIMED_OUT",
	ChangeWoken:          "WOKEN",
	ChangeFailed:         "FAILED",
	ChangeMachineDefined: "MACHINE_DEFINED",
	ChangeUpgraded:       "UPGRADED",
	ChangeAborted:        "ABORTED",
	ChangeBreakerOpened:  "BREAKER_OPENED",
	ChangeBreakerClosed:  "BREAKER_CLOSED",
	ChangeDeviceOnline:   "DEVICE_ONLINE",
	ChangeDeviceOffline:  "DEVICE_OFFLINE",
	ChangeDeviceMoved:    "DEVICE_MOVED",
	ChangeDeviceCommand:  "DEVICE_COMMAND",
	ChangeDeviceRejected: "DEVICE_REJECTED",
	ChangeDeviceNotice:   "DEVICE_NOTICE",
	ChangeRetried:        "RETRIED",
}

func (k ChangeKind) String() string {
	if int(k) < len(changeKindNames) {
		return changeKindNames[k]
	}
	return "UNKNOWN"
}

// Change is one entry of the changelog. The core fills everything but Seq
// (assigned by the store inside the committing transaction) and Actor
// (stamped by the engine from the caller's identity).
type Change struct {
	// Seq is the gap-free changelog sequence number, from 1.
	Seq uint64
	// At is the clock value of the operation.
	At time.Time
	// Actor is who caused the change: a worker, a client, or "dfsmr".
	Actor string
	// Kind says what happened.
	Kind ChangeKind
	// Instance is the instance id; empty for machine and breaker changes.
	Instance string
	// Machine and Version name the machine (version after the change).
	Machine string
	Version uint32
	// FromVersion is the version before an UPGRADED or ABORTED change;
	// zero for every other kind.
	FromVersion uint32
	// Transition is the transition name taken, if any.
	Transition string
	// FromNode/ToNode and FromStatus/ToStatus describe the move.
	FromNode   string
	ToNode     string
	FromStatus Status
	ToStatus   Status
	// Token is the fencing token involved (the new one for a lease).
	Token uint64
	// Attempt is the attempt number after the change.
	Attempt int32
	// DueAt is the due time after the change (WAITING) or the lease expiry.
	DueAt time.Time
	// Params are the params merged in by this change.
	Params map[string]string
	// Reason is free text (cancel reason, failure cause).
	Reason string
	// Device is the device of DEVICE_* changes and of job transitions a
	// device's round records; empty otherwise.
	Device string
	// Worker is the worker name of the lease, for LEASED (the name the
	// Acquire gave), TRANSITIONED by a worker, HEARTBEAT and RELINQUISHED
	// changes: a label the worker chose, recorded beside the actor.
	Worker string
}
