package clock

import (
	"testing"
	"time"
)

func TestFakeTimers(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := NewFake(start)
	a, b := f.NewTimer(2*time.Second), f.NewTimer(time.Second)
	f.Advance(time.Second)
	select {
	case got := <-b.C():
		if !got.Equal(start.Add(time.Second)) {
			t.Fatalf("b fired at %v", got)
		}
	default:
		t.Fatal("b did not fire")
	}
	select {
	case <-a.C():
		t.Fatal("a fired early")
	default:
	}
	if !a.Stop() || a.Stop() {
		t.Fatal("Stop must report true once")
	}
	f.Advance(time.Hour)
	select {
	case <-a.C():
		t.Fatal("stopped timer fired")
	default:
	}
	a.Reset(0)
	if _, ok := <-a.C(); !ok || f.Timers() != 0 {
		t.Fatal("Reset(0) must fire at once")
	}
	f.Set(start) // never backwards
	if !f.Now().Equal(start.Add(time.Hour + time.Second)) {
		t.Fatalf("Set went backwards: %v", f.Now())
	}
}
