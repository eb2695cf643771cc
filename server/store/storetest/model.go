package storetest

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// state is everything a store shows, read in one snapshot.
type state struct {
	Instances []fsm.Instance
	Ready     map[store.ReadyFilter][]string
	Due       []store.Due
	Head      uint64
	Changes   []fsm.Change
	History   map[string][]fsm.Change
	Machines  []store.MachineRecord
	Versions  map[string][]store.MachineRecord
	// Oldest is OldestChange (0 when none); Finished lists every FINAL
	// instance in the order Finished returns them.
	Oldest   uint64
	Finished []string
}

// snapshot reads the whole visible state of st.
func snapshot(t testing.TB, st store.Store) state {
	t.Helper()
	s := state{
		Ready:    map[store.ReadyFilter][]string{},
		History:  map[string][]fsm.Change{},
		Versions: map[string][]store.MachineRecord{},
	}
	view(t, st, func(tx store.ReadTx) error {
		ins, err := tx.Instances(store.InstanceFilter{}, "", 0)
		if err != nil {
			return err
		}
		s.Instances = normAll(ins)
		filters := []store.ReadyFilter{{}}
		for _, in := range ins {
			filters = append(filters, store.ReadyFilter{Machine: in.Machine}, store.ReadyFilter{Machine: in.Machine, Node: in.Node})
		}
		for _, f := range filters {
			ids, err := tx.Ready(f, 0)
			if err != nil {
				return err
			}
			if len(ids) > 0 {
				s.Ready[f] = ids
			} else {
				s.Ready[f] = nil
			}
		}
		ds, err := tx.Due(farFuture, 0)
		if err != nil {
			return err
		}
		s.Due = normDues(ds)
		if s.Head, err = tx.Head(); err != nil {
			return err
		}
		cs, err := tx.Changes(0, 0)
		if err != nil {
			return err
		}
		s.Changes = normChanges(cs)
		if s.Oldest, _, err = tx.OldestChange(); err != nil {
			return err
		}
		if s.Finished, err = tx.Finished(farFuture, 0); err != nil {
			return err
		}
		ids := map[string]bool{}
		for _, in := range ins {
			ids[in.ID] = true
		}
		for _, c := range cs {
			ids[c.Instance] = true
		}
		for id := range ids {
			h, err := tx.History(id)
			if err != nil {
				return err
			}
			if len(h) > 0 {
				s.History[id] = normChanges(h)
			}
		}
		ms, err := tx.Machines("", 0)
		if err != nil {
			return err
		}
		for _, m := range ms {
			s.Machines = append(s.Machines, normMachine(m))
			vs, err := tx.MachineVersions(m.ID)
			if err != nil {
				return err
			}
			for _, v := range vs {
				s.Versions[m.ID] = append(s.Versions[m.ID], normMachine(v))
			}
		}
		return nil
	})
	return s
}

// model is the in-memory reference a store is compared with.
type model struct {
	instances map[string]fsm.Instance
	// changes are those retention kept; head is the last seq assigned.
	changes []fsm.Change
	head    uint64
	// history holds the seqs of each instance's history entries.
	history  map[string][]uint64
	machines map[string][]store.MachineRecord
}

func newModel() *model {
	return &model{instances: map[string]fsm.Instance{}, history: map[string][]uint64{}, machines: map[string][]store.MachineRecord{}}
}

func (m *model) clone() *model {
	c := &model{
		instances: maps.Clone(m.instances),
		changes:   slices.Clone(m.changes),
		head:      m.head,
		history:   map[string][]uint64{},
		machines:  map[string][]store.MachineRecord{},
	}
	for id, seqs := range m.history {
		c.history[id] = slices.Clone(seqs)
	}
	for id, vs := range m.machines {
		c.machines[id] = slices.Clone(vs)
	}
	return c
}

// appendChange numbers c as the store must and records it.
func (m *model) appendChange(c fsm.Change) fsm.Change {
	m.head++
	c.Seq = m.head
	m.changes = append(m.changes, c)
	if c.Instance != "" {
		m.history[c.Instance] = append(m.history[c.Instance], c.Seq)
	}
	return c
}

