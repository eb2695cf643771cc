package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"go.etcd.io/bbolt"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// Check examines the database file at path without changing it and writes
// a summary to w: the file's structure (meta pages, length, every reachable
// page, as Open checks it), every record's checksum and encoding, bbolt's
// own consistency check (page references and the freelist), and the
// indexes against the records (every instance in exactly the index entries
// its state calls for, every history entry naming a stored change, the
// changelog without a gap). It returns nil for a sound file and otherwise a
// *store.CorruptError listing the problems.
//
// It takes a shared lock on the file, so it waits (DefaultTimeout) for, and
// then refuses, a file a running server holds: check a backup of a live
// database instead (dfsmr backup).
func Check(path string, w io.Writer) error {
	began := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := lockShared(f, DefaultTimeout); err != nil {
		if errors.Is(err, ErrLocked) {
			return fmt.Errorf("database %s: %w: a running server has it open; check a backup of it instead (dfsmr backup)", path, ErrLocked)
		}
		return fmt.Errorf("database %s: lock: %w", path, err)
	}

	ix := newIndexCheck()
	c, err := checkFile(f, path, ix.add)
	if err != nil {
		fmt.Fprintf(w, "%s: DAMAGED: %v\n", path, err)
		return &store.CorruptError{Path: path, Reason: err.Error()}
	}
	fmt.Fprintf(w, "%s: %d bytes, page size %d, transaction %d, %d pages in use of %d\n",
		path, c.size, c.meta.pageSize, c.meta.txid, c.pages, c.meta.pgid)
	var problems []string
	if c.metaNote != "" {
		problems = append(problems, c.metaNote+" (the other meta page was used; the last commit may be missing)")
	}
	problems = append(problems, c.structural...)
	if len(c.structural) == 0 {
		problems = append(problems, boltCheck(path)...)
	}
	for _, ce := range c.records {
		problems = append(problems, fmt.Sprintf("record %s/%q: %s", ce.Bucket, ce.Key, ce.Reason))
	}
	problems = append(problems, ix.problems(c.present)...)

	if !c.sealed {
		fmt.Fprintln(w, "records carry no checksums yet (written by an older version; the next start adds them)")
	}
	for _, name := range allBuckets {
		if n := c.counts[string(name)]; n > 0 {
			fmt.Fprintf(w, "  %-22s %d keys\n", name, n)
		}
	}
	if len(problems) == 0 {
		fmt.Fprintf(w, "OK: no problems found (%v)\n", time.Since(began).Round(time.Millisecond))
		return nil
	}
	fmt.Fprintf(w, "DAMAGED: %d problems:\n", len(problems))
	for _, p := range problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
	return &store.CorruptError{Path: path, Reason: fmt.Sprintf("%d problems: %s", len(problems), problemList(problems))}
}

// boltCheck runs bbolt's consistency check (every page referenced once,
// and the freelist) on a file the walk found sound.
func boltCheck(path string) (problems []string) {
	db, err := openDB(path, &bbolt.Options{ReadOnly: true, Timeout: DefaultTimeout})
	if err != nil {
		return []string{err.Error()}
	}
	defer db.Close()
	err = db.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			problems = append(problems, "bbolt: "+err.Error())
		}
		return nil
	})
	if err != nil {
		problems = append(problems, err.Error())
	}
	return problems
}

// indexCheck gathers what Check compares once the walk is done.
type indexCheck struct {
	decodeErrs []string
	// want are the index entries the instance records call for, have the
	// ones stored, per index bucket.
	want, have map[string]map[string]bool
	// corruptIDs are instances whose record is unreadable: their index
	// entries cannot be judged.
	corruptIDs map[string]bool
	changes    []uint64
	history    []uint64 // change numbers history entries point to
	sealed     bool
}

var indexBuckets = [][]byte{bucketByMachine, bucketReady, bucketReadyMachine, bucketReadyNode, bucketDue, bucketFinished}

func newIndexCheck() *indexCheck {
	ix := &indexCheck{want: map[string]map[string]bool{}, have: map[string]map[string]bool{}, corruptIDs: map[string]bool{}}
	for _, b := range indexBuckets {
		ix.want[string(b)], ix.have[string(b)] = map[string]bool{}, map[string]bool{}
	}
	return ix
}

