package fsm

import (
	"errors"
	"fmt"
	"maps"
	"time"
)

// DeviceReport is one message of a device: its own view of its state.
type DeviceReport struct {
	// Seq grows with every report of a stream.
	Seq uint64
	// Node is the device's node in its device machine.
	Node string
	// Job is the job the device holds; empty when none.
	Job string
	// Progress of Job in [0, 1].
	Progress float64
	// Rejection, when set, says the device refused a command.
	Rejection *Rejection
	// LastCommand is the seq of the last command the device carried out,
	// kept by the device across power cuts; 0 when it never carried one
	// out or does not keep count. It tells a lost command (seq above
	// LastCommand: send it again) from a forgotten job (the command was
	// carried out, yet the device no longer holds the job).
	LastCommand uint64
}

// Rejection is a device's refusal of a command that no longer matched its
// state.
type Rejection struct {
	CommandSeq uint64
	Reason     string
}

// ReconcileInput is everything one round of Reconcile looks at.
type ReconcileInput struct {
	// Machine is the device machine, with its reconcile table.
	Machine *Machine
	// Device is the stored record before the round. A device seen for the
	// first time has an empty Node.
	Device Device
	// Report is the device's message; nil for a round the server runs on
	// its own (a new job, an operator signal), which works from the stored
	// node.
	Report *DeviceReport
	// First marks the first report of a new stream: its seq may start
	// anywhere.
	First bool
	// Job is the device's current job (Device.Job) and JobMachine its
	// machine version; nil when the device has none.
	Job        *Instance
	JobMachine *Machine
	// Head is the first job of the device's queue (not final) and
	// HeadMachine its machine version; nil when the queue is empty.
	Head        *Instance
	HeadMachine *Machine
	// Now is the clock value of the round.
	Now time.Time
}

// DeviceCommand is what a round tells the device to do: the Command, with
// what the device needs to carry it out.
type DeviceCommand struct {
	Command
	// Params are the job's params (the model to print).
	Params map[string]string
}

// ReconcileDecision is the outcome of one round of Reconcile, for the
// engine to write in the round's transaction.
type ReconcileDecision struct {
	// Device is the device's new record.
	Device Device
	// Jobs are the new states of the jobs the round moved, in order.
	Jobs []Instance
	// Dispatched is set when the queue head became the device's job: the
	// engine removes it from the queue.
	Dispatched bool
	// Command is the command to send; nil when there is none.
	Command *DeviceCommand
	// Changes are the changes to append, in order (Actor and Seq unset).
	Changes []Change
}

// MoveError is a report of a node the device cannot have reached from the
// node the server knows: not by transitions it takes on its own, nor by
// the last command sent to it. It unwraps to ErrIllegalTransition.
type MoveError struct {
	Device   string
	From, To string
	Reason   string
}

func (e *MoveError) Error() string {
	return fmt.Sprintf("device %q cannot move from %q to %q: %s", e.Device, e.From, e.To, e.Reason)
}

// Unwrap makes errors.Is(err, ErrIllegalTransition) true.
func (e *MoveError) Unwrap() error { return ErrIllegalTransition }

// errReconcileInvariant reports a broken precondition of Reconcile: a bug
// in the caller, never a device's mistake.
var errReconcileInvariant = errors.New("device round invariant broken")

// Reconcile runs one round of a device's reactive loop: given what the
// device reports, what the store knows about it (its record, its current
// job, the head of its queue), the device machine's reconcile table and
// the time, it returns the round's decisions as data: the device's new
// record, the job transitions to record, the command to send (at most
// one) and the changes to append. It does no IO; the engine runs it inside
// one store transaction.
//
// It returns an error and no decision when the report is invalid
// (*InvalidError) or describes a move the device machine does not allow
// (*MoveError).
func Reconcile(in ReconcileInput) (ReconcileDecision, error) {
	m := in.Machine
	if m == nil || m.Reconcile == nil {
		return ReconcileDecision{}, fmt.Errorf("%w: machine without a reconcile table", errReconcileInvariant)
	}
	r := &round{in: in, tab: m.Reconcile, d: in.Device.Clone(), from: in.Device.Node, sent: in.Device.Pending}
	if in.Report != nil {
		if err := r.report(*in.Report); err != nil {
			return ReconcileDecision{}, err
		}
	}
	if err := r.reconcile(); err != nil {
		return ReconcileDecision{}, err
	}
	if r.cmd == nil && !r.stop {
		r.signal()
	}
	return r.out(), nil
}

