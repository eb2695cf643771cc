package sim

import (
	"fmt"
	"hash/fnv"
	"math"
	"sort"

	"github.com/anishathalye/porcupine"

	"github.com/dfsmr/dfsmr/server/fsm"
)

// opKind names a call of the API in the model, or a change the server made
// on its own (sys).
type opKind uint8

const (
	opStart opKind = iota
	opReady
	opTransition
	opHeartbeat
	opRelinquish
	opSignal
	opCancel
	opGet
	opSys
)

var opNames = [...]string{"start", "ready", "transition", "heartbeat", "relinquish", "signal", "cancel", "get", "sys", "define"}

func (k opKind) String() string { return opNames[k] }

// code is the outcome class of a call.
type code uint8

const (
	codeOK code = iota
	codeNotFound
	codeStale
	codeIllegal
	codeFinal
)

var codeNames = [...]string{"ok", "not-found", "stale", "illegal", "final"}

func (c code) String() string { return codeNames[c] }

// status is an instance's status as the model sees it: WAITING and READY
// are one status, because when a WAITING instance comes due is a matter
// of the scheduler's timing, which the model does not follow.
type status uint8

const (
	stIdle status = iota + 1
	stLeased
	stFinal
)

var statusNames = [...]string{"?", "idle", "leased", "final"}

func (s status) String() string { return statusNames[s] }

func modelStatus(s fsm.Status) status {
	switch s {
	case fsm.StatusLeased:
		return stLeased
	case fsm.StatusFinal:
		return stFinal
	}
	return stIdle
}

// input is one call as the client made it. Ready's ID is the instance its
// reply named (or, when the reply was lost, the one the server leased).
type input struct {
	Kind    opKind
	ID      string
	Token   uint64
	Name    string // transition or signal name
	Request string // transition request id
	// Sys is the changes of one server-made step (kinds in order).
	Sys []fsm.ChangeKind
}

// output is what a call returned. A nil *output is an ambiguous call: the
// model accepts it applied or not.
type output struct {
	Code    code
	Created bool
	Node    string
	Status  status
	Token   uint64
	Attempt int32
}

// state is the model of one instance. It is comparable: Applied is an
// array.
type state struct {
	Exists  bool
	Node    string
	Status  status
	Token   uint64
	Attempt int32
	// Applied are the (request id, token) pairs of the last
	// fsm.MaxApplied transitions applied with a request id, newest last;
	// NApplied of them are set.
	Applied  [fsm.MaxApplied]applied
	NApplied int
}

// applied is a transition applied with a request id.
type applied struct {
	Request string
	Token   uint64
}

// isRetry reports whether in repeats a transition s has applied.
func (s *state) isRetry(in input) bool {
	for _, a := range s.Applied[:s.NApplied] {
		if in.Request != "" && a == (applied{in.Request, in.Token}) {
			return true
		}
	}
	return false
}

// remember records the applied transition in, dropping the oldest one
// past fsm.MaxApplied.
func (s *state) remember(in input) {
	if in.Request == "" {
		return
	}
	if s.NApplied == len(s.Applied) {
		copy(s.Applied[:], s.Applied[1:])
		s.NApplied--
	}
	s.Applied[s.NApplied] = applied{in.Request, in.Token}
	s.NApplied++
}

func (s state) view() output {
	return output{Code: codeOK, Node: s.Node, Status: s.Status, Token: s.Token, Attempt: s.Attempt}
}

// step applies in to s as the API specifies and returns the new state and
// the reply the call must get.
func step(s state, in input) (state, output) {
	fail := func(c code) (state, output) { return s, output{Code: c} }
	if !s.Exists && in.Kind != opStart {
		return fail(codeNotFound)
	}
	switch in.Kind {
	case opStart:
		if s.Exists {
			return s, s.view()
		}
		s = state{Exists: true, Node: specMachine.Start, Status: stIdle, Attempt: 1}
		o := s.view()
		o.Created = true
		return s, o
	case opGet:
		return s, s.view()
	case opReady:
		if s.Status != stIdle {
			return fail(codeStale) // no reply can name it: the step is refused
		}
		s.Token++
		s.Status = stLeased
		return s, s.view()
	case opTransition:
		if s.isRetry(in) {
			// A retry of any recent applied transition, whatever happened
			// since: no effect, the instance as it is.
			return s, s.view()
		}
		if s.Status != stLeased || s.Token != in.Token {
			return fail(codeStale)
		}
		t := specMachine.Node(s.Node).Transitions[in.Name]
		if t == nil || t.Signal {
			return fail(codeIllegal)
		}
		s = move(s, t)
		s.remember(in)
		return s, s.view()
	case opHeartbeat, opRelinquish:
		if s.Status != stLeased || s.Token != in.Token {
			return fail(codeStale)
		}
		if in.Kind == opRelinquish {
			s.Status = stIdle
			return s, s.view()
		}
		return s, output{Code: codeOK}
	case opSignal:
		if s.Status == stFinal {
			return fail(codeFinal)
		}
		t := specMachine.Node(s.Node).Transitions[in.Name]
		if t == nil || !t.Signal {
			return fail(codeIllegal)
		}
		s = move(s, t)
		return s, s.view()
	case opCancel:
		if s.Status == stFinal {
			return fail(codeFinal)
		}
		s.Node, s.Status = fsm.NodeAborted, stFinal
		return s, s.view()
	case opSys:
		return sysStep(s, in.Sys, in.Token)
	}
	panic(fmt.Sprintf("sim: unknown op %v", in.Kind))
}

