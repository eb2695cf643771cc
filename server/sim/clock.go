package sim

import (
	"time"

	"github.com/dfsmr/dfsmr/internal/clock"
)

// serverClock is the server's clock in the simulation: the simulated real
// time (the fake clock, which only goes forward) plus an offset that clock
// steps move, back or forward, as an NTP correction or an operator's date
// command moves a host's wall clock. The engine reads only this clock; the
// simulator keeps real time on the fake one.
type serverClock struct {
	real   *clock.Fake
	offset time.Duration
}

var _ clock.Clock = (*serverClock)(nil)

func (c *serverClock) Now() time.Time { return c.real.Now().Add(c.offset) }

func (c *serverClock) NewTimer(d time.Duration) clock.Timer {
	return serverTimer{Timer: c.real.NewTimer(d), c: c}
}

// step moves the server's clock by d (negative: back) against real time.
func (c *serverClock) step(d time.Duration) { c.offset += d }

// serverTimer arms deadlines read on the server's clock on the fake one.
type serverTimer struct {
	clock.Timer
	c *serverClock
}

func (t serverTimer) ResetAt(deadline time.Time) { t.Timer.ResetAt(deadline.Add(-t.c.offset)) }

// Clock steps: how far the server's clock steps, by kind. Small steps back
// are the corrections NTP makes every day; large ones (many lease timeouts
// and retry delays long) a clock that ran fast, or a mistaken date
// command; steps ahead the same the other way.
const (
	pClockStep      = 0.002 // the server's clock steps this tick
	smallStepBack   = 5 * time.Second
	largeStepBack   = 10 * time.Minute
	largeStepAhead  = 10 * time.Minute
	maxClockOffsets = 3 // kinds: small back, large back, ahead
)

// stepClock steps the server's clock: a small or large step back, or a
// step forward, each drawn up to its bound.
func (s *sim) stepClock() {
	var d time.Duration
	switch s.rng.IntN(maxClockOffsets) {
	case 0:
		d = -time.Duration(1 + s.rng.Int64N(int64(smallStepBack)))
	case 1:
		d = -time.Duration(1 + s.rng.Int64N(int64(largeStepBack)))
	default:
		d = time.Duration(1 + s.rng.Int64N(int64(largeStepAhead)))
	}
	s.srvClk.step(d)
	if d < 0 {
		s.stepsBack -= d
	}
	s.res.ClockSteps++
	s.tracef("server clock steps %v (offset %v)", d, s.srvClk.offset)
}
