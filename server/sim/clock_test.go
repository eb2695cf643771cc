package sim

import (
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
)

// TestClockStepsRun: the server's clock steps back (by small and large
// steps) and forward during the runs, and the runs stay correct: nothing
// fires before its time on the server's clock, and every instance still
// finishes within the liveness bound stretched by the steps back.
func TestClockStepsRun(t *testing.T) {
	var back, ahead int
	for seed := uint64(1); seed <= 12 && (back == 0 || ahead == 0); seed++ {
		var trace strings.Builder
		res, err := Run(Config{Seed: seed, Ticks: 2000, Dir: t.TempDir(), Trace: &trace})
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(trace.String()) {
			switch {
			case strings.Contains(line, "server clock steps -"):
				back++
			case strings.Contains(line, "server clock steps "):
				ahead++
			}
		}
		if got := back + ahead; got < res.ClockSteps {
			t.Fatalf("seed %d: %d steps counted, %d traced so far", seed, res.ClockSteps, got)
		}
	}
	if back == 0 || ahead == 0 {
		t.Fatalf("%d steps back and %d ahead in 12 seeds: the fault is not exercised", back, ahead)
	}
}

// TestCheckerCatchesEarlyFiring: the checker refuses a wake before the
// due time and a lease timeout before the expiry, on the server's clock.
func TestCheckerCatchesEarlyFiring(t *testing.T) {
	due := time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name   string
		status fsm.Status
		change fsm.Change
		want   string
	}{
		{"wake", fsm.StatusWaiting, fsm.Change{Kind: fsm.ChangeWoken, ToStatus: fsm.StatusReady, Token: 1}, "before its due time"},
		{"timeout", fsm.StatusLeased, fsm.Change{Kind: fsm.ChangeTimedOut, ToStatus: fsm.StatusWaiting,
			Transition: fsm.TransitionTimeout, Token: 1}, "before its expiry"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, early := range []bool{false, true} {
				s := &sim{trace: sha256.New()}
				s.chk.init()
				s.chk.inst["i"] = &shadow{node: "a", status: tt.status, token: 1, version: 1, due: due}
				c := tt.change
				c.Instance, c.Machine, c.Version, c.FromNode, c.ToNode, c.FromStatus, c.At = "i", machineID, 1, "a", "a", tt.status, due
				if early {
					c.At = due.Add(-time.Millisecond)
				}
				err := func() (err error) {
					defer func() {
						if p := recover(); p != nil {
							err = p.(simFailure).err
						}
					}()
					s.follow(c)
					return nil
				}()
				switch {
				case early && (err == nil || !strings.Contains(err.Error(), tt.want)):
					t.Fatalf("early %s: %v, want %q", tt.name, err, tt.want)
				case !early && err != nil:
					t.Fatalf("%s on time: %v", tt.name, err)
				}
			}
		})
	}
}
