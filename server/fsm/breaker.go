package fsm

import (
	"fmt"
	"math/bits"
	"time"
)

// Circuit breaker defaults: a machine whose definition has no breaker
// block gets DefaultBreakerPolicy, made of these. A machine's breaker (one
// for all its versions) watches the outcomes of its recent attempts. When
// at least MinOutcomes of the last Window outcomes are known and the share
// of failures among them reaches OpenShare, it opens: every retry of the
// machine then waits Delay on top of its node's backoff. It closes again
// after CloseStreak successes in a row, or when the failure share falls
// below CloseShare; closing starts a fresh window, so it takes MinOutcomes
// new outcomes to open again.
//
// A failed attempt is an error edge (a transition back to the same node
// without a delay) or a lease timeout; a success is a transition that leaves
// the node. Signals, cancels and delayed self-transitions are not outcomes.
const (
	// BreakerWindow is how many recent outcomes the breaker keeps.
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

// Limits of a breaker policy.
const (
	// MaxBreakerWindow is the largest window: the window is a 64-bit ring.
	MaxBreakerWindow = 64
	// MaxBreakerCloseStreak is the longest closing streak a policy may ask
	// for.
	MaxBreakerCloseStreak = 64
)

// BreakerPolicy is a machine's circuit breaker settings (the breaker block
// of its definition). The zero value means DefaultBreakerPolicy, so that a
// Machine built without the compiler behaves like a definition without a
// breaker block.
type BreakerPolicy struct {
	// Off disables the breaker: it never opens, and an open one closes at
	// the next outcome. The other fields are then ignored.
	Off bool
	// Window is how many recent outcomes are kept, 1 to MaxBreakerWindow.
	Window uint8
	// MinOutcomes is how many outcomes the window needs before the breaker
	// may open, 1 to Window.
	MinOutcomes uint8
	// OpenShare is the failure share at which the breaker opens, in (0, 1].
	OpenShare float64
	// CloseShare is the failure share below which an open breaker closes,
	// in [0, OpenShare].
	CloseShare float64
	// CloseStreak is how many successes in a row close an open breaker, 1
	// to MaxBreakerCloseStreak.
	CloseStreak uint8
	// Delay is what every retry waits on top of its node's backoff while
	// the breaker is open, 0 to MaxDelay.
	Delay time.Duration
}

// DefaultBreakerPolicy returns the policy of a machine without a breaker
// block: the Breaker* constants.
func DefaultBreakerPolicy() BreakerPolicy {
	return BreakerPolicy{
		Window:      BreakerWindow,
		MinOutcomes: BreakerMinOutcomes,
		OpenShare:   BreakerOpenShare,
		CloseShare:  BreakerCloseShare,
		CloseStreak: BreakerCloseStreak,
		Delay:       BreakerDelay,
	}
}

// orDefault returns p, or DefaultBreakerPolicy when p is the zero value.
func (p BreakerPolicy) orDefault() BreakerPolicy {
	if p == (BreakerPolicy{}) {
		return DefaultBreakerPolicy()
	}
	return p
}

// IsDefault says whether p behaves as DefaultBreakerPolicy.
func (p BreakerPolicy) IsDefault() bool { return p.orDefault() == DefaultBreakerPolicy() }

// BreakerState says whether a breaker slows retries.
type BreakerState uint8

// Breaker states.
const (
	BreakerUnspecified BreakerState = iota
	// BreakerClosed: retries follow their node's policy alone.
	BreakerClosed
	// BreakerOpen: retries wait the policy's Delay more.
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
	// Count is how many outcomes the window holds, at most the policy's
	// Window (and MaxBreakerWindow).
	Count uint8
	// Streak counts the successes in a row, at most the policy's
	// CloseStreak (and MaxBreakerCloseStreak).
	Streak uint8
	// OpenedAt is when the breaker last opened; zero while closed.
	OpenedAt time.Time
}

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

// ExtraDelay is what a retry waits on top of its node's backoff under
// policy p: its Delay while open, zero while closed or when p is off.
func (b Breaker) ExtraDelay(p BreakerPolicy) time.Duration {
	p = p.orDefault()
	if b.Open && !p.Off {
		return p.Delay
	}
	return 0
}

// Record adds one attempt outcome at now under policy p. changed says
// whether the breaker opened or closed.
//
// The breaker outlives the machine version whose policy it last followed:
// a window longer than p's is cut to p's most recent outcomes first.
func (b Breaker) Record(p BreakerPolicy, success bool, now time.Time) (next Breaker, changed bool) {
	p = p.orDefault()
	if p.Off {
		return Breaker{}, b.Open
	}
	mask := uint64(1)<<p.Window - 1 // all ones for a window of 64
	next = b
	next.Count = min(b.Count, p.Window)
	next.Streak = min(b.Streak, p.CloseStreak)
	next.Failures = (b.Failures << 1) & mask
	if !success {
		next.Failures |= 1
		next.Streak = 0
	} else if next.Streak < p.CloseStreak {
		next.Streak++
	}
	if next.Count < p.Window {
		next.Count++
	}
	share := next.FailureShare()
	switch {
	case !b.Open && next.Count >= p.MinOutcomes && share >= p.OpenShare:
		next.Open, next.OpenedAt = true, now
		return next, true
	case b.Open && success && (next.Streak >= p.CloseStreak || share < p.CloseShare):
		// A fresh window: the failures that opened the breaker must not
		// reopen it at the next failure.
		return Breaker{}, true
	}
	return next, false
}

// Valid says whether b is a state Record can produce under some policy; a
// decoder uses it to reject corrupt records.
func (b Breaker) Valid() bool {
	return b.Count <= MaxBreakerWindow && b.Streak <= MaxBreakerCloseStreak &&
		b.Failures>>b.Count == 0 && b.Open == !b.OpenedAt.IsZero()
}

// BreakerChange is the changelog entry recording that the breaker of
// machine flipped from prev to b's state at now, on an attempt of an
// instance running version, whose policy is p.
func BreakerChange(machine string, version uint32, p BreakerPolicy, b, prev Breaker, now time.Time) Change {
	c := Change{At: now, Kind: ChangeBreakerClosed, Machine: machine, Version: version}
	switch {
	case b.Open:
		c.Kind = ChangeBreakerOpened
		c.Reason = fmt.Sprintf("%d of the last %d attempts failed (%.0f%%): retries wait %s more",
			bits.OnesCount64(b.Failures), b.Count, 100*b.FailureShare(), p.orDefault().Delay)
	case p.orDefault().Off:
		c.Reason = fmt.Sprintf("the breaker is off in version %d; open since %s",
			version, prev.OpenedAt.UTC().Format(time.RFC3339))
	default:
		c.Reason = fmt.Sprintf("attempts succeed again (%d in a row, %.0f%% of the last %d failed); open since %s",
			prev.Streak+1, 100*prev.FailureShare(), prev.Count, prev.OpenedAt.UTC().Format(time.RFC3339))
	}
	return c
}
