package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
)

// Record encoding shared by the store implementations.
//
// Records are a small hand-written binary format rather than JSON or
// protobuf: the instance record is read and rewritten on every operation, and
// this format is several times faster than encoding/json and needs no
// generated code (see BenchmarkEncodeInstance). Each record starts with a tag
// byte that names its type and format version, so a later format can be read
// side by side with this one. Then the fields follow in declaration order:
//
//	string, []byte    uvarint length + bytes
//	uint32, uint64    uvarint
//	int32             zigzag varint
//	enum (uint8)      one byte
//	time.Time         8 bytes big-endian UnixNanos (see UnixNanos)
//	map[string]string uvarint count + (key, value) strings sorted by key
//	[]time.Duration   uvarint count + each as uvarint nanoseconds (not negative)
//
// Encoding is deterministic (params are sorted), so equal values give equal
// bytes: an etcd store can compare records by value. Empty params and source
// decode as nil.

// Record tags: type in the high nibble, format version in the low one.
const (
	tagInstanceV1  byte = 0x11
	tagInstanceV2  byte = 0x12 // V1 + Lease.Holder, Applied in place of LastRequest
	tagChangeV1    byte = 0x21
	tagChangeV2    byte = 0x22 // V1 + Device
	tagChangeV3    byte = 0x23 // V2 + Worker
	tagDeviceV1    byte = 0x61
	tagMachineV1   byte = 0x31
	tagDurationsV1 byte = 0x41
	tagBreakerV1   byte = 0x51
)

// ErrCorrupt is returned when a stored record cannot be decoded.
var ErrCorrupt = errors.New("corrupt record")

// zeroNanos encodes the zero time.Time. Real times are clamped above it.
const zeroNanos = math.MinInt64

var (
	minTime = time.Unix(0, zeroNanos+1)
	maxTime = time.Unix(0, math.MaxInt64)
)