type round struct {
	in ReconcileInput
	// from and sent are the device's node and pending command before the
	// report.
	from    string
	sent    Command
	tab     *ReconcileTable
	d       Device
	jobs    []Instance
	disp    bool
	cmd     *DeviceCommand
	changes []Change
	// stop is set when the device holds a job the server did not give it:
	// nothing is safe to decide.
	stop bool
}

func (r *round) out() ReconcileDecision {
	return ReconcileDecision{Device: r.d, Jobs: r.jobs, Dispatched: r.disp, Command: r.cmd, Changes: r.changes}
}

// change returns a device change stamped with the round's time.
func (r *round) change(kind ChangeKind, job string) Change {
	return Change{At: r.in.Now, Kind: kind, Device: r.d.ID, Instance: job,
		Machine: r.in.Machine.ID, Version: r.in.Machine.Version}
}

func (r *round) report(rep DeviceReport) error {
	m := r.in.Machine
	n := m.Node(rep.Node)
	switch {
	case rep.Node == "":
		return &InvalidError{Field: "report.node", Reason: "required: the device's node"}
	case n == nil:
		return &InvalidError{Field: "report.node", Reason: fmt.Sprintf("machine %q has no node %q (it has %v)", m.ID, rep.Node, m.Order)}
	case !(rep.Progress >= 0 && rep.Progress <= 1):
		return &InvalidError{Field: "report.progress", Reason: fmt.Sprintf("%v is not in [0, 1]", rep.Progress)}
	case !r.in.First && rep.Seq <= r.d.ReportSeq:
		return &InvalidError{Field: "report.seq", Reason: fmt.Sprintf("%d does not grow past the stream's last report %d", rep.Seq, r.d.ReportSeq)}
	}
	if rej := rep.Rejection; rej != nil {
		c := r.change(ChangeDeviceRejected, r.d.Pending.Job)
		c.Token, c.Reason = rej.CommandSeq, rej.Reason
		if rej.CommandSeq == r.d.Pending.Seq {
			r.d.Pending = Command{}
		} else {
			c.Instance = ""
		}
		r.changes = append(r.changes, c)
	}
	from := r.d.Node
	if from != "" && from != rep.Node {
		if err := r.checkMove(from, rep.Node); err != nil {
			return err
		}
		// A command is for the node it was decided in: once the device
		// left that node, it is done with, carried out or not.
		r.d.Pending = Command{}
	}
	if r.carriedOut(r.d.Pending) {
		// Carried out: whatever it was for is what the report shows.
		r.d.Pending = Command{}
	}
	r.d.Node, r.d.Progress, r.d.ReportSeq, r.d.LastSeen = rep.Node, rep.Progress, rep.Seq, r.in.Now
	if from != rep.Node {
		c := r.change(ChangeDeviceMoved, rep.Job)
		c.FromNode, c.ToNode = from, rep.Node
		r.changes = append(r.changes, c)
	}
	if rep.Job != "" && rep.Job != r.d.Job {
		// The device holds a job the server did not give it (or another
		// one): deciding anything could print twice or lose a part.
		c := r.change(ChangeDeviceNotice, rep.Job)
		c.Reason = fmt.Sprintf("device reports job %q but its job is %q: check the printer", rep.Job, r.d.Job)
		r.changes = append(r.changes, c)
		r.stop = true
	}
	return nil
}

// checkMove accepts a move from -> to when the device can take it on its
// own (transitions that are no command of the table, any number of them:
// several may have happened while it was offline), or with the pending
// command once.
func (r *round) checkMove(from, to string) error {
	if r.reachable(from, to, false) || r.reachable(from, to, true) {
		return nil
	}
	reason := "no path of transitions the device takes on its own leads there"
	if r.d.Pending.Name != "" {
		reason += fmt.Sprintf(", nor one through the pending command %q (seq %d, from %q)", r.d.Pending.Name, r.d.Pending.Seq, r.d.Pending.Node)
	} else {
		reason += ", and no command is pending"
	}
	return &MoveError{Device: r.d.ID, From: from, To: to, Reason: reason}
}

