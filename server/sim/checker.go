package sim

import (
	"fmt"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// acked is a write the server acknowledged to a client: it must be in the
// store after every crash.
type acked struct {
	id    string
	rev   uint64 // the instance's rev the reply showed (0 for transitions)
	kind  fsm.ChangeKind
	token uint64
	name  string // transition name
}

// shadow is an instance as the changelog built it.
type shadow struct {
	node    string
	status  fsm.Status
	token   uint64
	version uint32
	rev     uint64
	final   bool
	// due is the due time (WAITING) or lease expiry (LEASED) its last
	// change recorded, on the server's clock.
	due time.Time
}

// checker holds what the invariants are checked against: the changelog as
// the commit hook reported it and as the store keeps it.
type checker struct {
	inst     map[string]*shadow
	order    []string     // instance ids, in start order
	clog     []fsm.Change // the checked changelog, from seq 1
	pending  []fsm.Change // reported by the hook, not yet checked
	acks     []acked
	versions uint32 // machine versions defined
}

func (c *checker) init() {
	c.inst = map[string]*shadow{}
}

func (c *checker) ack(a acked) { c.acks = append(c.acks, a) }

// absorb takes the changes the commit hook delivered: the scheduler's heap
// follows them (as Engine.OnCommit makes the scheduler do), the changes the
// server made on its own become operations of the history, and all wait
// for the next check. It returns them.
func (s *sim) absorb() []fsm.Change {
	cs := s.committed
	s.committed = nil
	for i := 0; i < len(cs); i++ {
		c := cs[i]
		if c.Instance == "" {
			continue
		}
		if c.DueAt.IsZero() {
			s.heap.Remove(c.Instance)
		} else {
			s.heap.Set(c.Instance, c.DueAt)
		}
		if c.Actor != "dfsmr" {
			continue
		}
		// One step of the server on one instance: its consecutive
		// changes.
		in := input{Kind: opSys, ID: c.Instance, Token: c.Token, Sys: []fsm.ChangeKind{c.Kind}}
		for i+1 < len(cs) && cs[i+1].Instance == c.Instance && cs[i+1].Actor == "dfsmr" {
			i++
			in.Sys = append(in.Sys, cs[i].Kind)
			if cs[i].DueAt.IsZero() {
				s.heap.Remove(c.Instance)
			} else {
				s.heap.Set(c.Instance, cs[i].DueAt)
			}
		}
		last := cs[i]
		s.now++
		s.ops = append(s.ops, &opRec{in: in, client: s.newClient(), call: s.now, ret: s.now, delivered: true,
			out: &output{Code: codeOK, Node: last.ToNode, Status: modelStatus(last.ToStatus), Token: last.Token, Attempt: last.Attempt}})
		s.tracef("server: %s", describe(in, s.ops[len(s.ops)-1].out))
	}
	s.chk.pending = append(s.chk.pending, cs...)
	return cs
}

// check checks the changes committed since the last check: the store's
// changelog continues gap-free with exactly what the hook reported, every
// change is one the machine allows, and each instance they touched agrees
// with its history and the due index.
func (s *sim) check() {
	s.called = false
	var tail []fsm.Change
	var head uint64
	var due []store.Due
	var touched []fsm.Instance
	s.view(func(tx store.ReadTx) (err error) {
		if head, err = tx.Head(); err != nil {
			return err
		}
		if tail, err = tx.Changes(uint64(len(s.chk.clog))+1, 0); err != nil {
			return err
		}
		if due, err = tx.Due(time.Unix(0, 1<<62), 0); err != nil {
			return err
		}
		touched = touched[:0]
		for _, c := range tail {
			if c.Instance == "" || (len(touched) > 0 && touched[len(touched)-1].ID == c.Instance) {
				continue
			}
			in, err := tx.Instance(c.Instance)
			if err != nil {
				return fmt.Errorf("instance %s of change %d: %w", c.Instance, c.Seq, err)
			}
			touched = append(touched, in)
		}
		return nil
	})
	if head != uint64(len(s.chk.clog)+len(tail)) {
		s.failf("changelog head %d, but %d changes checked and %d more stored", head, len(s.chk.clog), len(tail))
	}
	if len(tail) != len(s.chk.pending) {
		s.failf("changelog: %d changes committed, %d stored (%v vs %v)", len(s.chk.pending), len(tail), kinds(s.chk.pending), kinds(tail))
	}
	for i, c := range tail {
		if want := uint64(len(s.chk.clog)) + 1; c.Seq != want {
			s.failf("changelog gap: seq %d where %d belongs", c.Seq, want)
		}
		if p := s.chk.pending[i]; !sameChange(p, c) {
			s.failf("changelog seq %d: committed %s, stored %s", c.Seq, changeString(p), changeString(c))
		}
		s.follow(c)
		s.chk.clog = append(s.chk.clog, c)
	}
	s.chk.pending = nil
	for _, in := range touched {
		if in.Machine == machineID {
			s.checkInstance(in, due)
		}
	}
}

func (s *sim) view(fn func(tx store.ReadTx) error) {
	if err := s.bolt.View(s.ctx, fn); err != nil {
		s.failf("check: read store: %v", err)
	}
}

// follow checks one change against the instance's shadow and the machine,
// and moves the shadow on.
func (s *sim) follow(c fsm.Change) {
	if c.Instance == "" {
		if c.Kind == fsm.ChangeMachineDefined && c.Machine == machineID {
			if c.Version != s.chk.versions+1 {
				s.failf("machine version %d defined after version %d", c.Version, s.chk.versions)
			}
			s.chk.versions = c.Version
		}
		return
	}
	if c.Machine == printJobID || isDeviceChange(c) {
		s.followJob(c)
		return
	}
	sh := s.chk.inst[c.Instance]
	if c.Kind == fsm.ChangeStarted {
		if sh != nil {
			s.failf("instance %s started twice (seq %d)", c.Instance, c.Seq)
		}
		sh = &shadow{node: c.FromNode, version: c.Version}
		s.chk.inst[c.Instance] = sh
		s.chk.order = append(s.chk.order, c.Instance)
	}
	bad := func(why string, args ...any) {
		s.failf("seq %d %s: %s", c.Seq, changeString(c), fmt.Sprintf(why, args...))
	}
	switch {
	case sh == nil:
		bad("change of an instance never started")
	case sh.final:
		bad("a FINAL instance changed")
	case c.Kind != fsm.ChangeStarted && (c.FromNode != sh.node || c.FromStatus != sh.status):
		bad("from %s %s, but the instance was %s %s", c.FromNode, c.FromStatus, sh.node, sh.status)
	case c.Token < sh.token:
		bad("token went down from %d", sh.token)
	case c.Kind == fsm.ChangeUpgraded && c.Version <= sh.version, c.Kind != fsm.ChangeUpgraded && c.Version != sh.version:
		bad("version %d after version %d", c.Version, sh.version)
	}
	var t *fsm.Transition
	if n := specMachine.Node(c.FromNode); n != nil {
		t = n.Transitions[c.Transition]
	}
	leaseOp := func() {
		if sh.status != fsm.StatusLeased || c.Token != sh.token {
			bad("a lease call with token %d, but the instance is %s with token %d", c.Token, sh.status, sh.token)
		}
	}
	switch c.Kind {
	case fsm.ChangeStarted:
		if c.ToNode != specMachine.Start || c.Token != 0 {
			bad("a start elsewhere than the start node")
		}
	case fsm.ChangeLeased:
		if sh.status != fsm.StatusReady || c.Token <= sh.token || c.ToStatus != fsm.StatusLeased {
			bad("a lease of a %s instance with token %d after %d", sh.status, c.Token, sh.token)
		}
	case fsm.ChangeTransitioned:
		leaseOp()
		if t == nil || t.Signal || c.ToNode != t.To {
			bad("not a worker transition of node %s", c.FromNode)
		}
	case fsm.ChangeSignaled:
		if t == nil || !t.Signal || c.ToNode != t.To {
			bad("not a signal of node %s", c.FromNode)
		}
	case fsm.ChangeHeartbeat, fsm.ChangeRelinquished:
		leaseOp()
	case fsm.ChangeTimedOut:
		leaseOp()
		if c.ToNode != c.FromNode || c.Transition != fsm.TransitionTimeout {
			bad("a timeout that moved the instance")
		}
		// Whatever the server's clock did, a lease ends no earlier than
		// its expiry by that clock: in real time, early by at most the
		// forward steps taken since.
		if c.At.Before(sh.due) {
			bad("the lease timed out at %v, before its expiry %v", c.At, sh.due)
		}
	case fsm.ChangeWoken:
		if sh.status != fsm.StatusWaiting || c.ToStatus != fsm.StatusReady || c.ToNode != c.FromNode {
			bad("a wake of a %s instance", sh.status)
		}
		if c.At.Before(sh.due) {
			bad("woken at %v, before its due time %v", c.At, sh.due)
		}
	case fsm.ChangeFailed:
		if c.ToNode != fsm.NodeFailed || c.ToStatus != fsm.StatusFinal {
			bad("a failure that does not end in %s", fsm.NodeFailed)
		}
	case fsm.ChangeCanceled, fsm.ChangeAborted:
		if c.ToNode != fsm.NodeAborted || c.ToStatus != fsm.StatusFinal {
			bad("an abort that does not end in %s", fsm.NodeAborted)
		}
	case fsm.ChangeUpgraded:
		if c.ToNode != c.FromNode || c.ToStatus != c.FromStatus {
			bad("an upgrade that moved the instance")
		}
	default:
		bad("unexpected change kind")
	}
	if (c.ToStatus == fsm.StatusFinal) != finalNode(c.ToNode) {
		bad("status %s in node %s", c.ToStatus, c.ToNode)
	}
	sh.node, sh.status, sh.token, sh.version = c.ToNode, c.ToStatus, c.Token, c.Version
	sh.due = c.DueAt
	sh.rev++
	sh.final = c.ToStatus == fsm.StatusFinal
}

// checkInstance checks that the stored instance agrees with its shadow,
// that a live lease is its last token, and that the due index holds
// exactly its due time, in the scheduler's heap too.
func (s *sim) checkInstance(in fsm.Instance, due []store.Due) {
	id := in.ID
	sh := s.chk.inst[id]
	switch {
	case in.Node != sh.node || in.Status != sh.status || in.Token != sh.token || in.Version != sh.version:
		s.failf("instance %s is %s %s token %d v%d, its changelog says %s %s token %d v%d",
			id, in.Node, in.Status, in.Token, in.Version, sh.node, sh.status, sh.token, sh.version)
	case in.Rev != sh.rev:
		s.failf("instance %s is at rev %d, its changelog has %d changes", id, in.Rev, sh.rev)
	case (in.Status == fsm.StatusLeased) != (in.Lease.Token != 0), in.Status == fsm.StatusLeased && in.Lease.Token != in.Token:
		s.failf("instance %s is %s with lease token %d and token %d", id, in.Status, in.Lease.Token, in.Token)
	}
	want, ok := in.DueTime()
	n := 0
	for _, d := range due {
		if d.ID != id {
			continue
		}
		n++
		if !ok || !d.At.Equal(want) {
			s.failf("instance %s (%s) has a due entry at %v; it is due at %v (%v)", id, in.Status, d.At, want, ok)
		}
		if _, inHeap := s.heap.Get(id); !inHeap {
			s.failf("instance %s is due at %v in the store but not in the scheduler's heap", id, d.At)
		}
	}
	if n > 1 || ok && n == 0 {
		s.failf("instance %s (%s, due %v) has %d due entries", id, in.Status, want, n)
	}
}

// fullCheck checks everything against the store as a whole: after a crash,
// every so many ticks and at the end.
func (s *sim) fullCheck() {
	s.check()
	var all []fsm.Change
	var list []fsm.Instance
	var due []store.Due
	s.view(func(tx store.ReadTx) (err error) {
		if all, err = tx.Changes(1, 0); err != nil {
			return err
		}
		if list, err = tx.Instances(store.InstanceFilter{}, "", 0); err != nil {
			return err
		}
		due, err = tx.Due(time.Unix(0, 1<<62), 0)
		return err
	})
	if len(all) != len(s.chk.clog) {
		s.failf("the store holds %d changes, %d were committed", len(all), len(s.chk.clog))
	}
	byInst := map[string][]fsm.Change{}
	for i, c := range all {
		if !sameChange(c, s.chk.clog[i]) || c.Seq != uint64(i+1) {
			s.failf("changelog position %d: stored %s, committed %s", i+1, changeString(c), changeString(s.chk.clog[i]))
		}
		if c.Instance != "" {
			byInst[c.Instance] = append(byInst[c.Instance], c)
		}
	}
	if len(list) != len(s.chk.order)+len(s.jobOrder) {
		s.failf("the store holds %d instances, the changelog started %d", len(list), len(s.chk.order)+len(s.jobOrder))
	}
	dueIDs := map[string]bool{}
	for _, d := range due {
		dueIDs[d.ID] = true
	}
	hists := make([][]fsm.Change, len(list))
	s.view(func(tx store.ReadTx) (err error) {
		for i, in := range list {
			if hists[i], err = tx.History(in.ID); err != nil {
				return err
			}
		}
		return nil
	})
	for i, in := range list {
		hist := hists[i]
		want := byInst[in.ID]
		if len(hist) != len(want) || in.Rev != uint64(len(instanceChanges(hist))) {
			s.failf("instance %s at rev %d: history of %d changes, the changelog has %d", in.ID, in.Rev, len(hist), len(want))
		}
		for i := range hist {
			if !sameChange(hist[i], want[i]) || hist[i].Seq != want[i].Seq {
				s.failf("instance %s: history entry %d is %s, the changelog says %s", in.ID, i, changeString(hist[i]), changeString(want[i]))
			}
		}
		if in.Machine != machineID {
			continue
		}
		s.checkInstance(in, due)
		delete(dueIDs, in.ID)
		holders := 0
		for _, a := range s.actors {
			for _, l := range a.leases {
				if in.Status == fsm.StatusLeased && l.id == in.ID && l.token == in.Lease.Token {
					holders++
				}
			}
		}
		if holders > 1 {
			s.failf("instance %s: %d workers hold its live lease", in.ID, holders)
		}
	}
	if len(dueIDs) > 0 {
		s.failf("due entries for unknown instances: %v", dueIDs)
	}
	for _, a := range s.chk.acks {
		s.checkAcked(a, instanceChanges(byInst[a.id]))
	}
}

// instanceChanges leaves out of a history the changes of devices that name
// the instance (a job): they do not count in its rev.
func instanceChanges(hist []fsm.Change) []fsm.Change {
	var out []fsm.Change
	for _, c := range hist {
		if !isDeviceChange(c) {
			out = append(out, c)
		}
	}
	return out
}

func (s *sim) checkAcked(a acked, hist []fsm.Change) {
	if a.kind == fsm.ChangeTransitioned {
		n := 0
		for _, c := range hist {
			if c.Kind == fsm.ChangeTransitioned && c.Token == a.token && c.Transition == a.name {
				n++
			}
		}
		if n != 1 {
			s.failf("acknowledged transition %s of %s with token %d is in its history %d times", a.name, a.id, a.token, n)
		}
		return
	}
	if uint64(len(hist)) < a.rev || hist[a.rev-1].Kind != a.kind || a.kind == fsm.ChangeLeased && hist[a.rev-1].Token != a.token {
		s.failf("acknowledged %s of %s (rev %d, token %d) lost: history %v", a.kind, a.id, a.rev, a.token, kinds(hist))
	}
}

// finalState writes the final store into the trace, so that the trace
// hash covers it.
func (s *sim) finalState() {
	var list []fsm.Instance
	var head uint64
	s.view(func(tx store.ReadTx) (err error) {
		if head, err = tx.Head(); err != nil {
			return err
		}
		list, err = tx.Instances(store.InstanceFilter{}, "", 0)
		return err
	})
	for _, in := range list {
		s.tracef("final %s v%d %s %s token=%d attempt=%d rev=%d", in.ID, in.Version, in.Node, in.Status, in.Token, in.Attempt, in.Rev)
	}
	s.tracef("final changelog head %d", head)
	s.res.Instances, s.res.Changes = len(list), head
	s.res.Snapshots, s.res.Rebuilds = s.log.snapshots, s.log.rebuilds
}

func sameChange(a, b fsm.Change) bool {
	return a.Seq == b.Seq && a.Kind == b.Kind && a.Instance == b.Instance && a.Machine == b.Machine && a.Version == b.Version &&
		a.Transition == b.Transition && a.FromNode == b.FromNode && a.ToNode == b.ToNode && a.FromStatus == b.FromStatus &&
		a.ToStatus == b.ToStatus && a.Token == b.Token && a.Attempt == b.Attempt && a.DueAt.Equal(b.DueAt) && a.At.Equal(b.At) &&
		a.Actor == b.Actor
}

func changeString(c fsm.Change) string {
	return fmt.Sprintf("#%d %s %s %s(%s)->%s(%s) %q token=%d attempt=%d", c.Seq, c.Kind, c.Instance, c.FromNode, c.FromStatus,
		c.ToNode, c.ToStatus, c.Transition, c.Token, c.Attempt)
}

// kinds lists the kinds of cs, the last 20 at most, for a failure message.
func kinds(cs []fsm.Change) []string {
	var out []string
	if len(cs) > 20 {
		out = append(out, fmt.Sprintf("(%d more)", len(cs)-20))
		cs = cs[len(cs)-20:]
	}
	for _, c := range cs {
		out = append(out, c.Kind.String())
	}
	return out
}

func finalNode(node string) bool {
	n := specMachine.Node(node)
	return n != nil && n.Final || node == fsm.NodeFailed || node == fsm.NodeAborted
}
