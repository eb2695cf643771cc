package printersim

import (
	"fmt"
	"strings"
	"time"
)

// EventKind says what happened to a simulated printer or operator.
type EventKind int

// Event kinds.
const (
	// EventPrinting: the printer carried out a print command (Detail: the
	// model).
	EventPrinting EventKind = iota + 1
	// EventFinished: the print finished; the part waits on the bed.
	EventFinished
	// EventFailed: the print failed; the printer is in error.
	EventFailed
	// EventPowerLoss: the plug was pulled; the printer went dark without a
	// word to the server.
	EventPowerLoss
	// EventCleared: the printer carried out done (the part was taken off).
	EventCleared
	// EventRecovered: the printer carried out recover.
	EventRecovered
	// EventRejected: the printer refused a stale or late command and said
	// so (Seq: the command, Detail: why).
	EventRejected
	// EventIgnored: the printer dropped a stale or late command without a
	// word.
	EventIgnored
	// EventConnected: the server answered the registration of a new
	// stream (Detail: the printer's node).
	EventConnected
	// EventDropped: the printer's connection dropped (simulated).
	EventDropped
	// EventDisconnected: the stream ended from the server's side or could
	// not be opened (Detail: the error).
	EventDisconnected
	// EventRetrieved: an operator took the part off and signalled
	// retrieved, and the server acknowledged it.
	EventRetrieved
	// EventRecoverySignaled: an operator cleared a failed printer and
	// signalled recovered, and the server acknowledged it.
	EventRecoverySignaled
	// EventCanceled: the printer carried out cancel: it stopped printing.
	EventCanceled
	// EventDeviceCleared: the printer carried out cleared, the operator's
	// signal on the printer itself.
	EventDeviceCleared
	// EventCancelRequested: an operator cancelled a printing job, and the
	// server acknowledged it.
	EventCancelRequested
	// EventClearSignaled: an operator fixed a printer, cleared its bed and
	// signalled the printer cleared, and the server acknowledged it.
	EventClearSignaled
	// EventForgot: the plug was pulled and the printer lost its job: it
	// comes back ready, with only its last command seq.
	EventForgot
)

var kindNames = map[EventKind]string{
	EventPrinting:         "printing",
	EventFinished:         "finished",
	EventFailed:           "failed",
	EventPowerLoss:        "power-loss",
	EventCleared:          "cleared",
	EventRecovered:        "recovered",
	EventRejected:         "rejected",
	EventIgnored:          "ignored",
	EventConnected:        "connected",
	EventDropped:          "dropped",
	EventDisconnected:     "disconnected",
	EventRetrieved:        "operator-retrieved",
	EventRecoverySignaled: "operator-recovered",
	EventCanceled:         "canceled",
	EventDeviceCleared:    "device-cleared",
	EventCancelRequested:  "operator-canceled",
	EventClearSignaled:    "operator-cleared",
	EventForgot:           "power-loss-forgot",
}

func (k EventKind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one notable thing that happened in the simulation.
type Event struct {
	// At is the simulation's clock when it happened.
	At time.Time
	// Printer is the printer's id.
	Printer string
	// Kind says what happened.
	Kind EventKind
	// Job is the job concerned; empty when none.
	Job string
	// Seq is the command seq, for EventRejected and EventIgnored, and the
	// carried out commands.
	Seq uint64
	// Detail is free text (a model, a reason, an error).
	Detail string
}

// String formats e as one log line.
func (e Event) String() string {
	s := fmt.Sprintf("%s %-12s %s", e.At.Format("15:04:05.000"), e.Printer, e.Kind)
	if e.Job != "" || e.Seq != 0 || e.Detail != "" {
		s += strings.Repeat(" ", max(0, 18-len(e.Kind.String())))
	}
	if e.Job != "" {
		s += " job=" + e.Job
	}
	if e.Seq != 0 {
		s += fmt.Sprintf(" cmd=%d", e.Seq)
	}
	if e.Detail != "" {
		s += " " + e.Detail
	}
	return s
}
