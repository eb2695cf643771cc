// Package store persists machines, instances and the changelog behind one
// transactional interface. The bbolt implementation lives in store/bolt; the
// behaviour every implementation must show is the conformance suite in
// store/storetest.
//
// One operation is one transaction: an instance's new state, its index
// entries and its changelog entries commit together or not at all. Update
// coalesces concurrent operations into one commit (group commit), so one
// fsync makes many operations durable; nothing is acknowledged before that.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"syscall"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
)

// ErrNotFound is returned for a missing machine, version or instance.
var ErrNotFound = errors.New("not found")

// ErrStale refuses a write that was computed on a state that changed
// since (the leader changed meanwhile) and was computed again too often;
// retrying it is safe.
var ErrStale = errors.New("store: the state changed under the write (a new leader wrote first); retry")

// ErrClosed is returned by every call after Close.
var ErrClosed = errors.New("store closed")

// ErrFileReplaced is wrapped by every write refused because the database
// file the store has open is no longer the file at its path: it was
// renamed over, moved away or deleted while the server ran. Writes to the
// open file would be lost at the next start, so the store refuses them;
// reads go on from the open file.
var ErrFileReplaced = errors.New("database file was replaced or removed while open")

// CorruptError reports stored data that fails its check: a record whose
// checksum does not match, or a damaged part of the file's page
// structure. It matches ErrCorrupt under errors.Is.
type CorruptError struct {
	// Path is the database file.
	Path string
	// Bucket and Key name the record; both are empty when the damage is in
	// the file's structure rather than in one record.
	Bucket string
	Key    []byte
	// Reason says what is wrong.
	Reason string
}

func (e *CorruptError) Error() string {
	if e.Bucket == "" {
		return fmt.Sprintf("database %s is damaged: %s", e.Path, e.Reason)
	}
	return fmt.Sprintf("database %s: record %s/%s is corrupt: %s", e.Path, e.Bucket, strconv.Quote(string(e.Key)), e.Reason)
}

// Is makes a CorruptError match ErrCorrupt.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// IOError reports a write the file system refused: the disk is full
// (ENOSPC), a quota is used up (EDQUOT), the file system is read-only
// (EROFS) or the device failed (EIO). The write was not acknowledged; the
// store keeps serving reads and takes writes again once the cause is gone.
// A write that had reached the log when applying it failed (Pending) is
// applied then.
type IOError struct {
	// Path is the database file.
	Path string
	// Op is what failed, e.g. "commit".
	Op string
	// Err is the errno (syscall.Errno) the file system returned.
	Err error
	// Pending says that the write is a command of the log already: it is
	// applied once the cause is gone (a retry with the same request id
	// is then a no-op), rather than lost.
	Pending bool
}

func (e *IOError) Error() string {
	outcome := "the write was not applied"
	switch {
	case e.Pending:
		outcome = "the write is in the log and is applied once that is resolved"
	case errors.Is(e.Err, syscall.EIO):
		// The device may have taken part of the write before failing.
		outcome = "the write was not acknowledged and may or may not survive a restart"
	}
	return fmt.Sprintf("database %s: %s: %v; %s", e.Path, e.Op, e.Err, outcome)
}

func (e *IOError) Unwrap() error { return e.Err }

// ClassifyIOError returns an *IOError for err when it carries one of the
// errnos IOError stands for, and nil otherwise.
func ClassifyIOError(path, op string, err error) *IOError {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return nil
	}
	switch errno {
	case syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS, syscall.EIO:
		return &IOError{Path: path, Op: op, Err: errno}
	}
	return nil
}

// Stats count the work of a store's writer since it opened.
type Stats struct {
	// Commits is the number of write transactions committed.
	Commits uint64
	// Ops is the number of Update calls that committed successfully.
	Ops uint64
	// Syncs is the number of fsyncs of the file by commits (bbolt syncs
	// twice per write transaction, once for the data pages and once for
	// the meta page that makes them live); none without sync.
	Syncs uint64
}

