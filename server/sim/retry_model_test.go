package sim

import (
	"fmt"
	"testing"

	"github.com/anishathalye/porcupine"
	"github.com/dfsmr/dfsmr/server/fsm"
)

// TestModelRetryWindow: the model answers a retried transition as the
// server does: with the instance as it is, after a new lease too, for the
// last fsm.MaxApplied transitions applied with a request id.
func TestModelRetryWindow(t *testing.T) {
	started := ok("a", stIdle, 0, 1)
	started.Created = true
	// h applies n error edges in node a, each under a new lease and the
	// request id r<i>, then one more lease: the instance is LEASED with
	// token n+1 at attempt n+1 (node a allows 3 attempts, so n <= 2). The
	// model does not tell WAITING from READY: both are idle.
	h := func(n int) ([]porcupine.Operation, int64) {
		ops := []porcupine.Operation{{ClientId: 0, Input: input{Kind: opStart, ID: "i"}, Call: 1, Output: started, Return: 2}}
		at := int64(3)
		add := func(in input, out *output) {
			ops = append(ops, porcupine.Operation{ClientId: 1, Input: in, Call: at, Output: out, Return: at + 1})
			at += 2
		}
		for i := 1; i <= n; i++ {
			add(input{Kind: opReady, ID: "i"}, ok("a", stLeased, uint64(i), int32(i)))
			add(input{Kind: opTransition, ID: "i", Token: uint64(i), Name: "error", Request: fmt.Sprint("r", i)},
				ok("a", stIdle, uint64(i), int32(i+1)))
		}
		add(input{Kind: opReady, ID: "i"}, ok("a", stLeased, uint64(n+1), int32(n+1)))
		return ops, at
	}
	for _, tt := range []struct {
		name  string
		retry input
		out   *output
		want  bool
	}{
		{"retry after the next lease answers the instance",
			input{Kind: opTransition, ID: "i", Token: 1, Name: "error", Request: "r1"}, ok("a", stLeased, 3, 3), true},
		{"a new request with an old token is stale",
			input{Kind: opTransition, ID: "i", Token: 1, Name: "error", Request: "r9"}, &output{Code: codeStale}, true},
		{"a new request with an old token cannot succeed",
			input{Kind: opTransition, ID: "i", Token: 1, Name: "error", Request: "r9"}, ok("a", stLeased, 3, 3), false},
		{"a request id with another token is no retry",
			input{Kind: opTransition, ID: "i", Token: 2, Name: "error", Request: "r1"}, ok("a", stLeased, 3, 3), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ops, at := h(2)
			ops = append(ops, porcupine.Operation{ClientId: 2, Input: tt.retry, Call: at, Output: tt.out, Return: at + 1})
			if got := porcupine.CheckOperations(model.ToModel(), ops); got != tt.want {
				t.Fatalf("linearizable = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestModelStateWindow: the model's window keeps the last fsm.MaxApplied
// requests.
func TestModelStateWindow(t *testing.T) {
	var s state
	for i := range fsm.MaxApplied + 2 {
		s.remember(input{Request: fmt.Sprint("r", i), Token: uint64(i)})
	}
	if s.isRetry(input{Request: "r0", Token: 0}) || s.isRetry(input{Request: "r1", Token: 1}) {
		t.Fatal("the oldest requests stayed past the window")
	}
	for i := 2; i < fsm.MaxApplied+2; i++ {
		if !s.isRetry(input{Request: fmt.Sprint("r", i), Token: uint64(i)}) {
			t.Fatalf("r%d fell out of the window", i)
		}
	}
}
