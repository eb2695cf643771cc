package fsm

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// record feeds b the outcomes of a pattern: 'S' a success, 'F' a failure;
// other characters are ignored.
func record(b Breaker, pattern string, now time.Time) (Breaker, []BreakerState) {
	return recordWith(BreakerPolicy{}, b, pattern, now)
}

// recordWith is record under policy p.
func recordWith(p BreakerPolicy, b Breaker, pattern string, now time.Time) (Breaker, []BreakerState) {
	var flips []BreakerState
	for _, r := range pattern {
		if r != 'S' && r != 'F' {
			continue
		}
		var changed bool
		b, changed = b.Record(p, r == 'S', now)
		if changed {
			flips = append(flips, b.State())
		}
		if !b.Valid() {
			panic("Record made an invalid breaker")
		}
	}
	return b, flips
}

func TestBreakerRecord(t *testing.T) {
	cases := []struct {
		name    string
		pattern string
		flips   []BreakerState
		open    bool
		share   float64
		count   uint8
	}{
		{"empty", "", nil, false, 0, 0},
		{"few failures are no trend", strings.Repeat("F", BreakerMinOutcomes-1), nil, false, 1, BreakerMinOutcomes - 1},
		{"opens at the minimum", strings.Repeat("F", BreakerMinOutcomes), []BreakerState{BreakerOpen}, true, 1, BreakerMinOutcomes},
		{"half fails: opens", strings.Repeat("SF", BreakerMinOutcomes/2), []BreakerState{BreakerOpen}, true, 0.5, BreakerMinOutcomes},
		{"below the share: stays closed", strings.Repeat("SSF", 30), nil, false, float64(17) / 50, BreakerWindow},
		{"the window forgets old failures", strings.Repeat("F", 9) + strings.Repeat("S", 60) + strings.Repeat("F", 10), nil, false, 0.2, BreakerWindow},
		{"open stays open on failures", strings.Repeat("F", 40), []BreakerState{BreakerOpen}, true, 1, 40},
		{"a streak closes and resets", strings.Repeat("F", 20) + strings.Repeat("S", BreakerCloseStreak), []BreakerState{BreakerOpen, BreakerClosed}, false, 0, 0},
		{"a broken streak does not close", strings.Repeat("F", 20) + "SSSSF", []BreakerState{BreakerOpen}, true, float64(21) / 25, 25},
		{"reopens only after a fresh minimum", strings.Repeat("F", 20) + strings.Repeat("S", BreakerCloseStreak) + strings.Repeat("F", BreakerMinOutcomes),
			[]BreakerState{BreakerOpen, BreakerClosed, BreakerOpen}, true, 1, BreakerMinOutcomes},
		{"alternating keeps it open", strings.Repeat("F", 20) + strings.Repeat("SF", 40), []BreakerState{BreakerOpen}, true, 0.5, BreakerWindow},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, flips := record(Breaker{}, c.pattern, t0)
			if len(flips) != len(c.flips) {
				t.Fatalf("flips = %v, want %v", flips, c.flips)
			}
			for i := range flips {
				if flips[i] != c.flips[i] {
					t.Fatalf("flips = %v, want %v", flips, c.flips)
				}
			}
			if b.Open != c.open || b.Count != c.count || b.FailureShare() != c.share {
				t.Fatalf("breaker %+v (share %v), want open %v count %d share %v", b, b.FailureShare(), c.open, c.count, c.share)
			}
			if b.Open != !b.OpenedAt.IsZero() {
				t.Fatalf("open %v with OpenedAt %v", b.Open, b.OpenedAt)
			}
		})
	}
}

func TestBreakerCloseByShare(t *testing.T) {
	// Opened by failures, then a third of attempts failing keeps it open;
	// one in five failing never makes a streak of BreakerCloseStreak but
	// dilutes the window below BreakerCloseShare, which closes it.
	b, _ := record(Breaker{}, strings.Repeat("F", 20), t0)
	b, flips := record(b, strings.Repeat("SSF", 30), t0)
	if len(flips) != 0 || !b.Open {
		t.Fatalf("a third failing: flips %v, breaker %+v; want still open", flips, b)
	}
	b, flips = record(b, strings.Repeat("SSSSF", 20), t0)
	if len(flips) != 1 || flips[0] != BreakerClosed || b.Open {
		t.Fatalf("a fifth failing: flips %v, breaker %+v; want closed once", flips, b)
	}
}

func TestBreakerExtraDelay(t *testing.T) {
	if d := (Breaker{}).ExtraDelay(BreakerPolicy{}); d != 0 {
		t.Fatalf("closed breaker delays %v", d)
	}
	b, _ := record(Breaker{}, strings.Repeat("F", 20), t0)
	if d := b.ExtraDelay(BreakerPolicy{}); d != BreakerDelay || b.State() != BreakerOpen || !b.OpenedAt.Equal(t0) {
		t.Fatalf("open breaker %+v delays %v", b, d)
	}
}

func TestBreakerValid(t *testing.T) {
	for name, b := range map[string]Breaker{
		"count past window":   {Count: MaxBreakerWindow + 1},
		"failures past count": {Count: 2, Failures: 0b100},
		"streak past max":     {Streak: MaxBreakerCloseStreak + 1},
		"open without time":   {Open: true},
		"time while closed":   {OpenedAt: t0},
	} {
		if b.Valid() {
			t.Errorf("%s: %+v is valid", name, b)
		}
	}
	if !(Breaker{}).Valid() {
		t.Error("zero breaker invalid")
	}
}

