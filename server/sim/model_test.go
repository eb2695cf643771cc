package sim

import (
	"crypto/sha256"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"
)

func ok(node string, st status, token uint64, attempt int32) *output {
	return &output{Code: codeOK, Node: node, Status: st, Token: token, Attempt: attempt}
}

func TestModel(t *testing.T) {
	started := ok("a", stIdle, 0, 1)
	started.Created = true
	base := []porcupine.Operation{
		{ClientId: 0, Input: input{Kind: opStart, ID: "i"}, Call: 1, Output: started, Return: 2},
		{ClientId: 1, Input: input{Kind: opReady, ID: "i"}, Call: 3, Output: ok("a", stLeased, 1, 1), Return: 4},
		{ClientId: 1, Input: input{Kind: opTransition, ID: "i", Token: 1, Name: "ok", Request: "r1"}, Call: 5, Output: ok("b", stIdle, 1, 1), Return: 6},
	}
	with := func(ops ...porcupine.Operation) []porcupine.Operation {
		return append(append([]porcupine.Operation(nil), base...), ops...)
	}
	tests := []struct {
		name string
		h    []porcupine.Operation
		want bool
	}{
		{"legal", base, true},
		{"retry with the request id", with(porcupine.Operation{ClientId: 1, Input: input{Kind: opTransition, ID: "i", Token: 1, Name: "ok", Request: "r1"}, Call: 7, Output: ok("b", stIdle, 1, 1), Return: 8}), true},
		{"stale token took effect", with(porcupine.Operation{ClientId: 1, Input: input{Kind: opTransition, ID: "i", Token: 1, Name: "ok"}, Call: 7, Output: ok("done", stFinal, 1, 1), Return: 8}), false},
		{"acknowledged transition lost", with(porcupine.Operation{ClientId: 2, Input: input{Kind: opGet, ID: "i"}, Call: 7, Output: ok("a", stLeased, 1, 1), Return: 8}), false},
		{"illegal transition accepted", with(
			porcupine.Operation{ClientId: 1, Input: input{Kind: opReady, ID: "i"}, Call: 7, Output: ok("b", stLeased, 2, 1), Return: 8},
			porcupine.Operation{ClientId: 1, Input: input{Kind: opTransition, ID: "i", Token: 2, Name: "poke"}, Call: 9, Output: ok("b", stIdle, 2, 1), Return: 10}), false},
		{"final changed", with(
			porcupine.Operation{ClientId: 2, Input: input{Kind: opCancel, ID: "i"}, Call: 7, Output: ok("dfsmr.aborted", stFinal, 1, 1), Return: 8},
			porcupine.Operation{ClientId: 2, Input: input{Kind: opSignal, ID: "i", Name: "finish"}, Call: 9, Output: ok("done", stFinal, 1, 1), Return: 10}), false},
		{"ambiguous cancel applied", with(
			porcupine.Operation{ClientId: 2, Input: input{Kind: opCancel, ID: "i"}, Call: 7, Output: (*output)(nil), Return: openEnded},
			porcupine.Operation{ClientId: 3, Input: input{Kind: opGet, ID: "i"}, Call: 9, Output: ok("dfsmr.aborted", stFinal, 1, 1), Return: 10}), true},
		{"ambiguous cancel not applied", with(
			porcupine.Operation{ClientId: 2, Input: input{Kind: opCancel, ID: "i"}, Call: 7, Output: (*output)(nil), Return: openEnded},
			porcupine.Operation{ClientId: 3, Input: input{Kind: opGet, ID: "i"}, Call: 9, Output: ok("b", stIdle, 1, 1), Return: 10}), true},
		{"ambiguous cancel applied twice over", with(
			porcupine.Operation{ClientId: 2, Input: input{Kind: opCancel, ID: "i"}, Call: 7, Output: (*output)(nil), Return: openEnded},
			porcupine.Operation{ClientId: 3, Input: input{Kind: opGet, ID: "i"}, Call: 9, Output: ok("dfsmr.aborted", stFinal, 1, 1), Return: 10},
			porcupine.Operation{ClientId: 3, Input: input{Kind: opGet, ID: "i"}, Call: 11, Output: ok("b", stIdle, 1, 1), Return: 12}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := porcupine.CheckOperations(model.ToModel(), tt.h); got != tt.want {
				t.Fatalf("linearizable = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestNotLinearizableWritesVisualization checks that a run whose history
// is not linearizable fails naming its seed and leaves porcupine's
// visualization next to it.
func TestNotLinearizableWritesVisualization(t *testing.T) {
	dir := t.TempDir()
	s := &sim{cfg: Config{Seed: 7, Ticks: 10, Dir: dir}, trace: sha256.New()}
	c := &call{a: &actor{name: "w"}}
	started := ok("a", stIdle, 0, 1)
	started.Created = true
	s.ops = []*opRec{
		{c: c, in: input{Kind: opStart, ID: "i"}, call: 1, out: started, ret: 2, delivered: true},
		{c: c, in: input{Kind: opTransition, ID: "i", Token: 1, Name: "ok"}, call: 3, out: ok("b", stIdle, 1, 1), ret: 4, delivered: true},
	}
	err := func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = p.(simFailure).err
			}
		}()
		s.linearizable()
		return nil
	}()
	if err == nil || !strings.Contains(err.Error(), "not linearizable") {
		t.Fatalf("err = %v, want not linearizable", err)
	}
	if s.res.Visualization == "" {
		t.Fatal("no visualization written")
	}
	b, err := os.ReadFile(s.res.Visualization)
	if err != nil || len(b) == 0 {
		t.Fatalf("visualization %s: %d bytes, %v", s.res.Visualization, len(b), err)
	}
	e := &Error{Seed: 7, Ticks: 10, Err: errors.New("x")}
	if !strings.Contains(e.Error(), "go run ./cmd/dfsmr dst --seed 7 --ticks 10") {
		t.Fatalf("error %q does not say how to replay the seed", e)
	}
}
