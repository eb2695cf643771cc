// Package bolt implements store.Store on bbolt: one file, zero setup.
//
// # Group commit
//
// One writer goroutine runs every Update. Update queues a request and
// waits; the writer takes whatever is queued (up to Options.MaxBatch), runs
// the functions one after the other on one read transaction with their
// writes laid over it, and submits what they wrote as one write set to the
// log, which applies it in one bbolt transaction: one commit makes the
// whole batch durable (see replicate.go and writer.go). There is no
// batching timer: a lone Update commits alone at once (latency), concurrent
// ones share a commit (throughput). While a write set is on its way
// through the log, the writer computes the next one on top of it when a
// backlog is waiting. A function that fails without writing just gets its
// error; one that writes and then fails or panics has dirtied the shared
// batch, so the batch is run again without it. That is why an update
// function may run more than once. After the commit the CommitHook gets
// the batch's changes in sequence order, then every caller returns. Update
// functions run on the writer goroutine and the hook on the log's: they
// must not call the store (that would deadlock).
//
// Readers (View) run concurrently in bbolt read transactions. A long View
// keeps the pages it sees from being reused, so the file grows: keep views
// short.
//
// # Layout
//
// Every bucket is created at Open. Keys are big-endian and fixed-width where
// they sort, so that a forward cursor yields the order a query needs; NUL
// separates variable-length strings, so ids, machine and node names may not
// contain it.
//
//	instances             id -> instance record
//	instances_by_machine  machine NUL id -> ()
//	ready                 prio(4) due(8) id -> ()           READY only
//	ready_by_machine      machine NUL prio due id -> ()
//	ready_by_node         machine NUL node NUL prio due id -> ()
//	due                   due(8) id -> ()                   WAITING, expiring leases
//	changes               seq(8) -> change record; bucket sequence = head
//	history               id NUL seq(8) -> ()
//	machines              id NUL version(4) -> machine record
//	durations             machine NUL version(4) node -> durations record
//	breakers              machine -> breaker record
//	meta                  "schema" -> format version; "checksums" -> "crc32c"
//
// prio is MaxInt32 - priority as uint32 (highest priority first); due and
// other times are store.UnixNanos with the sign bit flipped (the zero time
// and times before the epoch first). The three ready indexes let Ready with a
// machine or node filter read only matching entries. PutInstance reads the
// previous record to remove its stale index entries.
//
// A durations record holds the recent successful lease durations of one
// node of one machine version, oldest first; AddDurationSample rewrites it
// whole, dropping the oldest beyond store.MaxDurationSamples (a few hundred
// bytes, read only for nodes with a learned timeout). Adding the bucket
// needed no schema change: Open creates it in older files.
//
// A breaker record is the circuit breaker of one machine (fsm.Breaker, under
// 20 bytes). The engine reads it on every Transition and lease timeout and
// rewrites it only when the outcome changed it, which a machine whose
// attempts all succeed stops doing once its window is full of successes.
// Like the durations bucket, it needed no schema change.
//
// The changelog sequence is the changes bucket's own sequence, taken inside
// the write transaction: a rollback gives the number back, so there is no
// gap. History entries point into the changelog rather than copy the
// record: the hot path writes each change once, and History pays a lookup
// per entry instead.
//
// Records use the shared binary format of the store package
// (store.AppendInstance and friends), each followed by a CRC-32C of its key
// and bytes (checksum.go); the meta key "checksums" marks a file whose
// records all carry one, and Open adds them to an older file once.
//
// # Integrity
//
// bbolt trusts its file: it reads pages through a memory map and follows
// their offsets unchecked, so a damaged file makes it panic, fault or serve
// changed bytes. Open therefore first walks the file with plain reads
// (verify.go): both meta pages, the length the meta promises, every
// reachable page's header, offsets and key order, every record's checksum.
// A structural problem refuses the file with a *store.CorruptError naming
// it; a record whose checksum fails is logged and reported to
// Options.OnCorrupt, and every read of it fails with a *store.CorruptError
// naming bucket and key while the rest is served. Reads and the writer run
// with debug.SetPanicOnFault, and a panic raised inside bbolt becomes a
// CorruptError too, for damage done while the file is open. Check runs the
// same walk plus bbolt's consistency check and a comparison of the indexes
// with the records.
//
// The writer stats the path before and after every commit: once the path
// no longer names the open file (a file renamed over it, or removed), every
// write fails with store.ErrFileReplaced, since it would vanish at the next
// start. A commit the file system refuses (ENOSPC, EDQUOT, EROFS, EIO)
// fails with a *store.IOError.
package bolt
