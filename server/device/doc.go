// Package device runs the reactive loop of connected devices (3D
// printers).
//
// Reconcile is the loop's pure core: given what a device reports, what the
// store knows about it (its record, its current job, the head of its
// queue), the device machine's reconcile table and the time, it returns
// the round's decisions as data: the device's new record, the job
// transitions to record, the command to send (at most one) and the changes
// to append. It does no IO; the engine runs it inside one store
// transaction.
//
// Sessions run the Connect streams, one per device: a session holds the
// connection and nothing else. Every device message, and every poke (a
// commit that concerns the device: a job queued on it, an operator signal
// on its job), runs one round through the engine; when the stream ends the
// device is offline.
package device
