package fsm

import (
	"maps"
	"time"
)

// Device is what the server keeps about one connected device (a printer):
// its registration, its last reported state and the bookkeeping of its
// reactive loop. The store persists it; its queue of jobs is kept beside
// it (store.Tx.Enqueue).
type Device struct {
	// ID is chosen by the device and stable across connections.
	ID string
	// Pool and Capabilities are as last registered.
	Pool         string
	Capabilities map[string]string
	// Machine is the device machine the device runs (e.g. "printer").
	Machine string
	// Online is true while a Connect stream of the device is open.
	Online bool
	// Conn counts the device's registrations: each new stream gets the
	// next number, so that the end of a replaced stream does not mark the
	// device offline behind the stream that replaced it.
	Conn uint64
	// LastSeen is when the device last sent a message or its stream ended.
	LastSeen time.Time
	// Node is the device's last reported node.
	Node string
	// Job is the job dispatched to the device and not finished with; empty
	// when none.
	Job string
	// Progress is the last reported progress of Job, in [0, 1].
	Progress float64
	// ReportSeq is the last report seq received.
	ReportSeq uint64
	// CommandSeq is the last command seq sent: commands are numbered per
	// device, across streams and restarts.
	CommandSeq uint64
	// Pending is the last command sent that the device has neither carried
	// out nor refused; zero when none.
	Pending Command
}

// Command is a command sent to a device.
type Command struct {
	// Seq is the command's number (Device.CommandSeq when it was sent).
	Seq uint64
	// Name is the device machine transition the device is told to take.
	Name string
	// Node is the device node the command was decided for.
	Node string
	// Job is the job the command is about.
	Job string
}

// Clone returns a deep copy of the device (capabilities are copied).
func (d Device) Clone() Device {
	d.Capabilities = maps.Clone(d.Capabilities)
	return d
}