func TestBreakerChange(t *testing.T) {
	b, _ := record(Breaker{}, strings.Repeat("F", 20), t0)
	c := BreakerChange("m", 3, BreakerPolicy{}, b, Breaker{}, t0)
	if c.Kind != ChangeBreakerOpened || c.Machine != "m" || c.Version != 3 || c.Instance != "" || !strings.Contains(c.Reason, "100%") {
		t.Fatalf("opened change %+v", c)
	}
	c = BreakerChange("m", 3, BreakerPolicy{}, Breaker{}, b, t0)
	if c.Kind != ChangeBreakerClosed || c.Reason == "" {
		t.Fatalf("closed change %+v", c)
	}
}

// TestExtraDelayOnlyDelaysRetries: the breaker's extra delay is added to
// the backoff of a retried attempt, and to nothing else.
func TestExtraDelayOnlyDelaysRetries(t *testing.T) {
	const extra = 30 * time.Second
	m := testMachine() // node a: max 3 attempts, exponential from 1s
	cases := []struct {
		name   string
		ev     func(in Instance) Event
		now    func(in Instance) time.Time
		status Status
		due    time.Duration // after now
	}{
		{"error edge", func(in Instance) Event {
			return Report{Token: in.Lease.Token, Transition: "error", ExtraDelay: extra}
		}, nil, StatusWaiting, time.Second + extra},
		{"lease timeout", func(in Instance) Event { return Expire{Token: in.Lease.Token, ExtraDelay: extra} },
			func(in Instance) time.Time { return in.Lease.ExpiresAt }, StatusWaiting, time.Second + extra},
		{"success", func(in Instance) Event {
			return Report{Token: in.Lease.Token, Transition: "ok", ExtraDelay: extra}
		}, nil, StatusReady, 0},
		{"delayed self-transition", func(in Instance) Event {
			return Report{Token: in.Lease.Token, Transition: "throttled", ExtraDelay: extra}
		}, nil, StatusWaiting, 30 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := leased(t, m)
			now := t0
			if c.now != nil {
				now = c.now(in)
			}
			out, _ := mustApply(t, m, in, c.ev(in), now)
			if out.Status != c.status || !out.DueAt.Equal(now.Add(c.due)) {
				t.Fatalf("%s: %s due %v, want %s due %v", c.name, out.Status, out.DueAt, c.status, now.Add(c.due))
			}
		})
	}

	t.Run("exhausted", func(t *testing.T) {
		in := leased(t, m)
		in.Attempt = m.Nodes["a"].Retry.MaxAttempts
		out, _ := mustApply(t, m, in, Report{Token: in.Lease.Token, Transition: "error", ExtraDelay: extra}, t0)
		if out.Node != NodeFailed || out.Status != StatusFinal || !out.DueAt.IsZero() {
			t.Fatalf("exhausted with extra delay: %+v", out)
		}
	})
}

// TestBreakerPolicy runs patterns under custom policies: every threshold
// is the policy's, not the defaults.
func TestBreakerPolicy(t *testing.T) {
	quick := BreakerPolicy{Window: 10, MinOutcomes: 5, OpenShare: 0.8, CloseShare: 0.1, CloseStreak: 2, Delay: time.Second}
	cases := []struct {
		name    string
		p       BreakerPolicy
		pattern string
		flips   []BreakerState
		open    bool
		count   uint8
	}{
		{"opens at its own minimum", quick, "FFFFF", []BreakerState{BreakerOpen}, true, 5},
		{"below its open share", quick, "SSFFFFFF", nil, false, 8}, // 75% < 80%
		{"its window forgets", quick, "FFF" + strings.Repeat("S", 10) + "FFFF", nil, false, 10},
		{"its streak closes", quick, "FFFFF" + "SS", []BreakerState{BreakerOpen, BreakerClosed}, false, 0},
		{"a window of 64", BreakerPolicy{Window: 64, MinOutcomes: 64, OpenShare: 1, CloseStreak: 1}, strings.Repeat("F", 64), []BreakerState{BreakerOpen}, true, 64},
		{"off never opens", BreakerPolicy{Off: true}, strings.Repeat("F", 100), nil, false, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, flips := recordWith(c.p, Breaker{}, c.pattern, t0)
			if !slices.Equal(flips, c.flips) || b.Open != c.open || b.Count != c.count {
				t.Fatalf("breaker %+v flips %v; want open %v count %d flips %v", b, flips, c.open, c.count, c.flips)
			}
		})
	}
	b, _ := recordWith(quick, Breaker{}, "FFFFF", t0)
	if d := b.ExtraDelay(quick); d != time.Second {
		t.Fatalf("open under a 1s policy: extra delay %v", d)
	}
	// A later version turns it off: no delay, and the next outcome closes it.
	off := BreakerPolicy{Off: true}
	if d := b.ExtraDelay(off); d != 0 {
		t.Fatalf("open but off: extra delay %v", d)
	}
	if nb, changed := b.Record(off, false, t0); changed != true || nb != (Breaker{}) {
		t.Fatalf("off closes an open breaker: %+v changed %v", nb, changed)
	}
	// A later version shrinks the window: the old window is cut to it.
	full, _ := record(Breaker{}, strings.Repeat("S", 30)+strings.Repeat("F", 10), t0)
	if nb, _ := full.Record(BreakerPolicy{Window: 4, MinOutcomes: 4, OpenShare: 1, CloseStreak: 1}, false, t0); !nb.Valid() || nb.Count != 4 || !nb.Open {
		t.Fatalf("a window of 40 under a policy of 4: %+v", nb)
	}
	if !(BreakerPolicy{}).IsDefault() || !DefaultBreakerPolicy().IsDefault() || quick.IsDefault() {
		t.Fatal("IsDefault")
	}
}