func (r *round) reachable(from, to string, withPending bool) bool {
	type state struct {
		node string
		used bool
	}
	m := r.in.Machine
	seen := map[state]bool{{from, false}: true}
	queue := []state{{from, false}}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		n := m.Node(s.node)
		if n == nil {
			continue
		}
		for _, name := range n.Order {
			t := n.Transitions[name]
			next := state{t.To, s.used}
			if r.tab.IsCommand(name) || t.Signal {
				// Commands and operator signals: the device takes them
				// only when told, so only the one sent last counts.
				p := r.d.Pending
				if !withPending || s.used || p.Seq == 0 || p.Name != name || p.Node != s.node {
					continue
				}
				next.used = true
			}
			if next.node == to {
				return true
			}
			if !seen[next] {
				seen[next] = true
				queue = append(queue, next)
			}
		}
	}
	return false
}

func (r *round) reconcile() error {
	if r.stop {
		return nil
	}
	if r.d.Job != "" {
		job := r.in.Job
		if job == nil || job.ID != r.d.Job || r.in.JobMachine == nil {
			return fmt.Errorf("%w: device %q has job %q but the round has no such job", errReconcileInvariant, r.d.ID, r.d.Job)
		}
		if job.Status == StatusFinal {
			// Ended by someone else (an operator cancelled it).
			r.d.Job = ""
		} else {
			rule, ok := r.tab.Lookup(r.d.Node, job.Node)
			if !ok {
				if r.in.Report != nil {
					c := r.change(ChangeDeviceNotice, job.ID)
					c.Reason = fmt.Sprintf("no reconcile rule for device node %q and job node %q: nothing sent", r.d.Node, job.Node)
					r.changes = append(r.changes, c)
				}
				return nil
			}
			if rule.Forgotten != "" && r.forgot(rule, job.ID) {
				notice := rule.ForgottenNotice
				if notice == "" {
					notice = fmt.Sprintf("the device reports %s without the job it held: it stopped or forgot it; %s recorded, nothing is sent again", r.d.Node, rule.Forgotten)
				}
				rule = Rule{Device: rule.Device, Job: rule.Job, Transition: rule.Forgotten, Notice: notice}
			} else if rule.Command == "" && rule.Transition != "" && r.outstanding(job.ID) {
				// The command sent for this job in this node may still
				// be carried out: the next report says. A report that
				// says it was not gets it again (same seq, carried out
				// once), so that a lost copy does not keep the job
				// waiting.
				if r.in.Report != nil {
					r.resend(r.d.Pending, job.Params)
				}
				return nil
			}
			next, err := r.apply(rule, *job, r.in.JobMachine)
			if err != nil {
				return err
			}
			if next.Status == StatusFinal {
				r.d.Job = ""
			}
			if rule.Command != "" {
				return r.command(rule.Command, next)
			}
			if r.d.Job != "" {
				return nil
			}
		}
	}
	head := r.in.Head
	if head == nil {
		return nil
	}
	if r.in.HeadMachine == nil || head.Status == StatusFinal {
		return fmt.Errorf("%w: queue head %q of device %q is final or has no machine", errReconcileInvariant, head.ID, r.d.ID)
	}
	rule, ok := r.tab.Lookup(r.d.Node, head.Node)
	if !ok || (rule.Command == "" && rule.Transition == "") {
		return nil // not ready for it: the job waits in the queue
	}
	next, err := r.apply(rule, *head, r.in.HeadMachine)
	if err != nil {
		return err
	}
	r.disp = true
	if next.Status != StatusFinal {
		r.d.Job = next.ID
	}
	if rule.Command != "" {
		return r.command(rule.Command, next)
	}
	return nil
}

// apply records rule's transition on job, with its notice.
func (r *round) apply(rule Rule, job Instance, m *Machine) (Instance, error) {
	if rule.Transition == "" {
		return job, nil
	}
	next, changes, err := Apply(m, job, Drive{Transition: rule.Transition, Device: r.d.ID}, r.in.Now)
	if err != nil {
		return Instance{}, fmt.Errorf("device %q: rule (%s, %s): %w", r.d.ID, rule.Device, rule.Job, err)
	}
	r.jobs = append(r.jobs, next)
	r.changes = append(r.changes, changes...)
	if rule.Notice != "" {
		c := r.change(ChangeDeviceNotice, job.ID)
		c.Reason = rule.Notice
		r.changes = append(r.changes, c)
	}
	return next, nil
}

