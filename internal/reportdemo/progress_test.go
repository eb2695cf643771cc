package reportdemo

import (
	"strings"
	"testing"
	"time"
)

// TestProgressLine checks the labelled progress line: the bar, the counts,
// and the hint while the last items wait out a backoff.
func TestProgressLine(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := progressSnapshot{Completed: 6, Failed: 1, Retries: 4, Throttles: 2}
	got := progressLine(labelWorkers, 10, s, 1500*time.Millisecond, now, 10)
	if want := "dfsmr workers [#######...] 6/10 completed, 1 failed, 4 retries, 2 throttled, 1.5s"; !strings.HasPrefix(got, want) {
		t.Fatalf("line = %q, want it to start like %q", got, want)
	}
	if strings.Contains(got, "waiting") {
		t.Fatalf("a hint with nothing waiting: %q", got)
	}
	s.Waiting, s.NextDue = 1, now.Add(12*time.Second)
	if got := progressLine(labelWorkers, 10, s, time.Second, now, 0); !strings.HasSuffix(got, "(1 waiting out a backoff)") {
		t.Fatalf("some waiting: %q", got)
	}
	s.Waiting = 3
	got = progressLine(labelSerial, 10, s, time.Second, now, 0)
	if !strings.HasPrefix(got, "serial loop   6/10") || !strings.HasSuffix(got, "(the last 3 waiting out a backoff, next due in 12s)") {
		t.Fatalf("the last waiting: %q", got)
	}
}

// TestProgressCountsWaiting checks that the counts follow items into and
// out of WAITING and report the earliest due time.
func TestProgressCountsWaiting(t *testing.T) {
	var p progressCounts
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p.setWaiting("a", true, t0.Add(time.Minute))
	p.setWaiting("b", true, t0.Add(time.Second))
	p.setWaiting("c", false, time.Time{})
	if s := p.snapshot(); s.Waiting != 2 || !s.NextDue.Equal(t0.Add(time.Second)) {
		t.Fatalf("snapshot = %+v", s)
	}
	p.setWaiting("b", false, time.Time{})
	if s := p.snapshot(); s.Waiting != 1 || !s.NextDue.Equal(t0.Add(time.Minute)) {
		t.Fatalf("snapshot after b woke = %+v", s)
	}
}
