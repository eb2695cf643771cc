package printersim

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
)

// Nodes of the bundled printer machine.
const (
	NodeReady            = "ready"
	NodePrinting         = "printing"
	NodeWaitingRetrieval = "waiting_retrieval"
	NodeError            = "error"
)

// Commands of the bundled printer machine: the transitions a printer takes
// only when the server tells it to.
const (
	CommandPrint   = "print"
	CommandDone    = "done"
	CommandRecover = "recover"
	CommandCancel  = "cancel"
	// CommandCleared is the printer's operator signal, sent as a command:
	// an operator fixed the printer and cleared its bed.
	CommandCleared = "cleared"
)

// ParamModel is the print command's param that names the model to print.
const ParamModel = "model"

// Profile defaults.
const (
	// DefaultPrintTime is a print's average duration.
	DefaultPrintTime = 2 * time.Second
	// DefaultPrintJitter spreads print durations by ±50%.
	DefaultPrintJitter = 0.5
)

// Profile is how a simulated printer's hardware behaves. The zero value is
// a printer that never fails and prints every part in DefaultPrintTime
// (±DefaultPrintJitter).
type Profile struct {
	// PrintTime is the average duration of a print. Zero: DefaultPrintTime.
	PrintTime time.Duration
	// PrintJitter spreads durations uniformly over PrintTime×(1±PrintJitter),
	// in [0, 1]. Zero: DefaultPrintJitter; negative: every print lasts
	// exactly PrintTime.
	PrintJitter float64
	// FailRate is the probability, in [0, 1], that a print fails (the
	// mechanism derails), at a uniformly drawn point of it. Zero: never.
	FailRate float64
	// PowerLossRate is the probability, in [0, 1], that the plug is pulled
	// during a print, at a uniformly drawn point of it: the printer stops
	// without a word and comes back in error, holding the job. Zero: never.
	PowerLossRate float64
	// ForgetRate is the probability, in [0, 1], that a printer whose plug
	// was pulled comes back ready instead, having forgotten the job (its
	// firmware keeps only the last command seq). Zero: never.
	ForgetRate float64
}

// WithDefaults returns p with its zero fields set to their defaults.
func (p Profile) WithDefaults() Profile {
	if p.PrintTime == 0 {
		p.PrintTime = DefaultPrintTime
	}
	if p.PrintJitter == 0 {
		p.PrintJitter = DefaultPrintJitter
	}
	return p
}

// Validate reports the first field out of range.
func (p Profile) Validate() error {
	switch {
	case p.PrintTime < 0:
		return fmt.Errorf("print time %v is negative", p.PrintTime)
	case p.PrintJitter > 1:
		return fmt.Errorf("print jitter %v is above 1", p.PrintJitter)
	case !(p.FailRate >= 0 && p.FailRate <= 1):
		return fmt.Errorf("fail rate %v is not in [0, 1]", p.FailRate)
	case !(p.PowerLossRate >= 0 && p.PowerLossRate <= 1):
		return fmt.Errorf("power loss rate %v is not in [0, 1]", p.PowerLossRate)
	case !(p.ForgetRate >= 0 && p.ForgetRate <= 1):
		return fmt.Errorf("forget rate %v is not in [0, 1]", p.ForgetRate)
	}
	return nil
}

// Printer is the hardware and firmware of one simulated 3D printer: the
// printer machine as the device itself runs it. It is a pure state
// machine: it does no IO, never reads a clock (every method takes the
// time) and draws from its own seeded source, so the same seed, commands
// and times give the same printer, print for print.
//
// A printer leaves a node on its own only while printing (the print ends,
// fails, or the plug is pulled); ready, waiting_retrieval and error are
// blocking: only a command moves it on. It carries out a command only when
// the command still matches its state (same node, same job, a seq newer
// than any it carried out) and refuses it otherwise.
//
// The plug is only ever pulled during a print (Profile.PowerLossRate): an
// interrupted print cannot be resumed, so the printer comes back in error,
// holding the job (its firmware keeps its node, job and last command seq),
// or, with Profile.ForgetRate, ready without the job: it kept only its last
// command seq, which it reports, as the device contract asks.
//
// A Printer is not safe for concurrent use.
type Printer struct {
	id   string
	prof Profile
	rng  *rand.Rand

	node  string
	job   string
	model string
	// The current print: when it started and will end, and when it fails
	// or loses power (zero: it does not).
	start, end, failAt, powerAt time.Time
	// progress is frozen when a print stops early.
	progress float64
	// forget is set when the current print's power loss loses the job.
	forget bool

	lastCmd uint64
}

