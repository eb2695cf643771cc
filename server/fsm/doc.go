// Package fsm is the pure core of dfsmr: it applies one event (start, lease,
// transition, heartbeat, relinquish, signal, cancel, timeout, wake) to one
// instance of a compiled machine at a given clock value, and returns the new
// instance together with the changes that describe what happened. It also
// runs one round of a device's reactive loop (Reconcile): from a device's
// record (Device), its report and its jobs to the round's decision, as
// data.
//
// The package does no IO, starts no goroutines and never reads the wall
// clock: the caller passes "now" and any random draw (retry jitter) in. That
// makes every decision deterministic and exhaustively testable, and lets the
// whole server run under a seeded simulator.
//
// Nothing here imports the rest of the project but client/backoff, the one
// pure leaf (standard library only, no clock, no randomness of its own)
// that computes retry delays for the core and the clients alike, so that
// they cannot drift apart. The machines package compiles
// YAML into the Machine type defined here, the store persists Instance,
// Change and Device values, and the engine glues them together.
package fsm