// Backuper writes a consistent copy of a whole store.
type Backuper interface {
	// Backup writes a copy of the store's file to w, as of one read
	// transaction, and returns the bytes written and the last changelog
	// sequence number in the copy.
	Backup(ctx context.Context, w io.Writer) (n int64, head uint64, err error)
	// Path is the store's file; Backup's temporary copies go next to it.
	Path() string
}

// MaxDurationSamples is how many lease durations a store keeps per machine
// version and node (see Tx.AddDurationSample); the oldest go first.
const MaxDurationSamples = 100

// Store is the persistence seam of dfsmr.
type Store interface {
	// Update runs fn in a read-write transaction and returns once the
	// transaction is durably committed, or with fn's error and none of fn's
	// writes applied.
	//
	// Concurrent calls may share one transaction (group commit). fn may
	// therefore run more than once and must be a function of the
	// transaction only: read what it needs from tx, and hand results out
	// through variables that the last run overwrites. A panic in fn fails
	// that call only.
	Update(ctx context.Context, fn func(tx Tx) error) error

	// View runs fn in a read-only snapshot.
	View(ctx context.Context, fn func(tx ReadTx) error) error

	// Close waits for pending updates and closes the store. It is
	// idempotent.
	Close() error
}

// CommitHook receives the changes of every committed transaction, in
// sequence order, after the commit is durable and before the callers of
// Update return. It runs on the store's writer goroutine and must not block.
type CommitHook func(changes []fsm.Change)

// MachineRecord is one stored machine version. The compiled form is derived
// from Source by the machines package; the store keeps the text.
type MachineRecord struct {
	// ID and Version name the definition.
	ID      string
	Version uint32
	// Source is the definition text as defined (YAML).
	Source []byte
	// Fingerprint identifies the definition's content; defining the same
	// fingerprint again returns the existing version.
	Fingerprint string
	// DefinedAt is when the version was first defined.
	DefinedAt time.Time
}

// InstanceFilter selects instances in ListInstances. Empty fields match all.
type InstanceFilter struct {
	Machine string
	Node    string
	Status  fsm.Status
}

// ReadyFilter selects READY instances for Ready. Node requires Machine.
type ReadyFilter struct {
	Machine string
	Node    string
}

// Due is one entry of the due index: an instance that must be looked at
// (woken or timed out) at At.
type Due struct {
	At time.Time
	ID string
}

