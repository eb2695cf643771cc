package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// StartArgs are the inputs of StartInstance.
type StartArgs struct {
	// ID is the idempotency key; empty lets the server choose one.
	ID string
	// Machine and Version (0: latest) select the definition.
	Machine string
	Version uint32
	// Params are the initial params.
	Params map[string]string
	// Priority orders READY instances, higher first.
	Priority int32
	// At, when set, starts the instance WAITING until then. Delay, when
	// positive, does the same relative to now. At most one may be set.
	At    time.Time
	Delay time.Duration
	// Actor is recorded in the changelog.
	Actor string
}

// StartInstance creates an instance, or returns the existing one when an
// instance with the same id and the same content exists (created is false).
// A same-id instance with other content is ErrAlreadyExists.
func (e *Engine) StartInstance(ctx context.Context, a StartArgs) (in fsm.Instance, created bool, err error) {
	if err := checkText("id", a.ID, false, MaxIDBytes); err != nil {
		return in, false, err
	}
	if err := checkText("machine", a.Machine, true, MaxIDBytes); err != nil {
		return in, false, err
	}
	if err := checkParams("params", a.Params); err != nil {
		return in, false, err
	}
	if !a.At.IsZero() && a.Delay != 0 {
		return in, false, invalid("start_delay", "set start_time or start_delay, not both")
	}
	if a.Delay < 0 || a.Delay > fsm.MaxDelay {
		return in, false, invalid("start_delay", "must be between 0 and %s", fsm.MaxDelay)
	}
	id := a.ID
	err = e.st.Update(ctx, func(tx store.Tx) error {
		created = false
		if a.ID == "" {
			id = e.newID(a.Machine)
		}
		old, err := tx.Instance(id)
		switch {
		case err == nil:
			// Only the first change: a long history is not read.
			hist, err := tx.HistoryFrom(id, 0, 1)
			if err != nil {
				return err
			}
			if diff := startDiff(old, hist, a); diff != "" {
				return fmt.Errorf("instance %q exists with another %s: %w", id, diff, ErrAlreadyExists)
			}
			in = old
			return nil
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		m, err := e.machineVersion(tx, a.Machine, a.Version)
		if err != nil {
			return err
		}
		if m.Kind == fsm.KindJob {
			return invalid("machine", "%q is a job machine: its jobs are created by DeviceService.SubmitOrder, on a device's queue", m.ID)
		}
		now := e.clock.Now()
		due := a.At
		if a.Delay > 0 {
			due = now.Add(a.Delay)
		}
		if due.After(now.Add(fsm.MaxDelay)) {
			return invalid("start_time", "is more than %s ahead", fsm.MaxDelay)
		}
		next, changes, err := fsm.Start(m, fsm.StartArgs{ID: id, Params: a.Params, Priority: a.Priority, DueAt: due}, now)
		if err != nil {
			return err
		}
		in, created = next, true
		return e.write(tx, next, changes, a.Actor)
	})
	return in, created, err
}

// startDiff names what differs between an existing instance and a start
// request with the same id. Params are compared with those the instance
// started with (its first change), not with what transitions merged in since.
// The start time is not compared, so that a retried start with a relative
// delay is still the same start.
func startDiff(old fsm.Instance, hist []fsm.Change, a StartArgs) string {
	var started map[string]string
	if len(hist) > 0 && hist[0].Kind == fsm.ChangeStarted {
		started = hist[0].Params
	}
	switch {
	case old.Machine != a.Machine:
		return fmt.Sprintf("machine (%q)", old.Machine)
	case a.Version != 0 && old.Version != a.Version:
		return fmt.Sprintf("version (%d)", old.Version)
	case old.Priority != a.Priority:
		return fmt.Sprintf("priority (%d)", old.Priority)
	case !maps.Equal(started, a.Params) && (len(started) > 0 || len(a.Params) > 0):
		return "params"
	}
	return ""
}

// readChunk is how many records a paged read takes from the store at a
// time. A caller that stops early (its response is full) has had at most
// readChunk records more in memory than it kept: with instances of up to
// 64 params of 4 KiB, about 4 MiB.
const readChunk = 16

// GetInstance returns an instance.
func (e *Engine) GetInstance(ctx context.Context, id string) (in fsm.Instance, err error) {
	if err := checkText("id", id, true, MaxIDBytes); err != nil {
		return in, err
	}
	err = e.st.View(ctx, func(tx store.ReadTx) error {
		var err error
		if in, err = tx.Instance(id); err != nil {
			return wrap(err, "instance %q", id)
		}
		return nil
	})
	return in, err
}

// MaxHistory is the most changes one GetInstance history page holds
// (Options.MaxHistory).
func (e *Engine) MaxHistory() int { return e.maxHistory }

// InstanceHistory returns instance id and calls add with its changes with
// Seq >= from, oldest first, until add returns false or the history ends.
// next is the seq to resume from, the first change add refused; 0 when
// add saw the newest change. The changes are read readChunk at a time, so
// a long history costs only the page the caller keeps.
func (e *Engine) InstanceHistory(ctx context.Context, id string, from uint64, add func(fsm.Change) bool) (in fsm.Instance, next uint64, err error) {
	if err := checkText("id", id, true, MaxIDBytes); err != nil {
		return in, 0, err
	}
	err = e.st.View(ctx, func(tx store.ReadTx) error {
		next = 0
		var err error
		if in, err = tx.Instance(id); err != nil {
			return fmt.Errorf("instance %q: %w", id, err)
		}
		for seq := from; ; {
			chunk, err := tx.HistoryFrom(id, seq, readChunk)
			if err != nil {
				return err
			}
			for _, c := range chunk {
				if !add(c) {
					next = c.Seq
					return nil
				}
			}
			if len(chunk) < readChunk {
				return nil
			}
			seq = chunk[len(chunk)-1].Seq + 1
		}
	})
	return in, next, err
}

// ListInstances calls add with each instance matching f whose id sorts
// after after, in id order, until add returns false or none is left. The
// instances are read readChunk at a time, so the caller bounds what is in
// memory by what it keeps.
func (e *Engine) ListInstances(ctx context.Context, f store.InstanceFilter, after string, add func(fsm.Instance) bool) error {
	if f.Node != "" && f.Machine == "" {
		return invalid("node", "filtering by node needs a machine")
	}
	return e.st.View(ctx, func(tx store.ReadTx) error {
		for {
			chunk, err := tx.Instances(f, after, readChunk)
			if err != nil {
				return err
			}
			for _, in := range chunk {
				if !add(in) {
					return nil
				}
			}
			if len(chunk) < readChunk {
				return nil
			}
			after = chunk[len(chunk)-1].ID
		}
	})
}

// SignalInstance applies a signal transition; it needs no lease.
func (e *Engine) SignalInstance(ctx context.Context, id, name string, params map[string]string, actor string) (fsm.Instance, error) {
	if err := checkText("signal", name, true, MaxIDBytes); err != nil {
		return fsm.Instance{}, err
	}
	if err := checkParams("params", params); err != nil {
		return fsm.Instance{}, err
	}
	return e.applyTo(ctx, id, actor, func(*fsm.Machine, fsm.Instance) fsm.Event {
		return fsm.Signal{Name: name, Params: params, Jitter: e.jitter()}
	})
}

// CancelInstance ends an instance in dfsmr.aborted; a job its device holds
// takes its machine's cancel signal instead (see cancelEvent).
func (e *Engine) CancelInstance(ctx context.Context, id, reason, actor string) (fsm.Instance, error) {
	if err := checkReason(reason); err != nil {
		return fsm.Instance{}, err
	}
	return e.cancelInstance(ctx, id, reason, actor)
}

// applyTo loads instance id, applies the event ev builds from its machine
// and current state, and commits.
func (e *Engine) applyTo(ctx context.Context, id, actor string, ev func(*fsm.Machine, fsm.Instance) fsm.Event) (fsm.Instance, error) {
	return e.updateInstance(ctx, id, func(tx store.Tx, m *fsm.Machine, in fsm.Instance, now time.Time) (out fsm.Instance, err error) {
		err = e.apply(tx, m, in, ev(m, in), now, actor, &out)
		return out, err
	})
}

// updateInstance loads instance id and its machine, runs op with the
// transaction and the clock value of the operation, and commits. op returns
// the new instance.
func (e *Engine) updateInstance(ctx context.Context, id string, op func(tx store.Tx, m *fsm.Machine, in fsm.Instance, now time.Time) (fsm.Instance, error)) (out fsm.Instance, err error) {
	if err := checkText("id", id, true, MaxIDBytes); err != nil {
		return out, err
	}
	err = e.st.Update(ctx, func(tx store.Tx) error {
		in, err := tx.Instance(id)
		if err != nil {
			return wrap(err, "instance %q", id)
		}
		m, err := e.machineVersion(tx, in.Machine, in.Version)
		if err != nil {
			return err
		}
		out, err = op(tx, m, in, e.clock.Now())
		return err
	})
	return out, err
}
