package sim

import (
	"errors"
	"fmt"

	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// opDefine is a DefineMachine call. It is not part of an instance's
// history: the model does not depend on the version an instance runs.
const opDefine = opSys + 1

// held is a lease an actor believes it holds.
type held struct {
	id    string
	token uint64
}

// actor is a simulated client (starts, reads, signals, cancels, defines)
// or worker (leases and works). It has at most one call in flight.
type actor struct {
	name    string
	worker  bool
	client  int // porcupine client id; a new one after an ambiguous call
	pending *call
	leases  []held
	stale   []held // leases it held once: the tokens of stale calls
	last    *input // its last transition, to send again with the same request id
	reqs    int
}

// call is one call of an actor; the network may deliver it more than once,
// and each delivery is one operation of the history.
type call struct {
	a       *actor
	in      input
	variant int // of opDefine
	issued  int // tick
	copies  []*opRec
	done    bool // the actor got its reply or gave up
}

// opRec is one delivery of a call: one operation of the history.
type opRec struct {
	c         *call
	in        input
	client    int
	call, ret int64
	out       *output // nil: ambiguous
	delivered bool
	failed    bool // the server answered with a failure of its own
	// again says a transition with the same instance, request id and
	// token was delivered before: the server may answer it as a retry.
	again bool

	inst fsm.Instance // what an answered call returned
}

type message struct {
	at  int
	rec *opRec
}

func (s *sim) randomID() string {
	if s.nextID == 0 || s.rng.IntN(10) == 0 {
		return fmt.Sprintf("i%03d", s.rng.IntN(s.nextID+1)) // sometimes one never started
	}
	return fmt.Sprintf("i%03d", s.rng.IntN(s.nextID))
}

// issue makes a's next call.
func (s *sim) issue(a *actor) {
	in := input{}
	variant := 0
	switch {
	case !s.active && !a.worker:
		return // clients rest once the faults stop: workers finish the work
	case !s.active:
		if len(a.leases) > 0 {
			l := a.leases[0]
			in = input{Kind: opTransition, ID: l.id, Token: l.token, Name: "ok", Request: a.newRequest()}
		} else {
			in = input{Kind: opReady}
		}
	case a.worker:
		in = s.workerCall(a)
	default:
		switch r := s.rng.Float64(); {
		case r < 0.30 && s.unfinished() < maxLive:
			in = input{Kind: opStart, ID: fmt.Sprintf("i%03d", s.nextID)}
			s.nextID++
		case r < 0.35:
			in = input{Kind: opStart, ID: s.randomID()}
		case r < 0.60:
			in = input{Kind: opGet, ID: s.randomID()}
		case r < 0.85:
			in = input{Kind: opSignal, ID: s.randomID(), Name: signalNames[s.rng.IntN(len(signalNames))]}
		case r < 0.90:
			in = input{Kind: opCancel, ID: s.randomID()}
		case r < 0.93:
			in = input{Kind: opDefine}
			variant = s.rng.IntN(len(variants))
		default:
			in = input{Kind: opGet, ID: s.randomID()}
		}
	}
	c := &call{a: a, in: in, variant: variant, issued: s.tick}
	a.pending = c
	s.res.Calls++
	s.now++
	s.tracef("%s calls %s", a.name, s.describeCall(c))
	s.send(c)
	if s.active && s.rng.Float64() < pDuplicate {
		s.res.Duplicated++
		s.tracef("network duplicates the call of %s", a.name)
		s.send(c)
	}
}

func (s *sim) describeCall(c *call) string {
	if c.in.Kind == opDefine {
		return fmt.Sprintf("define(variant %d)", c.variant)
	}
	return callString(c.in)
}

func (a *actor) newRequest() string {
	a.reqs++
	return fmt.Sprintf("%s-%d", a.name, a.reqs)
}

// workerCall picks a worker's call: mostly work on a lease it holds (with
// its token, a stale one, or a request sent again), else a poll for work.
// A long poll is a poll made again every tick.
func (s *sim) workerCall(a *actor) input {
	if len(a.leases) == 0 || s.rng.Float64() < 0.15 {
		return input{Kind: opReady}
	}
	l := a.leases[s.rng.IntN(len(a.leases))]
	switch r := s.rng.Float64(); {
	case r < 0.55:
		in := input{Kind: opTransition, ID: l.id, Token: l.token, Name: workerTransitions[s.rng.IntN(len(workerTransitions))]}
		if s.rng.IntN(4) != 0 {
			in.Request = a.newRequest()
		}
		a.last = &in
		return in
	case r < 0.65 && a.last != nil:
		return *a.last // the same request id: a retry
	case r < 0.75:
		tok := l.token - 1
		if len(a.stale) > 0 {
			st := a.stale[s.rng.IntN(len(a.stale))]
			l.id, tok = st.id, st.token
		}
		if tok == 0 {
			tok = l.token + 1 // a token from the future is as stale
		}
		return input{Kind: opTransition, ID: l.id, Token: tok, Name: "ok", Request: a.newRequest()}
	case r < 0.90:
		return input{Kind: opHeartbeat, ID: l.id, Token: l.token}
	}
	return input{Kind: opRelinquish, ID: l.id, Token: l.token}
}

// send puts one copy of c on the network.
func (s *sim) send(c *call) {
	rec := &opRec{c: c, in: c.in, client: -1, call: s.now}
	c.copies = append(c.copies, rec)
	s.ops = append(s.ops, rec)
	if s.active && s.rng.Float64() < pLose {
		s.res.Lost++
		s.tracef("network loses the call of %s", c.a.name)
		return
	}
	s.reqs = append(s.reqs, &message{at: s.delay(), rec: rec})
}

func (s *sim) delay() int {
	if !s.active {
		return s.tick
	}
	return s.tick + s.rng.IntN(maxDelay+1)
}

// due takes the messages due now out of q, in the order the network
// delivers them: any order while the faults are on.
func (s *sim) due(q *[]*message) []*message {
	var due, keep []*message
	for _, m := range *q {
		if m.at <= s.tick {
			due = append(due, m)
		} else {
			keep = append(keep, m)
		}
	}
	*q = keep
	if s.active {
		s.rng.Shuffle(len(due), func(i, j int) { due[i], due[j] = due[j], due[i] })
	}
	return due
}

func (s *sim) deliverRequests() {
	for _, m := range s.due(&s.reqs) {
		s.now++
		s.exec(m.rec)
		if s.active && s.rng.Float64() < pLose {
			s.res.Lost++
			s.tracef("network loses the reply to %s", m.rec.c.a.name)
			continue
		}
		s.resps = append(s.resps, &message{at: s.delay(), rec: m.rec})
	}
}

func (s *sim) deliverResponses() {
	for _, m := range s.due(&s.resps) {
		rec := m.rec
		c := rec.c
		if c.done {
			continue // a late or second reply: the actor moved on
		}
		a := c.a
		s.now++
		c.done, a.pending = true, nil
		if rec.failed {
			// The server failed: the actor cannot tell whether the call
			// took effect.
			s.res.Ambiguous++
			a.client = s.newClient()
			s.tracef("%s gets unavailable", a.name)
			continue
		}
		s.res.Acked++
		rec.ret, rec.client = s.now, a.client
		switch {
		case c.in.Kind == opDefine:
			s.tracef("%s gets defined", a.name)
		case rec.out == nil:
			s.tracef("%s gets no work", a.name)
		default:
			s.tracef("%s gets %s", a.name, rec.out)
		}
		s.learn(a, rec)
	}
}

// giveUp ends a's call without a reply: it is ambiguous, and the actor
// goes on as a new client.
func (s *sim) giveUp(a *actor) {
	s.tracef("%s gives up on its call", a.name)
	a.pending.done = true
	a.pending = nil
	a.client = s.newClient()
	s.res.Ambiguous++
}

// learn updates what a knows from an answered call and records the
// acknowledged writes the checker must find after every crash.
func (s *sim) learn(a *actor, rec *opRec) {
	in, o := rec.in, rec.out
	if o == nil {
		return
	}
	drop := func(id string, tok uint64) {
		for i, l := range a.leases {
			if l.id == id && l.token == tok {
				a.leases = append(a.leases[:i], a.leases[i+1:]...)
				a.stale = append(a.stale, l)
				return
			}
		}
	}
	switch in.Kind {
	case opReady:
		if o.Code == codeOK {
			a.leases = append(a.leases, held{id: in.ID, token: o.Token})
			s.chk.ack(acked{id: in.ID, rev: rec.inst.Rev, kind: fsm.ChangeLeased, token: o.Token})
		}
	case opTransition:
		if o.Code == codeOK {
			// A retry of an applied transition is answered with the
			// instance as it is now, maybe leased again since; a first
			// delivery shows the state the transition made, its token.
			if o.Token != in.Token && !rec.again {
				s.failf("transition of %s with token %d took effect under token %d", in.ID, in.Token, o.Token)
			}
			s.chk.ack(acked{id: in.ID, kind: fsm.ChangeTransitioned, token: in.Token, name: in.Name})
		}
		if o.Code == codeOK || o.Code == codeStale {
			drop(in.ID, in.Token)
		}
	case opRelinquish, opHeartbeat:
		if o.Code == codeStale || in.Kind == opRelinquish {
			drop(in.ID, in.Token)
		}
		if o.Code == codeOK && in.Kind == opRelinquish {
			s.chk.ack(acked{id: in.ID, rev: rec.inst.Rev, kind: fsm.ChangeRelinquished})
		}
	case opStart:
		if o.Created {
			s.chk.ack(acked{id: in.ID, rev: 1, kind: fsm.ChangeStarted})
		}
	case opSignal:
		if o.Code == codeOK {
			s.chk.ack(acked{id: in.ID, rev: rec.inst.Rev, kind: fsm.ChangeSignaled})
		}
	case opCancel:
		if o.Code == codeOK {
			s.chk.ack(acked{id: in.ID, rev: rec.inst.Rev, kind: fsm.ChangeCanceled})
		}
	}
}

// sentKey names a transition request as the server's retry window does.
type sentKey struct {
	id, request string
	token       uint64
}

// exec delivers one copy of a call to the server.
func (s *sim) exec(rec *opRec) {
	s.res.Delivered++
	rec.delivered = true
	a, in := rec.c.a, rec.in
	if in.Kind == opTransition && in.Request != "" {
		k := sentKey{in.ID, in.Request, in.Token}
		rec.again = s.sent[k]
		s.sent[k] = true
	}
	if s.cfg.Bugs.StaleTokens && (in.Kind == opTransition || in.Kind == opHeartbeat || in.Kind == opRelinquish) {
		in.Token = s.liveToken(in.ID, in.Token)
	}
	var res fsm.Instance
	var created bool
	var err error
	what := fmt.Sprintf("%s of %s", in.Kind, a.name)
	if in.Kind == opDefine {
		what = fmt.Sprintf("define(variant %d)", rec.c.variant)
	}
	err, ambiguous, committed := s.engineCall(what, func() error {
		var err error
		switch in.Kind {
		case opStart:
			res, created, err = s.eng.StartInstance(s.ctx, engine.StartArgs{ID: in.ID, Machine: machineID, Actor: a.name})
		case opReady:
			var ok bool
			res, ok, err = s.eng.Ready(s.ctx, engine.ReadyArgs{Worker: a.name})
			if err == nil && !ok {
				res = fsm.Instance{}
			}
		case opTransition:
			res, err = s.eng.Transition(s.ctx, engine.TransitionArgs{ID: in.ID, Token: in.Token, Transition: in.Name, RequestID: in.Request})
		case opHeartbeat:
			_, err = s.eng.Heartbeat(s.ctx, in.ID, in.Token, "")
		case opRelinquish:
			res, err = s.eng.Relinquish(s.ctx, in.ID, in.Token, "")
		case opSignal:
			res, err = s.eng.SignalInstance(s.ctx, in.ID, in.Name, nil, a.name)
		case opCancel:
			res, err = s.eng.CancelInstance(s.ctx, in.ID, "sim", a.name)
		case opGet:
			res, err = s.eng.GetInstance(s.ctx, in.ID)
		case opDefine:
			_, _, err = s.eng.DefineMachine(s.ctx, machineID+".yaml", machineSource(rec.c.variant), a.name)
		}
		return err
	})
	if in.Kind == opReady {
		// The instance a Ready leased is its partition: from its reply, or,
		// when the store failed, from what it committed.
		rec.in.ID = res.ID
		if ambiguous {
			for _, c := range committed {
				if c.Kind == fsm.ChangeLeased {
					rec.in.ID = c.Instance
				}
			}
		}
	}
	switch {
	case ambiguous:
		rec.failed = true
		s.tracef("server: %s is ambiguous: %v", what, err)
		return
	case err != nil:
		c, known := classify(err)
		if !known {
			s.failf("%s of %s: unexpected error: %v", in.Kind, a.name, err)
		}
		rec.out = &output{Code: c}
	case in.Kind == opDefine:
	case in.Kind == opReady && res.ID == "":
		s.tracef("server: ready of %s finds no work", a.name)
		return
	case in.Kind == opHeartbeat:
		rec.out = &output{Code: codeOK}
	default:
		rec.out = &output{Code: codeOK, Created: created, Node: res.Node, Status: modelStatus(res.Status), Token: res.Token, Attempt: res.Attempt}
		rec.inst = res
	}
	if in.Kind != opDefine {
		what = fmt.Sprintf("%s by %s", callString(rec.in), a.name)
	}
	s.tracef("server: %s -> %s", what, rec.out)
}

// liveToken is the StaleTokens bug: the token of the live lease on id, or
// tok when there is none.
func (s *sim) liveToken(id string, tok uint64) uint64 {
	_ = s.bolt.View(s.ctx, func(tx store.ReadTx) error {
		in, err := tx.Instance(id)
		if err == nil && in.Status == fsm.StatusLeased {
			tok = in.Lease.Token
		}
		return nil
	})
	return tok
}

// classify maps the errors the API may answer to the model's codes.
func classify(err error) (code, bool) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return codeNotFound, true
	case errors.Is(err, fsm.ErrStaleLease):
		return codeStale, true
	case errors.Is(err, fsm.ErrIllegalTransition):
		return codeIllegal, true
	case errors.Is(err, fsm.ErrFinal):
		return codeFinal, true
	}
	return 0, false
}