// move takes transition t: a self-transition without delay is a failed
// attempt, retried until the node's policy runs out.
func move(s state, t *fsm.Transition) state {
	if t.To == s.Node && t.Delay == 0 {
		s.Attempt++
		if specMachine.Node(s.Node).Retry.Exhausted(s.Attempt) {
			s.Node, s.Status = fsm.NodeFailed, stFinal
		} else {
			s.Status = stIdle
		}
		return s
	}
	if t.To != s.Node {
		s.Attempt = 1
	}
	s.Node = t.To
	s.Status = stIdle
	if specMachine.Node(t.To).Final {
		s.Status = stFinal
	}
	return s
}

// sysStep applies the changes the server made on its own to one instance
// in one step. Any step the model does not allow is refused with
// codeIllegal, which no recorded reply carries.
func sysStep(s state, kinds []fsm.ChangeKind, token uint64) (state, output) {
	bad := output{Code: codeIllegal}
	if s.Status == stFinal || len(kinds) == 0 {
		return s, bad
	}
	switch kinds[0] {
	case fsm.ChangeWoken, fsm.ChangeUpgraded:
		if len(kinds) != 1 || (kinds[0] == fsm.ChangeWoken && s.Status != stIdle) {
			return s, bad
		}
	case fsm.ChangeAborted:
		if len(kinds) != 1 {
			return s, bad
		}
		s.Node, s.Status = fsm.NodeAborted, stFinal
	case fsm.ChangeTimedOut:
		if s.Status != stLeased || token != s.Token {
			return s, bad
		}
		s.Attempt++
		s.Status = stIdle
		exhausted := specMachine.Node(s.Node).Retry.Exhausted(s.Attempt)
		if exhausted != (len(kinds) == 2 && kinds[1] == fsm.ChangeFailed) || len(kinds) > 2 {
			return s, bad
		}
		if exhausted {
			s.Node, s.Status = fsm.NodeFailed, stFinal
		}
	default:
		return s, bad
	}
	return s, s.view()
}

// model is the sequential specification of the API for porcupine,
// partitioned per instance.
var model = porcupine.NondeterministicModel{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		for _, op := range h {
			id := op.Input.(input).ID
			by[id] = append(by[id], op)
		}
		ids := make([]string, 0, len(by))
		for id := range by {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		out := make([][]porcupine.Operation, 0, len(ids))
		for _, id := range ids {
			out = append(out, by[id])
		}
		return out
	},
	Init: func() []any { return []any{state{}} },
	Step: func(st, in, out any) []any {
		s := st.(state)
		next, want := step(s, in.(input))
		o := out.(*output)
		switch {
		case o == nil: // ambiguous: applied or not
			if next == s {
				return []any{s}
			}
			return []any{s, next}
		case *o == want:
			return []any{next}
		}
		return nil
	},
	Equal: func(a, b any) bool { return a.(state) == b.(state) },
	Hash: func(st any) uint64 {
		s := st.(state)
		h := fnv.New64a()
		fmt.Fprintf(h, "%v|%s|%d|%d|%d|%v", s.Exists, s.Node, s.Status, s.Token, s.Attempt, s.Applied[:s.NApplied])
		return h.Sum64()
	},
	DescribeOperation: func(in, out any) string {
		return describe(in.(input), out.(*output))
	},
	DescribeState: func(st any) string {
		s := st.(state)
		if !s.Exists {
			return "absent"
		}
		return fmt.Sprintf("%s %s token=%d attempt=%d applied=%v", s.Node, s.Status, s.Token, s.Attempt, s.Applied[:s.NApplied])
	},
}

func describe(in input, o *output) string { return callString(in) + " -> " + o.String() }

func callString(in input) string {
	switch in.Kind {
	case opTransition:
		return fmt.Sprintf("transition(%s, %d, %s, req=%q)", in.ID, in.Token, in.Name, in.Request)
	case opHeartbeat, opRelinquish:
		return fmt.Sprintf("%s(%s, %d)", in.Kind, in.ID, in.Token)
	case opSignal:
		return fmt.Sprintf("signal(%s, %s)", in.ID, in.Name)
	case opSys:
		return fmt.Sprintf("sys(%s, %d, %v)", in.ID, in.Token, in.Sys)
	}
	return fmt.Sprintf("%s(%s)", in.Kind, in.ID)
}

func (o *output) String() string {
	if o == nil {
		return "?"
	}
	if o.Code != codeOK {
		return o.Code.String()
	}
	s := fmt.Sprintf("%s %s token=%d attempt=%d", o.Node, o.Status, o.Token, o.Attempt)
	if o.Created {
		s += " created"
	}
	return s
}

// openEnded is the return time of an ambiguous call: it may take effect at
// any time after it was made.
const openEnded = math.MaxInt64
