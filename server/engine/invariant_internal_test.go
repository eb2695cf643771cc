package engine

import (
	"errors"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
)

func TestCheckDescribed(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in := fsm.Instance{ID: "i", Node: "a", Status: fsm.StatusWaiting, Token: 3, DueAt: now}
	good := fsm.Change{Instance: "i", ToNode: "a", ToStatus: fsm.StatusWaiting, Token: 3, DueAt: now}
	tests := []struct {
		name    string
		changes []fsm.Change
		broken  bool
	}{
		{"described", []fsm.Change{good}, false},
		{"described by the last", []fsm.Change{{Instance: "i", ToNode: "b"}, good}, false},
		{"no change", nil, true},
		{"another instance", []fsm.Change{func() fsm.Change { c := good; c.Instance = "j"; return c }()}, true},
		{"another node", []fsm.Change{func() fsm.Change { c := good; c.ToNode = "b"; return c }()}, true},
		{"another token", []fsm.Change{func() fsm.Change { c := good; c.Token = 2; return c }()}, true},
		{"another due time", []fsm.Change{func() fsm.Change { c := good; c.DueAt = now.Add(time.Second); return c }()}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				p := recover()
				var ie *fsm.InvariantError
				if err, _ := p.(error); (p != nil) != tt.broken || p != nil && !errors.As(err, &ie) {
					t.Fatalf("panic %v, want an *fsm.InvariantError: %v", p, tt.broken)
				}
			}()
			checkDescribed(&in, tt.changes)
		})
	}
}