func (r *round) command(name string, job Instance) error {
	n := r.in.Machine.Node(r.d.Node)
	if n == nil || !n.Blocking || n.Transitions[name] == nil {
		return fmt.Errorf("%w: command %q to device %q in node %q", errReconcileInvariant, name, r.d.ID, r.d.Node)
	}
	if p := r.d.Pending; p.Seq != 0 && p.Name == name && p.Node == r.d.Node && p.Job == job.ID {
		if r.in.Report == nil {
			// The device has not answered the very same command yet: a
			// round of the server's own would only send a duplicate. Its
			// next report says whether it was carried out, refused or lost.
			return nil
		}
		r.resend(p, job.Params)
		return nil
	}
	r.send(name, job.ID, job.Params)
	return nil
}

// resend sends pending command p again, with its seq: the device reported
// without having carried it out (lost, or still on its way). A device
// carries a seq out once, so whichever copy comes first is the one; the
// seq staying the same is what lets a later report's last command tell a
// lost command from a forgotten job.
func (r *round) resend(p Command, params map[string]string) {
	r.cmd = &DeviceCommand{Command: p, Params: maps.Clone(params)}
	c := r.change(ChangeDeviceCommand, p.Job)
	c.Transition, c.Token, c.FromNode = p.Name, p.Seq, p.Node
	c.Reason = "sent again: not carried out yet"
	r.changes = append(r.changes, c)
}

// send sends command name about job to the device, with a new seq.
func (r *round) send(name, job string, params map[string]string) {
	r.d.CommandSeq++
	r.d.Pending = Command{Seq: r.d.CommandSeq, Name: name, Node: r.d.Node, Job: job}
	r.cmd = &DeviceCommand{Command: r.d.Pending, Params: maps.Clone(params)}
	c := r.change(ChangeDeviceCommand, job)
	c.Transition, c.Token, c.FromNode = name, r.d.CommandSeq, r.d.Node
	r.changes = append(r.changes, c)
}

// carriedOut reports whether the device's report says it carried out
// command p: its last command is p or a later one.
func (r *round) carriedOut(p Command) bool {
	rep := r.in.Report
	return rep != nil && p.Seq != 0 && rep.LastCommand >= p.Seq
}

// forgot reports whether the device dropped job: it reports rule's pair
// without holding the job, after it came there from another node while
// holding it (a printer back idle after a power cut, or stopped by a
// cancel), or after it carried out the rule's command for the job.
func (r *round) forgot(rule Rule, job string) bool {
	rep := r.in.Report
	if rep == nil || rep.Job != "" {
		return false
	}
	if r.from != "" && r.from != r.d.Node {
		return true
	}
	p := r.sent
	return p.Name == rule.Command && p.Node == rule.Device && p.Job == job && r.carriedOut(p)
}

// outstanding reports whether a command about job, sent in the device's
// node, may still be carried out: neither answered, nor refused, nor lost
// with the stream it was sent on (the first report of a new stream).
func (r *round) outstanding(job string) bool {
	p := r.d.Pending
	if p.Seq == 0 || p.Job != job || p.Node != r.d.Node {
		return false
	}
	return !r.carriedOut(p) && !(r.in.Report != nil && r.in.First)
}

// signal sends the device the signal an operator gave it (a pending command
// not sent yet, Seq 0), or sends it again, with its seq, when the device
// reports it is still in the node the signal is for and has not carried it
// out (a report that says it was carried out cleared it).
func (r *round) signal() {
	p := r.d.Pending
	n := r.in.Machine.Node(r.d.Node)
	if p.Name == "" || p.Node != r.d.Node || n == nil || n.Transitions[p.Name] == nil || !n.Transitions[p.Name].Signal {
		return
	}
	var params map[string]string
	if r.in.Job != nil && r.in.Job.ID == p.Job {
		params = r.in.Job.Params
	}
	switch {
	case p.Seq == 0:
		r.send(p.Name, p.Job, params)
	case r.in.Report != nil:
		r.resend(p, params)
	}
}