// NewPrinter returns a ready printer with the given id and hardware,
// drawing its print durations and mishaps from rng. prof must be valid.
func NewPrinter(id string, prof Profile, rng *rand.Rand) *Printer {
	return &Printer{id: id, prof: prof.WithDefaults(), rng: rng, node: NodeReady}
}

// ID returns the printer's id.
func (p *Printer) ID() string { return p.id }

// Node returns the printer's node.
func (p *Printer) Node() string { return p.node }

// Job returns the job the printer holds (printing it, its part on the bed,
// or failed in it); empty when none.
func (p *Printer) Job() string { return p.job }

// LastCommand returns the seq of the last command the printer carried out.
func (p *Printer) LastCommand() uint64 { return p.lastCmd }

// Progress returns how far the held job got, in [0, 1], at now.
func (p *Printer) Progress(now time.Time) float64 {
	if p.node != NodePrinting {
		return p.progress
	}
	total := p.end.Sub(p.start)
	if total <= 0 {
		return 1
	}
	return min(1, max(0, float64(now.Sub(p.start))/float64(total)))
}

// State returns what the printer reports at now.
func (p *Printer) State(now time.Time) client.DeviceState {
	return client.DeviceState{Node: p.node, Job: p.job, Progress: p.Progress(now), LastCommand: p.lastCmd}
}

// Next returns when the printer will change on its own (the print ends,
// fails or loses power); ok is false when it will not.
func (p *Printer) Next() (at time.Time, ok bool) {
	if p.node != NodePrinting {
		return time.Time{}, false
	}
	at = p.end
	for _, t := range []time.Time{p.failAt, p.powerAt} {
		if !t.IsZero() && t.Before(at) {
			at = t
		}
	}
	return at, true
}

// Advance moves the printer to now: a print that came to its end finishes
// or fails, whichever comes first. It returns what happened, if anything.
// A pulled plug is an event too (EventPowerLoss; EventForgot when the
// printer comes back ready without its job): the caller drops the
// connection and brings the printer back after a while.
func (p *Printer) Advance(now time.Time) (Event, bool) {
	at, ok := p.Next()
	if !ok || now.Before(at) {
		return Event{}, false
	}
	p.progress = p.Progress(at)
	ev := Event{At: at, Printer: p.id, Job: p.job}
	switch {
	case at.Equal(p.powerAt) && p.forget:
		ev.Kind = EventForgot
		p.node, p.job, p.model, p.progress = NodeReady, "", "", 0
	case at.Equal(p.powerAt):
		ev.Kind = EventPowerLoss
		p.node = NodeError
	case at.Equal(p.failAt):
		ev.Kind = EventFailed
		p.node = NodeError
	default:
		ev.Kind = EventFinished
		p.node = NodeWaitingRetrieval
		p.progress = 1
	}
	p.start, p.end, p.failAt, p.powerAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return ev, true
}

