package sim

import (
	"context"
	"errors"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// Errors the fault store injects. The engine passes them up; the simulator
// treats the call as ambiguous (it may or may not have taken effect).
var (
	errInjected = errors.New("sim: injected store failure")
	errCrashed  = errors.New("sim: server crashed")
)

// fault is what the fault store does to one Update.
type fault uint8

const (
	faultNone        fault = iota
	faultFailBefore        // fail without committing
	faultFailAfter         // commit, then report a failure (an ambiguous ack)
	faultCrashBefore       // the process dies before the commit
	faultCrashAfter        // the process dies after the commit, before the reply
)

var faultNames = [...]string{"none", "fail-before-commit", "fail-after-commit", "crash-before-commit", "crash-after-commit"}

func (f fault) String() string { return faultNames[f] }

// Bugs are deliberate defects the simulator can build into the server, to
// prove that its checks catch them.
type Bugs struct {
	// SplitChangelog commits an operation's changelog entries in a second
	// transaction after its state, instead of in the same one: a crash or
	// a failed commit in between loses them.
	SplitChangelog bool
	// StaleTokens replaces the fencing token a worker presents with the
	// live lease's token before the engine sees it, so a stale token takes
	// effect.
	StaleTokens bool
	// ForgetDeviceJob writes a device's record without its job: the
	// server forgets which job a printer holds once it dispatched it.
	ForgetDeviceJob bool
}

// faultStore wraps the real store. While armed it asks pick what to do to
// each Update; after a crash every call fails until the simulator restarts
// the server with a new store.
type faultStore struct {
	inner store.Store
	pick  func() fault
	armed bool
	dead  bool
	bugs  Bugs
	// last is the fault applied to the latest Update, for the trace.
	last fault
}

var _ store.Store = (*faultStore)(nil)

func (f *faultStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	if f.dead {
		return errCrashed
	}
	if !f.bugs.SplitChangelog {
		return f.update(ctx, fn)
	}
	var buffered []fsm.Change
	err := f.update(ctx, func(tx store.Tx) error {
		buffered = buffered[:0]
		return fn(&splitTx{Tx: tx, changes: &buffered})
	})
	if err != nil || len(buffered) == 0 {
		return err
	}
	return f.update(ctx, func(tx store.Tx) error {
		for _, c := range buffered {
			if _, err := tx.AppendChange(c); err != nil {
				return err
			}
		}
		return nil
	})
}

func (f *faultStore) update(ctx context.Context, fn func(store.Tx) error) error {
	f.last = faultNone
	if f.armed {
		f.last = f.pick()
	}
	switch f.last {
	case faultFailBefore:
		return errInjected
	case faultCrashBefore:
		f.dead = true
		return errCrashed
	}
	if f.bugs.ForgetDeviceJob {
		inner := fn
		fn = func(tx store.Tx) error { return inner(forgetTx{tx}) }
	}
	if err := f.inner.Update(ctx, fn); err != nil {
		return err
	}
	switch f.last {
	case faultFailAfter:
		return errInjected
	case faultCrashAfter:
		f.dead = true
		return errCrashed
	}
	return nil
}

func (f *faultStore) View(ctx context.Context, fn func(store.ReadTx) error) error {
	if f.dead {
		return errCrashed
	}
	return f.inner.View(ctx, fn)
}

func (f *faultStore) Close() error { return f.inner.Close() }

// splitTx is the SplitChangelog bug: it holds changelog entries back from
// the transaction that wrote the state they describe.
type splitTx struct {
	store.Tx
	changes *[]fsm.Change
}

func (t *splitTx) AppendChange(c fsm.Change) (uint64, error) {
	*t.changes = append(*t.changes, c)
	return 0, nil
}

// forgetTx is the ForgetDeviceJob bug: it drops the job from every device
// record it writes.
type forgetTx struct{ store.Tx }

func (t forgetTx) PutDevice(d fsm.Device) error {
	d.Job = ""
	return t.Tx.PutDevice(d)
}
