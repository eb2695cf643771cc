// Package backoff computes how long to wait before a retry. It is the one
// backoff of dfsmr: the core's retry policies (server/fsm), the client
// Worker's call retries and the report demo's serial loop all use it. It
// lives with the client so that the SDK imports nothing of the server;
// the server's core imports it instead, as it would a library.
//
// It is pure and imports only the standard library: the caller passes the
// retry number and the random draw for the jitter, so the result is a
// function of its arguments alone. That is what lets the pure core import
// it (the one leaf package server/fsm may import) and keeps the simulator
// deterministic.
package backoff

import (
	"math"
	"time"
)

// Growth is how the delay grows from one retry to the next.
type Growth uint8

// Growths. The zero value grows like Fixed.
const (
	// Fixed waits Initial before every retry.
	Fixed Growth = iota + 1
	// Linear waits Initial times the retry number.
	Linear
	// Exponential doubles the wait with every retry, from Initial.
	Exponential
)

// Policy says how long to wait before each retry.
type Policy struct {
	// Growth is how the delay grows; zero is Fixed.
	Growth Growth
	// Initial is the delay before the first retry. Zero or negative: no
	// delay at all, whatever the other fields say.
	Initial time.Duration
	// Max caps the delay, after the jitter; zero means no cap.
	Max time.Duration
	// Jitter spreads each delay uniformly by up to this fraction (0..1)
	// either way, so that many retries do not line up; zero means none.
	Jitter float64
}

// Delay returns how long to wait before retry number retry (1 for the
// first retry; below 1 there is no wait). u is a uniform random draw in
// [0, 1), supplied by the caller; it only matters when Jitter is non-zero
// (u = 0.5 gives the delay without jitter). The result is never negative
// and saturates instead of overflowing.
func (p Policy) Delay(retry int64, u float64) time.Duration {
	if retry < 1 || p.Initial <= 0 {
		return 0
	}
	var d float64
	switch p.Growth {
	case Linear:
		d = float64(p.Initial) * float64(retry)
	case Exponential:
		d = float64(p.Initial) * math.Pow(2, float64(retry-1))
	default:
		d = float64(p.Initial)
	}
	if p.Jitter > 0 {
		d *= 1 + p.Jitter*(2*u-1)
	}
	if p.Max > 0 && d > float64(p.Max) {
		d = float64(p.Max)
	}
	if d >= float64(math.MaxInt64) {
		return time.Duration(math.MaxInt64)
	}
	if d < 0 || math.IsNaN(d) {
		return 0
	}
	return time.Duration(d)
}
