package fsm

import (
	"errors"
	"testing"
	"time"
)

// FuzzApply drives one instance through a random sequence of events. Every
// event must be either applied, keeping the core's invariants (Apply panics
// when one breaks), or refused with a typed error and no state; a FINAL
// instance must never change.
func FuzzApply(f *testing.F) {
	f.Add([]byte{0, 1, 0, 2, 7, 0, 3})
	f.Add([]byte{0, 1, 1, 0, 1, 1, 0, 1, 1, 0})
	f.Add([]byte{6, 0, 5, 7, 3, 2, 4})
	f.Fuzz(func(t *testing.T, ops []byte) {
		m := testMachine()
		in, _, err := Start(m, StartArgs{ID: "i"}, t0)
		if err != nil {
			t.Fatal(err)
		}
		now := t0
		names := []string{"ok", "error", "throttled", "give_up", "poke", "later", "nope"}
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i], ops[i+1]
			now = now.Add(time.Duration(arg%64) * time.Second)
			tok := in.Token
			if arg&0x80 != 0 {
				tok -= uint64(arg & 3) // sometimes a stale token
			}
			name := names[int(arg)%len(names)]
			var ev Event
			switch op % 8 {
			case 0:
				ev = Acquire{Worker: "w", For: time.Duration(arg%16) * time.Second}
			case 1:
				ev = Report{Token: tok, Transition: name, Jitter: float64(arg) / 256}
			case 2:
				ev = Heartbeat{Token: tok, For: time.Second}
			case 3:
				ev = Relinquish{Token: tok}
			case 4:
				ev = Signal{Name: name}
			case 5:
				ev = Cancel{}
			case 6:
				ev = Expire{Token: tok}
			case 7:
				ev = Wake{}
			}
			out, changes, err := Apply(m, in, ev, now)
			if err != nil {
				if !errors.Is(err, ErrIllegalTransition) && !errors.Is(err, ErrStaleLease) && !errors.Is(err, ErrFinal) &&
					!errors.Is(err, ErrNotReady) && !errors.Is(err, ErrNotDue) && !errors.Is(err, ErrInvalid) {
					t.Fatalf("untyped error: %v", err)
				}
				if changes != nil || out.ID != "" {
					t.Fatalf("refused %T returned state", ev)
				}
				continue
			}
			if in.Status == StatusFinal && changes != nil {
				t.Fatalf("final instance changed by %T", ev)
			}
			if out.Token < in.Token {
				t.Fatalf("token went down: %d -> %d", in.Token, out.Token)
			}
			for _, c := range changes {
				if c.Instance != "i" || !c.At.Equal(now) {
					t.Fatalf("bad change %+v", c)
				}
			}
			in = out
		}
	})
}
