package fsm

import (
	"errors"
	"maps"
	"testing"
	"time"
)

// failed runs testMachine's instance out of attempts in node a.
func failed(t *testing.T, m *Machine) Instance {
	t.Helper()
	in := mustStart(t, m)
	for in.Node != NodeFailed {
		in, _ = mustApply(t, m, in, Acquire{Worker: "w"}, t0)
		in, _ = mustApply(t, m, in, Report{Token: in.Lease.Token, Transition: "error"}, t0)
		if in.Status == StatusWaiting {
			in, _ = mustApply(t, m, in, Wake{}, in.DueAt)
		}
	}
	return in
}

func TestRetryFailed(t *testing.T) {
	m := testMachine()
	now := t0.Add(time.Hour)
	canceled, _ := mustApply(t, m, mustStart(t, m), Cancel{}, t0)
	done := mustStart(t, m)
	done, _ = mustApply(t, m, done, Acquire{Worker: "w"}, t0)
	done, _ = mustApply(t, m, done, Report{Token: done.Lease.Token, Transition: "give_up"}, t0)
	job := testMachine()
	job.Kind = KindJob
	tests := []struct {
		name string
		m    *Machine
		in   Instance
		node string
		err  error
	}{
		{"failed in a", m, failed(t, m), "a", nil},
		{"failed, other working node", m, failed(t, m), "b", nil},
		{"ready", m, mustStart(t, m), "a", ErrNotRetryable},
		{"leased", m, leased(t, m), "a", ErrNotRetryable},
		{"cancelled", m, canceled, "a", ErrNotRetryable},
		{"final in a machine node", m, done, "a", ErrNotRetryable},
		{"failed node unknown", m, failed(t, m), "gone", ErrNotRetryable},
		{"failed node final", m, failed(t, m), "done", ErrNotRetryable},
		{"failed node empty", m, failed(t, m), "", ErrNotRetryable},
		{"job machine", job, failed(t, m), "a", ErrNotRetryable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.in.Clone()
			out, ch, err := RetryFailed(tt.m, tt.in, RetryArgs{Node: tt.node, Reason: "fixed"}, now)
			if !maps.Equal(before.Params, tt.in.Params) || before.Node != tt.in.Node {
				t.Fatalf("RetryFailed modified its input")
			}
			if tt.err != nil {
				if !errors.Is(err, tt.err) || len(ch) != 0 {
					t.Fatalf("err %v changes %v, want %v and none", err, ch, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out.Node != tt.node || out.Status != StatusReady || out.Attempt != 1 || !out.DueAt.Equal(now) ||
				out.Lease != (Lease{}) || out.Token != tt.in.Token || out.Rev != tt.in.Rev+1 || !out.UpdatedAt.Equal(now) ||
				!maps.Equal(out.Params, tt.in.Params) || out.Priority != tt.in.Priority {
				t.Fatalf("retried instance %+v from %+v", out, tt.in)
			}
			want := Change{At: now, Kind: ChangeRetried, Instance: out.ID, Machine: m.ID, Version: m.Version,
				Transition: TransitionRetry, FromNode: NodeFailed, ToNode: tt.node, FromStatus: StatusFinal,
				ToStatus: StatusReady, Token: out.Token, Attempt: 1, Reason: "fixed"}
			if len(ch) != 1 || !equalChange(ch[0], want) {
				t.Fatalf("changes %+v, want [%+v]", ch, want)
			}
			// The retried instance runs again: it can be leased and fail
			// anew, through all its attempts.
			again, _ := mustApply(t, m, out, Acquire{Worker: "w"}, now)
			if again.Status != StatusLeased || again.Token != out.Token+1 {
				t.Fatalf("lease after retry: %+v", again)
			}
		})
	}
}

func equalChange(a, b Change) bool {
	return a.At.Equal(b.At) && a.Kind == b.Kind && a.Instance == b.Instance && a.Machine == b.Machine &&
		a.Version == b.Version && a.Transition == b.Transition && a.FromNode == b.FromNode && a.ToNode == b.ToNode &&
		a.FromStatus == b.FromStatus && a.ToStatus == b.ToStatus && a.Token == b.Token && a.Attempt == b.Attempt &&
		a.DueAt.Equal(b.DueAt) && a.Reason == b.Reason && len(a.Params) == 0
}