// trim is TrimChanges on the model; it returns how many went.
func (m *model) trim(keepFrom uint64, before time.Time, limit int) int {
	n := 0
	for len(m.changes) > 0 && (limit == 0 || n < limit) {
		c := m.changes[0]
		if c.Seq >= keepFrom && store.UnixNanos(c.At) >= store.UnixNanos(before) {
			break
		}
		m.changes = m.changes[1:]
		if c.Instance != "" {
			m.history[c.Instance] = slices.DeleteFunc(m.history[c.Instance], func(s uint64) bool { return s == c.Seq })
		}
		n++
	}
	return n
}

// deleteInstance is DeleteInstance on the model.
func (m *model) deleteInstance(id string) {
	delete(m.instances, id)
	delete(m.history, id)
}

// state computes what a store holding the model must show.
func (m *model) state() state {
	s := state{
		Ready:    map[store.ReadyFilter][]string{},
		History:  map[string][]fsm.Change{},
		Versions: map[string][]store.MachineRecord{},
		Head:     m.head,
		Changes:  normChanges(m.changes),
	}
	if len(m.changes) > 0 {
		s.Oldest = m.changes[0].Seq
	}
	for _, id := range slices.Sorted(maps.Keys(m.instances)) {
		s.Instances = append(s.Instances, norm(m.instances[id]))
	}
	var ready []fsm.Instance
	for _, in := range s.Instances {
		if in.Status == fsm.StatusReady {
			ready = append(ready, in)
		}
		if at, ok := in.DueTime(); ok {
			s.Due = append(s.Due, store.Due{At: at, ID: in.ID})
		}
	}
	slices.SortFunc(ready, func(a, b fsm.Instance) int {
		return cmp.Or(
			cmp.Compare(b.Priority, a.Priority),
			cmp.Compare(store.UnixNanos(a.DueAt), store.UnixNanos(b.DueAt)),
			cmp.Compare(a.ID, b.ID))
	})
	slices.SortFunc(s.Due, func(a, b store.Due) int {
		return cmp.Or(cmp.Compare(store.UnixNanos(a.At), store.UnixNanos(b.At)), cmp.Compare(a.ID, b.ID))
	})
	filters := []store.ReadyFilter{{}}
	for _, in := range s.Instances {
		filters = append(filters, store.ReadyFilter{Machine: in.Machine}, store.ReadyFilter{Machine: in.Machine, Node: in.Node})
	}
	for _, f := range filters {
		var ids []string
		for _, in := range ready {
			if (f.Machine == "" || in.Machine == f.Machine) && (f.Node == "" || in.Node == f.Node) {
				ids = append(ids, in.ID)
			}
		}
		s.Ready[f] = ids
	}
	for _, c := range s.Changes {
		if c.Instance != "" && slices.Contains(m.history[c.Instance], c.Seq) {
			s.History[c.Instance] = append(s.History[c.Instance], c)
		}
	}
	var finished []fsm.Instance
	for _, in := range s.Instances {
		if in.Status == fsm.StatusFinal && store.UnixNanos(in.UpdatedAt) < store.UnixNanos(farFuture) {
			finished = append(finished, in)
		}
	}
	slices.SortStableFunc(finished, func(a, b fsm.Instance) int {
		return cmp.Compare(store.UnixNanos(a.UpdatedAt), store.UnixNanos(b.UpdatedAt))
	})
	for _, in := range finished {
		s.Finished = append(s.Finished, in.ID)
	}
	for _, id := range slices.Sorted(maps.Keys(m.machines)) {
		vs := m.machines[id]
		for _, v := range vs {
			s.Versions[id] = append(s.Versions[id], normMachine(v))
		}
		s.Machines = append(s.Machines, normMachine(vs[len(vs)-1]))
	}
	return s
}