// add sees every entry of the top-level buckets, the meta bucket first.
func (ix *indexCheck) add(bucket string, k, v []byte) {
	if bucket == string(bucketMeta) && bytes.Equal(k, keyChecksums) {
		ix.sealed = bytes.Equal(v, checksumCRC32C)
	}
	if sealedBuckets[bucket] {
		rec := v
		if ix.sealed {
			var reason string
			if rec, reason = unseal(k, v); reason != "" {
				if bucket == string(bucketInstances) {
					ix.corruptIDs[string(k)] = true
				}
				return // listed by the walk
			}
		}
		if err := decode(bucket, k, rec, ix); err != nil {
			ix.decodeErrs = append(ix.decodeErrs, fmt.Sprintf("record %s/%q: %v", bucket, k, err))
			if bucket == string(bucketInstances) {
				ix.corruptIDs[string(k)] = true
			}
		}
		return
	}
	if have, ok := ix.have[bucket]; ok {
		have[string(k)] = true
	}
	if bucket == string(bucketHistory) && len(k) >= 9 {
		ix.history = append(ix.history, binary.BigEndian.Uint64(k[len(k)-8:]))
	}
}

func decode(bucket string, k, rec []byte, ix *indexCheck) error {
	var err error
	switch bucket {
	case string(bucketInstances):
		var in fsm.Instance
		if in, err = store.DecodeInstance(rec); err == nil {
			if in.ID != string(k) {
				return fmt.Errorf("holds instance %q", in.ID)
			}
			keys := keysOf(&in)
			for i, key := range [][]byte{keys.byMachine, keys.ready, keys.readyMachine, keys.readyNode, keys.due, keys.finished} {
				if key != nil {
					ix.want[string(indexBuckets[i])][string(key)] = true
				}
			}
		}
	case string(bucketChanges):
		if _, err = store.DecodeChange(rec); err == nil && len(k) == 8 {
			ix.changes = append(ix.changes, binary.BigEndian.Uint64(k))
		}
	case string(bucketMachines):
		_, err = store.DecodeMachine(rec)
	case string(bucketDurations):
		_, err = store.DecodeDurations(rec)
	case string(bucketBreakers):
		_, err = store.DecodeBreaker(rec)
	case string(bucketDevices):
		_, err = store.DecodeDevice(rec)
	}
	return err
}

// problems compares the indexes with the records. An index bucket the file
// does not have yet is built by the next Open (see fillFinished).
func (ix *indexCheck) problems(present map[string]bool) []string {
	out := ix.decodeErrs
	for _, b := range indexBuckets {
		name := string(b)
		if !present[name] {
			continue
		}
		var missing, extra int
		var example string
		for k := range ix.want[name] {
			if !ix.have[name][k] {
				missing++
				example = fmt.Sprintf("%q missing", k)
			}
		}
		for k := range ix.have[name] {
			if !ix.want[name][k] && !ix.corruptIDs[indexedID(b, []byte(k))] {
				extra++
				example = fmt.Sprintf("%q names no instance in that state", k)
			}
		}
		if missing+extra > 0 {
			out = append(out, fmt.Sprintf("index %s: %d entries missing, %d stray (e.g. %s)", name, missing, extra, example))
		}
	}
	// Retention deletes the oldest changes: the changelog runs without a
	// gap from its oldest change on.
	slices.Sort(ix.changes)
	for i, seq := range ix.changes {
		if i > 0 && seq != ix.changes[i-1]+1 {
			out = append(out, fmt.Sprintf("changelog: change %d follows %d", seq, ix.changes[i-1]))
			break
		}
	}
	var dangling int
	for _, seq := range ix.history {
		if _, ok := slices.BinarySearch(ix.changes, seq); !ok {
			dangling++
		}
	}
	if dangling > 0 {
		out = append(out, fmt.Sprintf("history: %d entries name a missing or unreadable change", dangling))
	}
	return out
}

// indexedID returns the instance id of an index key.
func indexedID(bucket, k []byte) string {
	switch {
	case bytes.Equal(bucket, bucketReady):
		k = k[min(len(k), readyKeyLen):]
	case bytes.Equal(bucket, bucketDue), bytes.Equal(bucket, bucketFinished):
		k = k[min(len(k), 8):]
	case bytes.Equal(bucket, bucketByMachine):
		_, k, _ = bytes.Cut(k, []byte{sep})
	case bytes.Equal(bucket, bucketReadyMachine):
		_, k, _ = bytes.Cut(k, []byte{sep})
		k = k[min(len(k), readyKeyLen):]
	case bytes.Equal(bucket, bucketReadyNode):
		_, k, _ = bytes.Cut(k, []byte{sep})
		_, k, _ = bytes.Cut(k, []byte{sep})
		k = k[min(len(k), readyKeyLen):]
	}
	return string(k)
}
