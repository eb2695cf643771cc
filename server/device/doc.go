// Package device runs the Connect streams of devices (3D printers), one
// session per device: a session holds the connection and nothing else.
// Every device message, and every poke (a commit that concerns the device:
// a job queued on it, an operator signal on its job), runs one round
// through the engine, which reads the store, runs the pure fsm.Reconcile
// and writes its decision in one transaction; when the stream ends the
// device is offline.
package device