// UnixNanos maps t to int64 nanoseconds since the Unix epoch such that the
// order of times is the order of the numbers: the zero time maps to
// math.MinInt64 (before every real time) and times outside the range of
// int64 nanoseconds (years before 1678 or after 2262) are clamped to it.
// The monotonic clock reading and the location are dropped.
func UnixNanos(t time.Time) int64 {
	switch {
	case t.IsZero():
		return zeroNanos
	case t.Before(minTime):
		return zeroNanos + 1
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// FromUnixNanos is the inverse of UnixNanos: math.MinInt64 gives the zero
// time, anything else a UTC time.
func FromUnixNanos(n int64) time.Time {
	if n == zeroNanos {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// AppendInstance appends the encoding of in to dst.
func AppendInstance(dst []byte, in *fsm.Instance) []byte {
	b := append(dst, tagInstanceV2)
	b = appendString(b, in.ID)
	b = appendString(b, in.Machine)
	b = binary.AppendUvarint(b, uint64(in.Version))
	b = appendString(b, in.Node)
	b = append(b, byte(in.Status))
	b = appendParams(b, in.Params)
	b = binary.AppendVarint(b, int64(in.Priority))
	b = binary.AppendVarint(b, int64(in.Attempt))
	b = appendTime(b, in.DueAt)
	b = binary.AppendUvarint(b, in.Lease.Token)
	b = appendString(b, in.Lease.Worker)
	b = appendString(b, in.Lease.Holder)
	b = appendTime(b, in.Lease.AcquiredAt)
	b = appendTime(b, in.Lease.ExpiresAt)
	b = binary.AppendUvarint(b, in.Token)
	b = binary.AppendUvarint(b, uint64(len(in.Applied)))
	for _, a := range in.Applied {
		b = appendString(b, a.RequestID)
		b = binary.AppendUvarint(b, a.Token)
		b = appendString(b, a.Holder)
		b = appendString(b, a.NextID)
		b = binary.AppendUvarint(b, a.NextToken)
	}
	b = binary.AppendUvarint(b, in.Rev)
	b = appendTime(b, in.CreatedAt)
	b = appendTime(b, in.UpdatedAt)
	return b
}

// DecodeInstance decodes a record written by AppendInstance, in the current
// format (V2) or the one before it (V1: no lease holder, and only the last
// request id, which becomes the one applied request, with the instance's
// last token). The result shares no memory with b. Malformed input gives an
// error wrapping ErrCorrupt, never a panic.
func DecodeInstance(b []byte) (fsm.Instance, error) {
	r := reader{b: b}
	tag := r.byte()
	if r.err == nil && tag != tagInstanceV1 && tag != tagInstanceV2 {
		r.fail("record tag %#x, want %#x or %#x", tag, tagInstanceV1, tagInstanceV2)
	}
	var in fsm.Instance
	in.ID = r.string()
	in.Machine = r.string()
	in.Version = r.uint32()
	in.Node = r.string()
	in.Status = fsm.Status(r.byte())
	in.Params = r.params()
	in.Priority = r.int32()
	in.Attempt = r.int32()
	in.DueAt = r.time()
	in.Lease.Token = r.uvarint()
	in.Lease.Worker = r.string()
	if tag == tagInstanceV2 {
		in.Lease.Holder = r.string()
	}
	in.Lease.AcquiredAt = r.time()
	in.Lease.ExpiresAt = r.time()
	in.Token = r.uvarint()
	if tag == tagInstanceV1 {
		if last := r.string(); last != "" {
			in.Applied = []fsm.Applied{{RequestID: last, Token: in.Token}}
		}
	} else {
		in.Applied = r.applied()
	}
	in.Rev = r.uvarint()
	in.CreatedAt = r.time()
	in.UpdatedAt = r.time()
	if err := r.finish("instance"); err != nil {
		return fsm.Instance{}, err
	}
	return in, nil
}

// applied reads an instance's applied requests: a count of at most
// fsm.MaxApplied, then each entry. None decodes as nil.
func (r *reader) applied() []fsm.Applied {
	n := r.uvarint()
	if n == 0 || r.err != nil {
		return nil
	}
	if n > fsm.MaxApplied {
		r.fail("%d applied requests, at most %d", n, fsm.MaxApplied)
		return nil
	}
	out := make([]fsm.Applied, n)
	for i := range out {
		a := &out[i]
		a.RequestID = r.string()
		a.Token = r.uvarint()
		a.Holder = r.string()
		a.NextID = r.string()
		a.NextToken = r.uvarint()
	}
	if r.err != nil {
		return nil
	}
	return out
}

// AppendChange appends the encoding of c to dst.
func AppendChange(dst []byte, c *fsm.Change) []byte {
	b := append(dst, tagChangeV3)
	b = binary.AppendUvarint(b, c.Seq)
	b = appendTime(b, c.At)
	b = appendString(b, c.Actor)
	b = append(b, byte(c.Kind))
	b = appendString(b, c.Instance)
	b = appendString(b, c.Machine)
	b = binary.AppendUvarint(b, uint64(c.Version))
	b = binary.AppendUvarint(b, uint64(c.FromVersion))
	b = appendString(b, c.Transition)
	b = appendString(b, c.FromNode)
	b = appendString(b, c.ToNode)
	b = append(b, byte(c.FromStatus), byte(c.ToStatus))
	b = binary.AppendUvarint(b, c.Token)
	b = binary.AppendVarint(b, int64(c.Attempt))
	b = appendTime(b, c.DueAt)
	b = appendParams(b, c.Params)
	b = appendString(b, c.Reason)
	b = appendString(b, c.Device)
	b = appendString(b, c.Worker)
	return b
}

// DecodeChange decodes a record written by AppendChange, in the current
// format (V3) or an older one (V2, without Worker; V1, without Device
// either). The result shares no memory with b.
func DecodeChange(b []byte) (fsm.Change, error) {
	r := reader{b: b}
	tag := r.byte()
	if r.err == nil && tag != tagChangeV1 && tag != tagChangeV2 && tag != tagChangeV3 {
		r.fail("record tag %#x, want %#x, %#x or %#x", tag, tagChangeV1, tagChangeV2, tagChangeV3)
	}
	var c fsm.Change
	c.Seq = r.uvarint()
	c.At = r.time()
	c.Actor = r.string()
	c.Kind = fsm.ChangeKind(r.byte())
	c.Instance = r.string()
	c.Machine = r.string()
	c.Version = r.uint32()
	c.FromVersion = r.uint32()
	c.Transition = r.string()
	c.FromNode = r.string()
	c.ToNode = r.string()
	c.FromStatus = fsm.Status(r.byte())
	c.ToStatus = fsm.Status(r.byte())
	c.Token = r.uvarint()
	c.Attempt = r.int32()
	c.DueAt = r.time()
	c.Params = r.params()
	c.Reason = r.string()
	if tag >= tagChangeV2 {
		c.Device = r.string()
	}
	if tag == tagChangeV3 {
		c.Worker = r.string()
	}
	if err := r.finish("change"); err != nil {
		return fsm.Change{}, err
	}
	return c, nil
}

// AppendMachine appends the encoding of m to dst.
func AppendMachine(dst []byte, m *MachineRecord) []byte {
	b := append(dst, tagMachineV1)
	b = appendString(b, m.ID)
	b = binary.AppendUvarint(b, uint64(m.Version))
	b = binary.AppendUvarint(b, uint64(len(m.Source)))
	b = append(b, m.Source...)
	b = appendString(b, m.Fingerprint)
	b = appendTime(b, m.DefinedAt)
	return b
}

// DecodeMachine decodes a record written by AppendMachine. The result
// shares no memory with b.
func DecodeMachine(b []byte) (MachineRecord, error) {
	r := reader{b: b}
	r.tag(tagMachineV1)
	var m MachineRecord
	m.ID = r.string()
	m.Version = r.uint32()
	if src := r.bytes(); len(src) > 0 {
		m.Source = slices.Clone(src)
	}
	m.Fingerprint = r.string()
	m.DefinedAt = r.time()
	if err := r.finish("machine"); err != nil {
		return MachineRecord{}, err
	}
	return m, nil
}

// AppendDurations appends the encoding of a list of durations (lease
// duration samples) to dst. Negative durations are stored as zero.
func AppendDurations(dst []byte, ds []time.Duration) []byte {
	b := append(dst, tagDurationsV1)
	b = binary.AppendUvarint(b, uint64(len(ds)))
	for _, d := range ds {
		b = binary.AppendUvarint(b, uint64(max(d, 0)))
	}
	return b
}

// DecodeDurations decodes a record written by AppendDurations. An empty
// list decodes as nil.
func DecodeDurations(b []byte) ([]time.Duration, error) {
	r := reader{b: b}
	r.tag(tagDurationsV1)
	n := r.uvarint()
	// Each duration takes at least one byte: bound the allocation by what
	// the input can hold.
	if n > uint64(len(r.b)) {
		r.fail("duration count %d past end", n)
	}
	var ds []time.Duration
	if n > 0 && r.err == nil {
		ds = make([]time.Duration, 0, n)
	}
	for range n {
		v := r.uvarint()
		if r.err != nil {
			break
		}
		if v > math.MaxInt64 {
			r.fail("duration out of range: %d", v)
			break
		}
		ds = append(ds, time.Duration(v))
	}
	if err := r.finish("durations"); err != nil {
		return nil, err
	}
	return ds, nil
}

// AppendBreaker appends the encoding of a machine's circuit breaker to dst:
// open as one byte (0 or 1), the failure bits as a uvarint, count and streak
// as one byte each, then the open time. A typical record is under 20 bytes.
func AppendBreaker(dst []byte, br *fsm.Breaker) []byte {
	b := append(dst, tagBreakerV1)
	open := byte(0)
	if br.Open {
		open = 1
	}
	b = append(b, open)
	b = binary.AppendUvarint(b, br.Failures)
	b = append(b, br.Count, br.Streak)
	return appendTime(b, br.OpenedAt)
}

// DecodeBreaker decodes a record written by AppendBreaker. A record that
// decodes to a state fsm.Breaker.Record cannot produce is corrupt.
func DecodeBreaker(b []byte) (fsm.Breaker, error) {
	r := reader{b: b}
	r.tag(tagBreakerV1)
	var br fsm.Breaker
	switch open := r.byte(); open {
	case 0, 1:
		br.Open = open == 1
	default:
		r.fail("breaker open flag %d", open)
	}
	br.Failures = r.uvarint()
	br.Count = r.byte()
	br.Streak = r.byte()
	br.OpenedAt = r.time()
	if r.err == nil && !br.Valid() {
		r.fail("invalid breaker state %+v", br)
	}
	if err := r.finish("breaker"); err != nil {
		return fsm.Breaker{}, err
	}
	return br, nil
}

// AppendDevice appends the encoding of d to dst.
func AppendDevice(dst []byte, d *fsm.Device) []byte {
	b := append(dst, tagDeviceV1)
	b = appendString(b, d.ID)
	b = appendString(b, d.Pool)
	b = appendParams(b, d.Capabilities)
	b = appendString(b, d.Machine)
	online := byte(0)
	if d.Online {
		online = 1
	}
	b = append(b, online)
	b = binary.AppendUvarint(b, d.Conn)
	b = appendTime(b, d.LastSeen)
	b = appendString(b, d.Node)
	b = appendString(b, d.Job)
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(d.Progress))
	b = binary.AppendUvarint(b, d.ReportSeq)
	b = binary.AppendUvarint(b, d.CommandSeq)
	b = binary.AppendUvarint(b, d.Pending.Seq)
	b = appendString(b, d.Pending.Name)
	b = appendString(b, d.Pending.Node)
	b = appendString(b, d.Pending.Job)
	return b
}

// DecodeDevice decodes a record written by AppendDevice. The result shares
// no memory with b.
func DecodeDevice(b []byte) (fsm.Device, error) {
	r := reader{b: b}
	r.tag(tagDeviceV1)
	var d fsm.Device
	d.ID = r.string()
	d.Pool = r.string()
	d.Capabilities = r.params()
	d.Machine = r.string()
	switch online := r.byte(); online {
	case 0, 1:
		d.Online = online == 1
	default:
		r.fail("device online flag %d", online)
	}
	d.Conn = r.uvarint()
	d.LastSeen = r.time()
	d.Node = r.string()
	d.Job = r.string()
	if len(r.b) < 8 {
		r.fail("truncated")
	} else {
		d.Progress = math.Float64frombits(binary.BigEndian.Uint64(r.b))
		r.b = r.b[8:]
	}
	d.ReportSeq = r.uvarint()
	d.CommandSeq = r.uvarint()
	d.Pending.Seq = r.uvarint()
	d.Pending.Name = r.string()
	d.Pending.Node = r.string()
	d.Pending.Job = r.string()
	if err := r.finish("device"); err != nil {
		return fsm.Device{}, err
	}
	return d, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTime(b []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(UnixNanos(t)))
}

func appendParams(b []byte, p map[string]string) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	switch len(p) {
	case 0:
	case 1:
		for k, v := range p {
			b = appendString(b, k)
			b = appendString(b, v)
		}
	default:
		for _, k := range slices.Sorted(maps.Keys(p)) {
			b = appendString(b, k)
			b = appendString(b, p[k])
		}
	}
	return b
}

// reader decodes fields from b. The first error sticks: later reads return
// zero values, and finish reports it.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
	}
	r.b = nil
}

