// Package clock is the one source of time for dfsmr's imperative shell. The
// real clock reads the wall clock; the fake clock moves only when a test or
// the simulator says so, which makes timeouts and delays testable without
// sleeping.
package clock

import (
	"sort"
	"sync"
	"time"
)

// Clock tells the time and makes timers.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTimer returns a timer that delivers the time on C once d has
	// passed.
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer that dfsmr uses.
type Timer interface {
	// C delivers the time when the timer fires.
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it did.
	Stop() bool
	// Reset makes a stopped or fired timer fire after d.
	Reset(d time.Duration)
	// ResetAt makes a stopped or fired timer fire at deadline. Unlike
	// Reset(deadline.Sub(Now())), it cannot miss a clock change between
	// reading the time and arming the timer.
	ResetAt(deadline time.Time)
}

// Real is the wall clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// NewTimer wraps time.NewTimer.
func (Real) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time   { return r.t.C }
func (r realTimer) Stop() bool            { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) { r.t.Reset(d) }
func (r realTimer) ResetAt(t time.Time)   { r.t.Reset(time.Until(t)) }

// Fake is a manually driven clock. Timers fire, in due order, when Set or
// Advance moves the time to or past their deadline.
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

// NewFake returns a fake clock reading start.
func NewFake(start time.Time) *Fake { return &Fake{now: start} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Advance moves the time forward by d and fires the timers that came due.
func (f *Fake) Advance(d time.Duration) { f.Set(f.Now().Add(d)) }

// Set moves the time to t (never backwards) and fires the timers that came
// due, earliest first.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	if t.After(f.now) {
		f.now = t
	}
	now := f.now
	var due []*fakeTimer
	keep := f.timers[:0]
	for _, tm := range f.timers {
		if !tm.at.After(now) {
			due = append(due, tm)
		} else {
			keep = append(keep, tm)
		}
	}
	f.timers = keep
	f.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, tm := range due {
		select {
		case tm.c <- now:
		default:
		}
	}
}

// Timers returns how many timers are pending.
func (f *Fake) Timers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// NewTimer returns a timer driven by the fake time.
func (f *Fake) NewTimer(d time.Duration) Timer {
	tm := &fakeTimer{f: f, c: make(chan time.Time, 1)}
	tm.Reset(d)
	return tm
}

type fakeTimer struct {
	f  *Fake
	c  chan time.Time
	at time.Time
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	for i, tm := range t.f.timers {
		if tm == t {
			t.f.timers = append(t.f.timers[:i], t.f.timers[i+1:]...)
			return true
		}
	}
	return false
}

func (t *fakeTimer) Reset(d time.Duration) {
	t.f.mu.Lock()
	at := t.f.now.Add(d)
	t.f.mu.Unlock()
	t.ResetAt(at)
}

func (t *fakeTimer) ResetAt(at time.Time) {
	t.Stop()
	t.f.mu.Lock()
	t.at = at
	fire := !at.After(t.f.now)
	if !fire {
		t.f.timers = append(t.f.timers, t)
	}
	now := t.f.now
	t.f.mu.Unlock()
	if fire {
		select {
		case t.c <- now:
		default:
		}
	}
}