// Random values with many ties, so that orderings are exercised.
var (
	modelIDs      = []string{"a", "ab", "b", "c", "c0", "d", "e", "f", "g", "h", "i", "j"}
	modelMachines = []string{"m", "m2", "mx"}
	modelNodes    = []string{"n", "n2", "nx"}
	modelPrios    = []int32{math.MinInt32, -2, -1, 0, 0, 0, 1, 2, math.MaxInt32}
	modelTimes    = []time.Time{
		{}, time.Unix(-3600, 0), time.Unix(0, 0), base, base, base.Add(time.Nanosecond),
		base.Add(time.Second), base.Add(time.Hour), time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	modelStatuses = []fsm.Status{fsm.StatusWaiting, fsm.StatusReady, fsm.StatusReady, fsm.StatusLeased, fsm.StatusHeld, fsm.StatusFinal}
)

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

// randomSuccessor returns a new state for id that the store must accept
// after old (nil when new): FINAL instances are left alone by the caller,
// tokens never go down.
func randomSuccessor(r *rand.Rand, id string, old *fsm.Instance) fsm.Instance {
	in := fsm.Instance{
		ID: id, Machine: pick(r, modelMachines), Version: uint32(r.IntN(3) + 1),
		Node: pick(r, modelNodes), Status: pick(r, modelStatuses),
		Priority: pick(r, modelPrios), Attempt: int32(r.IntN(4)),
		DueAt: pick(r, modelTimes), Rev: 1,
		CreatedAt: pick(r, modelTimes), UpdatedAt: pick(r, modelTimes),
	}
	if old != nil {
		in.Token, in.Rev, in.CreatedAt = old.Token, old.Rev+1, old.CreatedAt
		if r.IntN(3) > 0 { // mostly keep machine and node: the common case
			in.Machine, in.Node = old.Machine, old.Node
		}
	}
	if in.Status == fsm.StatusLeased {
		in.Token += uint64(r.IntN(2))
		in.Lease = fsm.Lease{Token: in.Token, Worker: "w", AcquiredAt: pick(r, modelTimes)}
		if r.IntN(3) > 0 {
			in.Lease.ExpiresAt = pick(r, modelTimes[1:])
		}
	}
	if n := r.IntN(3); n > 0 {
		in.Params = map[string]string{}
		for k := range n {
			in.Params[fmt.Sprint("k", k)] = fmt.Sprint(r.IntN(100))
		}
	}
	return in
}

func randomChange(r *rand.Rand, instance, reason string) fsm.Change {
	c := change(instance, pick(r, []fsm.ChangeKind{fsm.ChangeStarted, fsm.ChangeLeased, fsm.ChangeTransitioned}), reason)
	c.At = pick(r, modelTimes)
	c.DueAt = pick(r, modelTimes)
	c.Token = r.Uint64N(10)
	if r.IntN(2) == 0 {
		c.Params = nil
	}
	return c
}

// model runs random operations against a store and the model and compares
// them after each one.
func (s *suite) model(t *testing.T) {
	sd := seed(t)
	r := newRand(sd)
	st, cfg := s.mustOpen(t, Config{})
	m := newModel()
	steps := 300
	if testing.Short() {
		steps = 80
	}
	for step := range steps {
		var (
			desc string
			next = m.clone()
			fn   func(tx store.Tx) error
			want error // nil: must succeed and next becomes the model
		)
		// The random draws happen here, once: fn must be a function of the
		// transaction only, because the store may run it more than once.
		switch op := r.IntN(100); {
		case op < 44:
			desc = "put"
			fn = sequence(planPuts(r, next, "model"))
		case op < 47:
			desc = "trim changes"
			keepFrom := uint64(r.IntN(int(m.head) + 2))
			var before time.Time
			if r.IntN(2) == 0 {
				before = pick(r, modelTimes)
			}
			limit := r.IntN(4)
			n := next.trim(keepFrom, before, limit)
			fn = func(tx store.Tx) error {
				got, err := tx.TrimChanges(keepFrom, before, limit)
				if err == nil && got != n {
					err = fmt.Errorf("TrimChanges(%d, %v, %d) deleted %d, want %d", keepFrom, before, limit, got, n)
				}
				return err
			}
		case op < 50:
			desc = "delete finished instance"
			var final string
			for _, id := range modelIDs {
				if in, ok := m.instances[id]; ok && in.Status == fsm.StatusFinal {
					final = id
					break
				}
			}
			if final == "" {
				continue
			}
			next.deleteInstance(final)
			fn = func(tx store.Tx) error { return tx.DeleteInstance(final) }
		case op < 62:
			desc = "failing update"
			scratch := m.clone()
			fn = sequence(append(planPuts(r, scratch, "fail"), func(store.Tx) error { return errBoom }))
			next, want = m, errBoom
		case op < 67:
			desc = "panicking update"
			scratch := m.clone()
			fn = sequence(append(planPuts(r, scratch, "fail"), func(store.Tx) error { panic("model panic") }))
			next, want = m, errPanicked
		case op < 77:
			desc = "machine change"
			c := randomChange(r, "", "")
			c.Kind = fsm.ChangeMachineDefined
			c = next.appendChange(c)
			fn = func(tx store.Tx) error {
				seq, err := tx.AppendChange(c)
				if err == nil && seq != c.Seq {
					err = fmt.Errorf("AppendChange assigned %d, want %d", seq, c.Seq)
				}
				return err
			}
		case op < 85:
			desc = "put machine"
			id := pick(r, modelMachines)
			rec := machine(id, uint32(len(next.machines[id])+1))
			rec.DefinedAt = pick(r, modelTimes)
			next.machines[id] = append(next.machines[id], rec)
			fn = func(tx store.Tx) error { return tx.PutMachine(rec) }
		case op < 92:
			desc = "invariant violation"
			var final *fsm.Instance
			for _, id := range modelIDs {
				if in, ok := m.instances[id]; ok && in.Status == fsm.StatusFinal {
					final = &in
					break
				}
			}
			if final == nil {
				continue
			}
			changed := *final
			changed.Status, changed.Rev = fsm.StatusReady, final.Rev+1
			fn = func(tx store.Tx) error { return tx.PutInstance(changed) }
			next, want = m, errInvariant
		default:
			desc = "read-only failure"
			fn = func(tx store.Tx) error {
				if _, err := tx.Instances(store.InstanceFilter{}, "", 0); err != nil {
					return err
				}
				return errBoom
			}
			next, want = m, errBoom
		}

		err := st.Update(ctx, fn)
		switch {
		case want == nil && err != nil:
			t.Fatalf("step %d (%s): %v", step, desc, err)
		case want == errPanicked && err == nil,
			want == errInvariant && !isInvariant(err),
			want == errBoom && !errors.Is(err, errBoom):
			t.Fatalf("step %d (%s): err %v, want %v", step, desc, err, want)
		}
		m = next
		compare(t, fmt.Sprintf("step %d (%s)", step, desc), st, m, r)

		if step%97 == 96 {
			st = s.reopenStore(t, st, cfg)
			compare(t, fmt.Sprintf("step %d (reopen)", step), st, m, r)
		}
	}
}

var (
	errPanicked  = errors.New("a panic")
	errInvariant = errors.New("an invariant error")
)

// planPuts draws the writes of one update now: 1-3 instances, each with
// 0-2 changes, applied to next at once and returned as functions that
// replay exactly those writes. The store may run an update function more
// than once, so it must not draw anything itself.
func planPuts(r *rand.Rand, next *model, reason string) []func(store.Tx) error {
	var ops []func(store.Tx) error
	for range 1 + r.IntN(3) {
		id := pick(r, modelIDs)
		old, exists := next.instances[id]
		if exists && old.Status == fsm.StatusFinal {
			continue
		}
		var in fsm.Instance
		if exists {
			in = randomSuccessor(r, id, &old)
		} else {
			in = randomSuccessor(r, id, nil)
		}
		next.instances[id] = in.Clone()
		ops = append(ops, func(tx store.Tx) error { return tx.PutInstance(in) })
		for range r.IntN(3) {
			c := next.appendChange(randomChange(r, id, reason))
			ops = append(ops, func(tx store.Tx) error {
				seq, err := tx.AppendChange(c)
				if err == nil && seq != c.Seq {
					err = fmt.Errorf("AppendChange assigned %d, want %d", seq, c.Seq)
				}
				return err
			})
		}
	}
	return ops
}

func sequence(ops []func(store.Tx) error) func(store.Tx) error {
	return func(tx store.Tx) error {
		for _, op := range ops {
			if err := op(tx); err != nil {
				return err
			}
		}
		return nil
	}
}

// compare checks the store against the model, with a few random paged
// and bounded reads on top of the full snapshot.
func compare(t *testing.T, what string, st store.Store, m *model, r *rand.Rand) {
	t.Helper()
	want := m.state()
	got := snapshot(t, st)
	if !reflect.DeepEqual(got, want) {
		diffState(t, what, got, want)
	}
	f := store.InstanceFilter{}
	if r.IntN(2) == 0 {
		f.Machine = pick(r, modelMachines)
	}
	if r.IntN(2) == 0 {
		f.Node = pick(r, modelNodes)
	}
	if r.IntN(2) == 0 {
		f.Status = pick(r, modelStatuses)
	}
	var wantIns []fsm.Instance
	for _, in := range want.Instances {
		if (f.Machine == "" || in.Machine == f.Machine) && (f.Node == "" || in.Node == f.Node) && (f.Status == 0 || in.Status == f.Status) {
			wantIns = append(wantIns, in)
		}
	}
	equal(t, what+fmt.Sprintf(": Instances(%+v) paged", f), nonNil(listInstances(t, st, f, 1+r.IntN(4))), nonNil(wantIns))

	before := pick(r, modelTimes)
	limit := r.IntN(4)
	var wantDue []store.Due
	for _, d := range want.Due {
		if store.UnixNanos(d.At) <= store.UnixNanos(before) && (limit == 0 || len(wantDue) < limit) {
			wantDue = append(wantDue, d)
		}
	}
	view(t, st, func(tx store.ReadTx) error {
		ds, err := tx.Due(before, limit)
		if err != nil {
			return err
		}
		equal(t, fmt.Sprintf("%s: Due(%v, %d)", what, before, limit), nonNil(normDues(ds)), nonNil(wantDue))
		d, ok, err := tx.NextDue()
		if err != nil {
			return err
		}
		if ok != (len(want.Due) > 0) || (ok && normDues([]store.Due{d})[0] != want.Due[0]) {
			t.Fatalf("%s: NextDue = %+v, %v; want %+v", what, d, ok, want.Due)
		}
		from := uint64(r.IntN(int(want.Head) + 2))
		cs, err := tx.Changes(from, limit)
		if err != nil {
			return err
		}
		var wantCs []fsm.Change
		for _, c := range want.Changes {
			if c.Seq >= from && (limit == 0 || len(wantCs) < limit) {
				wantCs = append(wantCs, c)
			}
		}
		equal(t, fmt.Sprintf("%s: Changes(%d, %d)", what, from, limit), nonNil(normChanges(cs)), nonNil(wantCs))
		return nil
	})
}

func diffState(t *testing.T, what string, got, want state) {
	t.Helper()
	equal(t, what+": instances", got.Instances, want.Instances)
	equal(t, what+": ready", got.Ready, want.Ready)
	equal(t, what+": due", got.Due, want.Due)
	equal(t, what+": head", got.Head, want.Head)
	equal(t, what+": changes", got.Changes, want.Changes)
	equal(t, what+": history", got.History, want.History)
	equal(t, what+": machines", got.Machines, want.Machines)
	equal(t, what+": versions", got.Versions, want.Versions)
	equal(t, what+": oldest change", got.Oldest, want.Oldest)
	equal(t, what+": finished", got.Finished, want.Finished)
	t.Fatalf("%s: states differ", what)
}