// Command carries out c at now when it still matches the printer's state,
// and returns EventPrinting, EventCleared or EventRecovered; otherwise it
// does nothing and returns EventRejected with the rejection to report.
func (p *Printer) Command(c *pb.DeviceCommand, now time.Time) (Event, *pb.CommandRejection) {
	ev := Event{At: now, Printer: p.id, Job: c.GetJobId(), Seq: c.GetSeq()}
	if reason := p.refuse(c); reason != "" {
		ev.Kind, ev.Detail = EventRejected, reason
		return ev, &pb.CommandRejection{CommandSeq: c.GetSeq(), Reason: reason}
	}
	p.lastCmd = c.GetSeq()
	switch c.GetName() {
	case CommandPrint:
		p.print(c.GetJobId(), c.GetParams()[ParamModel], now)
		ev.Kind, ev.Detail = EventPrinting, p.model
	case CommandDone:
		ev.Kind = EventCleared
		p.node, p.job, p.model, p.progress = NodeReady, "", "", 0
	case CommandRecover:
		ev.Kind = EventRecovered
		p.node, p.job, p.model, p.progress = NodeReady, "", "", 0
	case CommandCancel:
		// The print stops; the partial part stays on the bed, the job is
		// over.
		ev.Kind = EventCanceled
		p.progress = p.Progress(now)
		p.node, p.job, p.model = NodeWaitingRetrieval, "", ""
		p.start, p.end, p.failAt, p.powerAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	case CommandCleared:
		ev.Kind = EventDeviceCleared
		p.node, p.job, p.model, p.progress = NodeReady, "", "", 0
	}
	return ev, nil
}

// commandNode is the node each command is taken from; cleared is taken
// from error and waiting_retrieval.
var commandNode = map[string]string{
	CommandPrint:   NodeReady,
	CommandDone:    NodeWaitingRetrieval,
	CommandRecover: NodeError,
	CommandCancel:  NodePrinting,
	CommandCleared: NodeError,
}

// refuse returns why c does not match the printer's state, or "".
func (p *Printer) refuse(c *pb.DeviceCommand) string {
	from, known := commandNode[c.GetName()]
	switch {
	case !known:
		return fmt.Sprintf("unknown command %q", c.GetName())
	case c.GetSeq() <= p.lastCmd:
		return fmt.Sprintf("late: command seq %d is not newer than %d, already carried out", c.GetSeq(), p.lastCmd)
	case c.GetNode() != p.node:
		return fmt.Sprintf("stale: %s was decided for node %s, printer is in %s%s", c.GetName(), c.GetNode(), p.node, p.holding())
	case p.node != from && !(c.GetName() == CommandCleared && p.node == NodeWaitingRetrieval):
		return fmt.Sprintf("%s is not a command of node %s", c.GetName(), p.node)
	case c.GetName() == CommandPrint && c.GetJobId() == "":
		return "print without a job"
	case c.GetName() == CommandCleared, c.GetName() == CommandRecover:
		// An operator fixed the printer: whatever failed or was on the
		// bed is gone, job or not (a printer that forgot its job in a
		// power cut may have faulted idle since).
	case c.GetName() != CommandPrint && c.GetJobId() != p.job:
		return fmt.Sprintf("stale: %s is about job %q, printer holds %q", c.GetName(), c.GetJobId(), p.job)
	}
	return ""
}

func (p *Printer) holding() string {
	if p.job == "" {
		return ""
	}
	return " with job " + p.job
}

// print starts job: it draws the print's duration and whether and when it
// fails or loses power. It always draws the same numbers, so that one
// print's luck never shifts the next one's.
func (p *Printer) print(job, model string, now time.Time) {
	u, failU, failAt, powerU, powerAt := p.rng.Float64(), p.rng.Float64(), p.rng.Float64(), p.rng.Float64(), p.rng.Float64()
	p.forget = false
	if p.prof.ForgetRate > 0 {
		// Drawn for every print of such a printer, used or not.
		p.forget = p.rng.Float64() < p.prof.ForgetRate
	}
	d := p.prof.PrintTime
	if j := p.prof.PrintJitter; j > 0 {
		d = time.Duration(float64(d) * (1 + j*(2*u-1)))
	}
	p.node, p.job, p.model, p.progress = NodePrinting, job, model, 0
	p.start, p.end, p.failAt, p.powerAt = now, now.Add(d), time.Time{}, time.Time{}
	if failU < p.prof.FailRate {
		p.failAt = now.Add(time.Duration(failAt * float64(d)))
	}
	if powerU < p.prof.PowerLossRate {
		p.powerAt = now.Add(time.Duration(powerAt * float64(d)))
	}
}