// ReadTx is what a read-only transaction can see. Returned values are copies
// that stay valid after the transaction ends.
type ReadTx interface {
	// Machine returns a machine version; version 0 means the latest.
	Machine(id string, version uint32) (MachineRecord, error)
	// LatestMachineVersion returns the number of a machine's latest
	// version without reading the version itself (versions never change:
	// callers keep what they compiled of one).
	LatestMachineVersion(id string) (uint32, error)
	// MachineVersions returns every version of a machine, oldest first.
	MachineVersions(id string) ([]MachineRecord, error)
	// Machines returns the latest version of up to limit machines whose id
	// sorts after after, in id order.
	Machines(after string, limit int) ([]MachineRecord, error)

	// Instance returns an instance.
	Instance(id string) (fsm.Instance, error)
	// Instances returns up to limit instances matching f whose id sorts
	// after after, in id order.
	Instances(f InstanceFilter, after string, limit int) ([]fsm.Instance, error)
	// History returns the changes of one instance, oldest first.
	History(id string) ([]fsm.Change, error)
	// HistoryFrom returns up to limit changes of one instance with Seq >=
	// from, oldest first; limit 0 means no limit. It reads only what it
	// returns, so that a page of a long history costs a page.
	HistoryFrom(id string, from uint64, limit int) ([]fsm.Change, error)

	// Ready returns the ids of up to limit READY instances matching f in
	// offer order: highest priority, then earliest due time, then id.
	Ready(f ReadyFilter, limit int) ([]string, error)
	// Due returns up to limit entries of the due index with At <= before,
	// earliest first.
	Due(before time.Time, limit int) ([]Due, error)
	// NextDue returns the earliest entry of the due index.
	NextDue() (Due, bool, error)

	// Changes returns up to limit changelog entries with Seq >= from, in
	// order.
	Changes(from uint64, limit int) ([]fsm.Change, error)
	// Head returns the last assigned sequence number (0 when empty).
	Head() (uint64, error)
	// OldestChange returns the sequence number of the oldest change the
	// changelog still holds; ok is false when it holds none (every change
	// through Head was deleted by retention, or none was appended).
	OldestChange() (seq uint64, ok bool, err error)

	// Finished returns the ids of up to limit FINAL instances that became
	// FINAL (their UpdatedAt) before before, earliest first.
	Finished(before time.Time, limit int) ([]string, error)

	// DurationSamples returns the lease durations recorded for a node of a
	// machine version, oldest first: at most MaxDurationSamples, none (and
	// no error) when nothing was recorded.
	DurationSamples(machine string, version uint32, node string) ([]time.Duration, error)

	// Breaker returns the circuit breaker of a machine (all its versions
	// share one): the zero fsm.Breaker (closed, empty window) and no error
	// when none was stored.
	Breaker(machine string) (fsm.Breaker, error)

	// Device returns a device (ErrNotFound when it never registered).
	Device(id string) (fsm.Device, error)
	// Devices returns up to limit devices of pool (empty: every pool) whose
	// id sorts after after, in id order.
	Devices(pool, after string, limit int) ([]fsm.Device, error)
	// QueueHead returns the first entry of a device's queue; ok is false
	// when the queue is empty.
	QueueHead(device string) (e QueueEntry, ok bool, err error)
	// QueueLen returns the number of entries in a device's queue.
	QueueLen(device string) (int, error)
}

// Tx is a read-write transaction. Reads see the transaction's own writes.
type Tx interface {
	ReadTx
	// PutMachine stores a new machine version.
	PutMachine(rec MachineRecord) error
	// PutInstance stores an instance and keeps every index (ready, due,
	// by machine) in step with its status.
	PutInstance(in fsm.Instance) error
	// AppendChange assigns the next sequence number to c, stores it in the
	// changelog and, when it names an instance, in that instance's
	// history. It returns the assigned number.
	AppendChange(c fsm.Change) (uint64, error)
	// AddDurationSample records a successful lease duration d (not
	// negative) for a node of a machine version (not 0). Only the
	// MaxDurationSamples most recent samples of each machine version and
	// node are kept.
	AddDurationSample(machine string, version uint32, node string, d time.Duration) error
	// PutBreaker stores the circuit breaker of a machine, replacing the
	// previous one.
	PutBreaker(machine string, b fsm.Breaker) error
	// PutDevice stores a device, replacing the previous record.
	PutDevice(d fsm.Device) error
	// Enqueue adds a job to a device's queue; the same entry twice is one
	// entry.
	Enqueue(device string, e QueueEntry) error
	// Dequeue removes an entry from a device's queue (ErrNotFound when it
	// is not there).
	Dequeue(device string, e QueueEntry) error

	// TrimChanges deletes changelog entries from the oldest on, with their
	// history entries, while an entry's Seq is below keepFrom or its At is
	// before before; it stops at the first entry that is neither, or after
	// limit entries (limit 0: no bound). It returns how many it deleted.
	// Head does not move: a deleted sequence number is never assigned
	// again.
	TrimChanges(keepFrom uint64, before time.Time, limit int) (int, error)
	// DeleteInstance deletes a FINAL instance with its index entries and
	// its history entries; its changes stay in the changelog until
	// TrimChanges deletes them. It is ErrNotFound for a missing instance
	// and an *fsm.InvariantError for one that is not FINAL.
	DeleteInstance(id string) error
}
