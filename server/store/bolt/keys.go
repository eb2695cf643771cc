package bolt

import (
	"encoding/binary"
	"math"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// Buckets, all created at Open. Keys are big-endian and fixed-width where
// they must sort, so that a forward cursor yields the order a query needs.
// sep separates variable-length strings; ids may not contain it.
var (
	// bucketMeta holds the schema version.
	bucketMeta = []byte("meta")
	// bucketInstances: id -> instance record.
	bucketInstances = []byte("instances")
	// bucketByMachine: machine sep id -> nil, every instance of a machine in
	// id order.
	bucketByMachine = []byte("instances_by_machine")
	// bucketReady: readyKey -> nil for READY instances.
	bucketReady = []byte("ready")
	// bucketReadyMachine: machine sep readyKey -> nil.
	bucketReadyMachine = []byte("ready_by_machine")
	// bucketReadyNode: machine sep node sep readyKey -> nil.
	bucketReadyNode = []byte("ready_by_node")
	// bucketDue: timeKey(due) id -> nil for WAITING instances and leases
	// that expire.
	bucketDue = []byte("due")
	// bucketChanges: seq -> change record; the bucket's sequence is the
	// head of the changelog.
	bucketChanges = []byte("changes")
	// bucketHistory: instance sep seq -> nil. History reads the records from
	// bucketChanges.
	bucketHistory = []byte("history")
	// bucketMachines: id sep version -> machine record.
	bucketMachines = []byte("machines")
	// bucketDurations: machine sep version node -> durations record, the
	// recent successful lease durations of a node, oldest first.
	bucketDurations = []byte("durations")
	// bucketBreakers: machine -> breaker record, one per machine.
	bucketBreakers = []byte("breakers")

	// bucketFinished: timeKey(UpdatedAt) id -> nil for FINAL instances, in
	// the order they finished: what finished-instance retention deletes
	// first.
	bucketFinished = []byte("finished")

	// bucketDevices: id -> device record.
	bucketDevices = []byte("devices")
	// bucketQueues: device sep priority(4) timeKey(at)(8) job -> nil, each
	// device's queue of jobs in offer order.
	bucketQueues = []byte("device_queues")

	// allBuckets are every bucket, in an order that only ever grows at
	// the end: write commands of the log name buckets by their place here.
	allBuckets = [][]byte{
		bucketMeta, bucketInstances, bucketByMachine, bucketReady,
		bucketReadyMachine, bucketReadyNode, bucketDue, bucketChanges,
		bucketHistory, bucketMachines, bucketDurations, bucketBreakers,
		bucketDevices, bucketQueues, bucketFinished,
	}
)

const sep = 0

var (
	keySchema = []byte("schema")
	// schemaVersion is bumped when the key layout or record format changes
	// incompatibly.
	schemaVersion = []byte{1}
)

// timeKey maps t to a uint64 whose big-endian bytes sort like the times:
// the sign bit of store.UnixNanos is flipped so that the zero time and
// times before the epoch come first.
func timeKey(t time.Time) uint64 {
	return uint64(store.UnixNanos(t)) ^ (1 << 63)
}

func timeFromKey(k uint64) time.Time {
	return store.FromUnixNanos(int64(k ^ (1 << 63)))
}

// priorityKey maps priority so that higher priorities sort first:
// MaxInt32 -> 0, MinInt32 -> MaxUint32.
func priorityKey(p int32) uint32 {
	return uint32(int64(math.MaxInt32) - int64(p))
}

// readyKeyLen is the fixed part of a ready key: priority(4) due(8).
const readyKeyLen = 4 + 8

// appendReadyKey appends priority(4) timeKey(due)(8) id.
func appendReadyKey(b []byte, in *fsm.Instance) []byte {
	b = binary.BigEndian.AppendUint32(b, priorityKey(in.Priority))
	b = binary.BigEndian.AppendUint64(b, timeKey(in.DueAt))
	return append(b, in.ID...)
}

func appendStr(b []byte, s string) []byte {
	b = append(b, s...)
	return append(b, sep)
}

func machineKey(id string, version uint32) []byte {
	b := make([]byte, 0, len(id)+1+4)
	b = appendStr(b, id)
	return binary.BigEndian.AppendUint32(b, version)
}

// durationsKey is machine sep version(4) node: the version is fixed-width
// and the node comes last, so no two triples share a key.
func durationsKey(machine string, version uint32, node string) []byte {
	b := make([]byte, 0, len(machine)+1+4+len(node))
	b = appendStr(b, machine)
	b = binary.BigEndian.AppendUint32(b, version)
	return append(b, node...)
}

func historyKey(id string, seq uint64) []byte {
	b := make([]byte, 0, len(id)+1+8)
	b = appendStr(b, id)
	return binary.BigEndian.AppendUint64(b, seq)
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

// indexKeys are the keys an instance occupies in the index buckets; nil
// when it is absent from that index.
type indexKeys struct {
	byMachine, ready, readyMachine, readyNode, due, finished []byte
}

func keysOf(in *fsm.Instance) indexKeys {
	if in == nil {
		return indexKeys{}
	}
	var k indexKeys
	k.byMachine = appendStr(make([]byte, 0, len(in.Machine)+1+len(in.ID)), in.Machine)
	k.byMachine = append(k.byMachine, in.ID...)
	if in.Status == fsm.StatusReady {
		// One buffer for the three ready keys.
		n := readyKeyLen + len(in.ID)
		m := len(in.Machine) + 1
		buf := make([]byte, 0, n+(m+n)+(m+len(in.Node)+1+n))
		buf = appendReadyKey(buf, in)
		k.ready = buf[:n:n]
		buf = appendStr(buf, in.Machine)
		buf = appendReadyKey(buf, in)
		k.readyMachine = buf[n : n+m+n : n+m+n]
		start := len(buf)
		buf = appendStr(buf, in.Machine)
		buf = appendStr(buf, in.Node)
		buf = appendReadyKey(buf, in)
		k.readyNode = buf[start:]
	}
	if at, ok := in.DueTime(); ok {
		k.due = binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(in.ID)), timeKey(at))
		k.due = append(k.due, in.ID...)
	}
	if in.Status == fsm.StatusFinal {
		k.finished = binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(in.ID)), timeKey(in.UpdatedAt))
		k.finished = append(k.finished, in.ID...)
	}
	return k
}
