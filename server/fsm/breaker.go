package fsm

import (
	"fmt"
	"math/bits"
	"time"
)

// Circuit breaker defaults. A machine's breaker (one for all its versions)
// watches the outcomes of its recent attempts. When at least
// BreakerMinOutcomes of the last BreakerWindow outcomes are known and the
// share of failures among them reaches BreakerOpenShare, it opens: every
// retry of the machine then waits BreakerDelay on top of its node's
// backoff. It closes again after BreakerCloseStreak successes in a row, or
// when the failure share falls below BreakerCloseShare; closing starts a
// fresh window, so it takes BreakerMinOutcomes new outcomes to open again.
//
// A failed attempt is an error edge (a transition back to the same node
// without a delay) or a lease timeout; a success is a transition that leaves
// the node. Signals, cancels and delayed self-transitions are not outcomes.
const (
	// BreakerWindow is how many recent outcomes the breaker keeps (at most
	// 64: the window is a bit ring).
	BreakerWindow = 50
	// BreakerMinOutcomes is how many outcomes the window needs before the
	// breaker may open: a handful of early failures is no trend.
	BreakerMinOutcomes = 20
	// BreakerOpenShare is the failure share at which the breaker opens.
	BreakerOpenShare = 0.5
	// BreakerCloseShare is the failure share below which an open breaker
	// closes.
	BreakerCloseShare = 0.25
	// BreakerCloseStreak is how many successes in a row close an open
	// breaker.
	BreakerCloseStreak = 5
	// BreakerDelay is the extra delay of every retry while the breaker is
	// open.
	BreakerDelay = 30 * time.Second
)

// BreakerState says whether a breaker slows retries.
type BreakerState uint8

// Breaker states.
const (
	BreakerUnspecified BreakerState = iota
	// BreakerClosed: retries follow their node's policy alone.
	BreakerClosed
	// BreakerOpen: retries wait BreakerDelay more.
	BreakerOpen
)

var breakerStateNames = [...]string{
	BreakerUnspecified: "UNSPECIFIED",
	BreakerClosed:      "CLOSED",
	BreakerOpen:        "OPEN",
}

func (s BreakerState) String() string {
	if int(s) < len(breakerStateNames) {
		return breakerStateNames[s]
	}
	return "UNKNOWN"
}

// Breaker is the circuit breaker state of one machine. The zero value is a
// closed breaker with an empty window. It is a value: Record returns a new
// one.
type Breaker struct {
	// Open is true while retries are slowed.
	Open bool
	// Failures is the window as a bit ring: bit i is set when the i-th most
	// recent outcome (bit 0: the last) failed. Bits at or past Count are
	// zero.
	Failures uint64
	// Count is how many outcomes the window holds, at most BreakerWindow.
	Count uint8
	// Streak counts the successes in a row, at most BreakerCloseStreak.
	Streak uint8
	// OpenedAt is when the breaker last opened; zero while closed.
	OpenedAt time.Time
}

const windowMask = 1<<BreakerWindow - 1

// State returns BreakerOpen or BreakerClosed.
func (b Breaker) State() BreakerState {
	if b.Open {
		return BreakerOpen
	}
	return BreakerClosed
}

// FailureShare is the share of failures in the window, 0 when it is empty.
func (b Breaker) FailureShare() float64 {
	if b.Count == 0 {
		return 0
	}
	return float64(bits.OnesCount64(b.Failures)) / float64(b.Count)
}

// ExtraDelay is what a retry waits on top of its node's backoff:
// BreakerDelay while open, zero while closed.
func (b Breaker) ExtraDelay() time.Duration {
	if b.Open {
		return BreakerDelay
	}
	return 0
}

// Record adds one attempt outcome at now. changed says whether the breaker
// opened or closed.
func (b Breaker) Record(success bool, now time.Time) (next Breaker, changed bool) {
	next = b
	next.Failures = (b.Failures << 1) & windowMask
	if !success {
		next.Failures |= 1
		next.Streak = 0
	} else if next.Streak < BreakerCloseStreak {
		next.Streak++
	}
	if next.Count < BreakerWindow {
		next.Count++
	}
	share := next.FailureShare()
	switch {
	case !b.Open && next.Count >= BreakerMinOutcomes && share >= BreakerOpenShare:
		next.Open, next.OpenedAt = true, now
		return next, true
	case b.Open && success && (next.Streak >= BreakerCloseStreak || share < BreakerCloseShare):
		// A fresh window: the failures that opened the breaker must not
		// reopen it at the next failure.
		return Breaker{}, true
	}
	return next, false
}

// Valid says whether b is a state Record can produce; a decoder uses it to
// reject corrupt records.
func (b Breaker) Valid() bool {
	return b.Count <= BreakerWindow && b.Streak <= BreakerCloseStreak &&
		b.Failures>>b.Count == 0 && b.Open == !b.OpenedAt.IsZero()
}

// BreakerChange is the changelog entry recording that the breaker of
// machine flipped from prev to b's state at now, on an attempt of an
// instance running version.
func BreakerChange(machine string, version uint32, b, prev Breaker, now time.Time) Change {
	c := Change{At: now, Kind: ChangeBreakerClosed, Machine: machine, Version: version}
	if b.Open {
		c.Kind = ChangeBreakerOpened
		c.Reason = fmt.Sprintf("%d of the last %d attempts failed (%.0f%%): retries wait %s more",
			bits.OnesCount64(b.Failures), b.Count, 100*b.FailureShare(), BreakerDelay)
	} else {
		c.Reason = fmt.Sprintf("attempts succeed again (%d in a row, %.0f%% of the last %d failed); open since %s",
			prev.Streak+1, 100*prev.FailureShare(), prev.Count, prev.OpenedAt.UTC().Format(time.RFC3339))
	}
	return c
}
