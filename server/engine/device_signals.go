package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// SignalCancel is the signal a job machine may declare for CancelInstance
// on a job its device holds: instead of ending the job at once, the device
// is told to stop, and the job ends once it reported it did.
const SignalCancel = "cancel"

// SignalDevice records an operator's signal on device id: a transition
// marked signal in its device machine, out of the node the device last
// reported. The next round of the device sends it as a command (the signal
// is the device's pending command, not sent yet: Seq 0); the commit pokes
// the device's session, so an online device gets it at once. The change
// is a SIGNALED change of the device (no instance), under actor. While
// another command sent in the same node is unanswered the signal is
// refused (the device's next report is checked against that command); the
// same signal, sent already, is a no-op.
func (e *Engine) SignalDevice(ctx context.Context, id, name, actor string) (fsm.Device, error) {
	if err := checkText("device_id", id, true, MaxIDBytes); err != nil {
		return fsm.Device{}, err
	}
	if err := checkText("signal", name, true, MaxIDBytes); err != nil {
		return fsm.Device{}, err
	}
	var d fsm.Device
	err := e.st.Update(ctx, func(tx store.Tx) error {
		var err error
		if d, err = tx.Device(id); err != nil {
			return err
		}
		m, err := e.deviceMachine(tx, d.Machine)
		if err != nil {
			return err
		}
		n := m.Node(d.Node)
		var t *fsm.Transition
		if n != nil {
			t = n.Transitions[name]
		}
		if t == nil || !t.Signal {
			return fmt.Errorf("device %q in node %q has no signal %q (its signals there: %v): %w",
				id, d.Node, name, deviceSignals(n), fsm.ErrIllegalTransition)
		}
		if p := d.Pending; p.Seq != 0 && p.Node == d.Node && (p.Name != name || p.Job != d.Job) {
			// The device may be carrying it out: its report must be
			// checked against it, so it stays the pending command.
			return fmt.Errorf("device %q has command %s (seq %d) outstanding; signal %s once it answered: %w",
				id, p.Name, p.Seq, name, fsm.ErrIllegalTransition)
		}
		if p := d.Pending; p.Seq != 0 && p.Name == name && p.Node == d.Node {
			return nil // sent already: the same signal again is a no-op
		}
		now := e.clock.Now()
		d.Pending = fsm.Command{Name: name, Node: d.Node, Job: d.Job}
		if err := tx.PutDevice(d); err != nil {
			return err
		}
		_, err = tx.AppendChange(fsm.Change{At: now, Actor: actor, Kind: fsm.ChangeSignaled, Device: id,
			Machine: m.ID, Version: m.Version, Transition: name, FromNode: d.Node, ToNode: t.To})
		return err
	})
	return d, err
}

// deviceSignals lists the signal transitions of a device node.
func deviceSignals(n *fsm.Node) []string {
	var out []string
	if n == nil {
		return out
	}
	for _, name := range n.Order {
		if n.Transitions[name].Signal {
			out = append(out, name)
		}
	}
	return out
}

// cancelEvent is the event of CancelInstance on in: the cancel signal of
// its job machine when its device holds it (the device must stop first;
// a node without that signal refuses the cancel), else the system cancel
// (dfsmr.aborted).
func (e *Engine) cancelEvent(tx store.ReadTx, m *fsm.Machine, in fsm.Instance, reason string) (fsm.Event, error) {
	cancel := fsm.Event(fsm.Cancel{Reason: reason})
	dev := in.Params[JobParamDevice]
	if m.Kind != fsm.KindJob || dev == "" || in.Status == fsm.StatusFinal {
		return cancel, nil
	}
	d, err := tx.Device(dev)
	if err != nil {
		return nil, fmt.Errorf("printer %q of job %q: %w", dev, in.ID, err)
	}
	if d.Job != in.ID {
		return cancel, nil
	}
	if t := m.Node(in.Node).Transitions[SignalCancel]; t == nil || !t.Signal {
		// Ending it behind the printer's back would leave the printer
		// holding a job the server no longer knows.
		return nil, fmt.Errorf("job %q is held by printer %q in node %q, which has no %s signal: %w",
			in.ID, dev, in.Node, SignalCancel, fsm.ErrIllegalTransition)
	}
	var params map[string]string
	if reason != "" {
		params = map[string]string{"cancel_reason": reason}
	}
	return fsm.Signal{Name: SignalCancel, Params: params, Jitter: e.jitter()}, nil
}

// cancelInstance is CancelInstance's operation.
func (e *Engine) cancelInstance(ctx context.Context, id, reason, actor string) (fsm.Instance, error) {
	return e.updateInstance(ctx, id, func(tx store.Tx, m *fsm.Machine, in fsm.Instance, now time.Time) (out fsm.Instance, err error) {
		ev, err := e.cancelEvent(tx, m, in, reason)
		if err != nil {
			return out, err
		}
		err = e.apply(tx, m, in, ev, now, actor, &out)
		return out, err
	})
}