func (r *reader) tag(want byte) {
	if got := r.byte(); r.err == nil && got != want {
		r.fail("record tag %#x, want %#x", got, want)
	}
}

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.fail("truncated")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad uvarint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) uint32() uint32 {
	v := r.uvarint()
	if v > math.MaxUint32 {
		r.fail("uint32 out of range: %d", v)
		return 0
	}
	return uint32(v)
}

func (r *reader) int32() int32 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	if v < math.MinInt32 || v > math.MaxInt32 {
		r.fail("int32 out of range: %d", v)
		return 0
	}
	return int32(v)
}

// bytes returns the next length-prefixed field without copying.
func (r *reader) bytes() []byte {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail("length %d past end", n)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) string() string {
	b := r.bytes()
	if len(b) == 0 {
		return ""
	}
	return string(b)
}

func (r *reader) time() time.Time {
	if len(r.b) < 8 {
		r.fail("truncated time")
		return time.Time{}
	}
	n := int64(binary.BigEndian.Uint64(r.b))
	r.b = r.b[8:]
	return FromUnixNanos(n)
}

func (r *reader) params() map[string]string {
	n := r.uvarint()
	if n == 0 {
		return nil
	}
	// Each pair takes at least two bytes: bound the allocation by what the
	// input can hold, so a corrupt count cannot ask for gigabytes.
	if n > uint64(len(r.b))/2 {
		r.fail("param count %d past end", n)
		return nil
	}
	p := make(map[string]string, n)
	for range n {
		k := r.string()
		v := r.string()
		if r.err != nil {
			return nil
		}
		p[k] = v
	}
	if uint64(len(p)) != n {
		r.fail("duplicate param key")
		return nil
	}
	return p
}

func (r *reader) finish(what string) error {
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	if r.err != nil {
		return fmt.Errorf("decode %s: %w", what, r.err)
	}
	return nil
}
