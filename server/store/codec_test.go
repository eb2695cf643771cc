package store_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"maps"
	"math"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

func sampleInstance() fsm.Instance {
	now := time.Date(2025, 3, 4, 5, 6, 7, 891011, time.UTC)
	return fsm.Instance{
		ID:       "report-42",
		Machine:  "report",
		Version:  3,
		Node:     "uploadable",
		Status:   fsm.StatusLeased,
		Params:   map[string]string{"url": "https://example.com/r/42", "region": "eu", "": "empty key"},
		Priority: -7,
		Attempt:  2,
		DueAt:    now.Add(-time.Minute),
		Lease: fsm.Lease{
			Token:      9,
			Worker:     "worker-1",
			Holder:     "alice",
			AcquiredAt: now,
			ExpiresAt:  now.Add(30 * time.Second),
		},
		Token: 9,
		Applied: []fsm.Applied{
			{RequestID: "req-7", Token: 8, Holder: "alice", NextID: "report-42", NextToken: 9},
			{RequestID: "req-6", Token: 7},
		},
		Rev:       17,
		CreatedAt: now.Add(-time.Hour),
		UpdatedAt: now,
	}
}

func sampleChange() fsm.Change {
	now := time.Date(2025, 3, 4, 5, 6, 7, 891011, time.UTC)
	return fsm.Change{
		Seq: 1234, At: now, Actor: "worker-1", Kind: fsm.ChangeTransitioned,
		Instance: "report-42", Machine: "report", Version: 3, FromVersion: 2, Transition: "ok",
		FromNode: "downloadable", ToNode: "uploadable",
		FromStatus: fsm.StatusLeased, ToStatus: fsm.StatusReady,
		Token: 9, Attempt: 1, DueAt: now, Params: map[string]string{"size": "12"},
		Reason: "because", Device: "printer-1", Worker: "host-3/pid-12",
	}
}

func TestInstanceRoundtrip(t *testing.T) {
	cases := map[string]fsm.Instance{
		"full": sampleInstance(),
		"zero": {},
		"extremes": {
			ID: "x", Priority: math.MinInt32, Attempt: math.MaxInt32, Version: math.MaxUint32,
			Token: math.MaxUint64, Rev: math.MaxUint64,
			DueAt:     time.Unix(-5, 3).UTC(), // before the epoch
			CreatedAt: time.Unix(0, 0).UTC(),  // the epoch itself is not the zero time
		},
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			b := store.AppendInstance(nil, &in)
			got, err := store.DecodeInstance(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, in) {
				t.Fatalf("roundtrip:\n got %+v\nwant %+v", got, in)
			}
		})
	}
}

func TestTimesRoundtrip(t *testing.T) {
	local := time.FixedZone("X", 3600)
	in := fsm.Instance{
		DueAt:     time.Now(), // has a monotonic reading
		CreatedAt: time.Date(2030, 1, 1, 0, 0, 0, 1, local),
	}
	got, err := store.DecodeInstance(store.AppendInstance(nil, &in))
	if err != nil {
		t.Fatal(err)
	}
	if !got.DueAt.Equal(in.DueAt) || !got.CreatedAt.Equal(in.CreatedAt) {
		t.Fatalf("times changed: %v %v", got.DueAt, got.CreatedAt)
	}
	if !got.UpdatedAt.IsZero() || !got.Lease.ExpiresAt.IsZero() {
		t.Fatalf("zero times did not stay zero: %v %v", got.UpdatedAt, got.Lease.ExpiresAt)
	}
	if got.DueAt.Location() != time.UTC {
		t.Fatalf("location %v, want UTC", got.DueAt.Location())
	}
}

func TestUnixNanosOrder(t *testing.T) {
	times := []time.Time{
		{},
		time.Date(1, 1, 2, 0, 0, 0, 0, time.UTC), // before the int64 range: clamped
		time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Unix(-1, 0),
		time.Unix(0, 0),
		time.Unix(0, 1),
		time.Now(),
		time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), // after the range: clamped
	}
	for i := 1; i < len(times); i++ {
		a, b := store.UnixNanos(times[i-1]), store.UnixNanos(times[i])
		if a >= b {
			t.Errorf("UnixNanos(%v)=%d not before UnixNanos(%v)=%d", times[i-1], a, times[i], b)
		}
	}
	if !store.FromUnixNanos(store.UnixNanos(time.Time{})).IsZero() {
		t.Error("zero time does not roundtrip")
	}
	if store.FromUnixNanos(0).IsZero() {
		t.Error("the epoch decodes as the zero time")
	}
}

func TestChangeRoundtrip(t *testing.T) {
	for _, c := range []fsm.Change{sampleChange(), {}} {
		got, err := store.DecodeChange(store.AppendChange(nil, &c))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("roundtrip:\n got %+v\nwant %+v", got, c)
		}
	}
}

// TestChangeV1Decodes: changes written before Device existed still decode.
func TestChangeV1Decodes(t *testing.T) {
	c := sampleChange()
	c.Device, c.Worker = "", ""
	b := store.AppendChange(nil, &c)
	// V1 is V3 without the trailing Device and Worker strings (here empty:
	// one zero length byte each).
	v1 := append([]byte{0x21}, b[1:len(b)-2]...)
	got, err := store.DecodeChange(v1)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("v1 decode:\n got %+v\nwant %+v", got, c)
	}
}

// TestChangeV2Decodes: changes written before Worker existed still decode.
func TestChangeV2Decodes(t *testing.T) {
	c := sampleChange()
	c.Worker = ""
	b := store.AppendChange(nil, &c)
	v2 := append([]byte{0x22}, b[1:len(b)-1]...)
	got, err := store.DecodeChange(v2)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("v2 decode:\n got %+v\nwant %+v", got, c)
	}
}

// TestInstanceV1Decodes: instances written before lease holders and the
// applied-request window existed still decode; their last request id is
// the one applied request, with the instance's last token, which is what
// the V1 rule recognised as a retry.
func TestInstanceV1Decodes(t *testing.T) {
	in := sampleInstance()
	in.Lease.Holder = ""
	in.Applied = []fsm.Applied{{RequestID: "req-8", Token: in.Token}}
	// The V1 layout, field by field, as it was written.
	b := []byte{0x11}
	str := func(s string) { b = binary.AppendUvarint(b, uint64(len(s))); b = append(b, s...) }
	tm := func(t time.Time) { b = binary.BigEndian.AppendUint64(b, uint64(store.UnixNanos(t))) }
	str(in.ID)
	str(in.Machine)
	b = binary.AppendUvarint(b, uint64(in.Version))
	str(in.Node)
	b = append(b, byte(in.Status))
	b = binary.AppendUvarint(b, uint64(len(in.Params)))
	for _, k := range slices.Sorted(maps.Keys(in.Params)) {
		str(k)
		str(in.Params[k])
	}
	b = binary.AppendVarint(b, int64(in.Priority))
	b = binary.AppendVarint(b, int64(in.Attempt))
	tm(in.DueAt)
	b = binary.AppendUvarint(b, in.Lease.Token)
	str(in.Lease.Worker)
	tm(in.Lease.AcquiredAt)
	tm(in.Lease.ExpiresAt)
	b = binary.AppendUvarint(b, in.Token)
	str("req-8")
	b = binary.AppendUvarint(b, in.Rev)
	tm(in.CreatedAt)
	tm(in.UpdatedAt)
	got, err := store.DecodeInstance(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, in) {
		t.Fatalf("v1 decode:\n got %+v\nwant %+v", got, in)
	}
}

func TestMachineRoundtrip(t *testing.T) {
	for _, m := range []store.MachineRecord{
		{ID: "report", Version: 2, Source: []byte("id: report\n"), Fingerprint: "sha256:abc", DefinedAt: time.Unix(100, 5).UTC()},
		{},
	} {
		got, err := store.DecodeMachine(store.AppendMachine(nil, &m))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("roundtrip:\n got %+v\nwant %+v", got, m)
		}
	}
}

func TestDeterministic(t *testing.T) {
	in := sampleInstance()
	want := store.AppendInstance(nil, &in)
	for range 20 {
		in2 := in.Clone()
		if got := store.AppendInstance(nil, &in2); !bytes.Equal(got, want) {
			t.Fatal("encoding depends on map order")
		}
	}
}

func TestDecodeCorrupt(t *testing.T) {
	in := sampleInstance()
	good := store.AppendInstance(nil, &in)
	for i := range len(good) {
		if _, err := store.DecodeInstance(good[:i]); !errors.Is(err, store.ErrCorrupt) {
			t.Fatalf("truncated at %d: err %v, want ErrCorrupt", i, err)
		}
	}
	if _, err := store.DecodeInstance(append(good, 0)); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("trailing byte: err %v", err)
	}
	c := sampleChange()
	if _, err := store.DecodeInstance(store.AppendChange(nil, &c)); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("change decoded as instance: err %v", err)
	}
}

func FuzzDecodeInstance(f *testing.F) {
	in := sampleInstance()
	f.Add(store.AppendInstance(nil, &in))
	f.Add(store.AppendInstance(nil, &fsm.Instance{}))
	f.Add([]byte{0x11, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := store.DecodeInstance(b)
		if err != nil {
			return
		}
		// Whatever decodes must encode back to a record that decodes to the
		// same value.
		again, err := store.DecodeInstance(store.AppendInstance(nil, &got))
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !reflect.DeepEqual(again, got) {
			t.Fatalf("not stable:\n%+v\n%+v", again, got)
		}
	})
}

func FuzzDecodeChange(f *testing.F) {
	c := sampleChange()
	f.Add(store.AppendChange(nil, &c))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = store.DecodeChange(b)
	})
}

func FuzzDecodeMachine(f *testing.F) {
	m := store.MachineRecord{ID: "m", Version: 1, Source: []byte("x")}
	f.Add(store.AppendMachine(nil, &m))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = store.DecodeMachine(b)
	})
}

func BenchmarkEncodeInstance(b *testing.B) {
	in := sampleInstance()
	b.Run("binary", func(b *testing.B) {
		buf := make([]byte, 0, 512)
		b.ReportAllocs()
		for b.Loop() {
			buf = store.AppendInstance(buf[:0], &in)
		}
		b.ReportMetric(float64(len(buf)), "bytes/record")
	})
	b.Run("json", func(b *testing.B) {
		var n int
		b.ReportAllocs()
		for b.Loop() {
			out, _ := json.Marshal(&in)
			n = len(out)
		}
		b.ReportMetric(float64(n), "bytes/record")
	})
}

func BenchmarkDecodeInstance(b *testing.B) {
	in := sampleInstance()
	b.Run("binary", func(b *testing.B) {
		enc := store.AppendInstance(nil, &in)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := store.DecodeInstance(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		enc, _ := json.Marshal(&in)
		b.ReportAllocs()
		for b.Loop() {
			var out fsm.Instance
			if err := json.Unmarshal(enc, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestDurationsRoundtrip(t *testing.T) {
	cases := map[string][]time.Duration{
		"none":     nil,
		"one":      {time.Second},
		"extremes": {0, 1, math.MaxInt64, 1500 * time.Millisecond},
	}
	for name, ds := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := store.DecodeDurations(store.AppendDurations(nil, ds))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, ds) {
				t.Fatalf("got %v, want %v", got, ds)
			}
		})
	}
	if got, err := store.DecodeDurations(store.AppendDurations(nil, []time.Duration{-time.Second})); err != nil || !reflect.DeepEqual(got, []time.Duration{0}) {
		t.Fatalf("negative duration decodes as %v, %v; want [0]", got, err)
	}
	good := store.AppendDurations(nil, []time.Duration{time.Second, time.Minute})
	for _, bad := range [][]byte{
		nil,
		good[:len(good)-1],
		append(slices.Clone(good), 0),
		{0x41, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},       // count 2^64-1
		{0x41, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, // 2^64-1 ns
		store.AppendMachine(nil, &store.MachineRecord{ID: "m"}),
	} {
		if _, err := store.DecodeDurations(bad); !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("DecodeDurations(%x): err %v, want ErrCorrupt", bad, err)
		}
	}
}

func FuzzDecodeDurations(f *testing.F) {
	f.Add(store.AppendDurations(nil, []time.Duration{time.Second, 0, math.MaxInt64}))
	f.Add([]byte{0x41, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := store.DecodeDurations(b)
		if err != nil {
			return
		}
		again, err := store.DecodeDurations(store.AppendDurations(nil, got))
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("not stable: %v, %v (err %v)", got, again, err)
		}
	})
}

func TestBreakerRoundtrip(t *testing.T) {
	cases := map[string]fsm.Breaker{
		"zero":   {},
		"closed": {Failures: 0b101, Count: 3, Streak: 1},
		"open": {Open: true, Failures: 1<<fsm.BreakerWindow - 1, Count: fsm.BreakerWindow,
			OpenedAt: time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)},
	}
	for name, br := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := store.DecodeBreaker(store.AppendBreaker(nil, &br))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, br) {
				t.Fatalf("got %+v, want %+v", got, br)
			}
		})
	}
	good := store.AppendBreaker(nil, &fsm.Breaker{Failures: 1, Count: 1})
	for _, bad := range [][]byte{
		nil,
		good[:len(good)-1],
		append(slices.Clone(good), 0),
		store.AppendBreaker(nil, &fsm.Breaker{Count: fsm.MaxBreakerWindow + 1}), // past any window
		store.AppendBreaker(nil, &fsm.Breaker{Failures: 0b100, Count: 2}),       // bits past the count
		store.AppendBreaker(nil, &fsm.Breaker{Open: true}),                      // open without a time
		{0x51, 0x02, 0x00, 0x00, 0x00, 0x80, 0, 0, 0, 0, 0, 0, 0},               // open flag 2
		store.AppendDurations(nil, nil),
	} {
		if _, err := store.DecodeBreaker(bad); !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("DecodeBreaker(%x): err %v, want ErrCorrupt", bad, err)
		}
	}
}

func FuzzDecodeBreaker(f *testing.F) {
	f.Add(store.AppendBreaker(nil, &fsm.Breaker{Open: true, Failures: 7, Count: 30, Streak: 2, OpenedAt: time.Unix(1, 2)}))
	f.Add(store.AppendBreaker(nil, &fsm.Breaker{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := store.DecodeBreaker(b)
		if err != nil {
			return
		}
		again, err := store.DecodeBreaker(store.AppendBreaker(nil, &got))
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("re-decode of %+v: %+v, %v", got, again, err)
		}
	})
}

func TestDeviceRoundtrip(t *testing.T) {
	full := fsm.Device{
		ID: "printer-1", Pool: "lab", Capabilities: map[string]string{"bed": "250x210", "material": "pla"},
		Machine: "printer", Online: true, Conn: 7, LastSeen: time.Unix(100, 5).UTC(), Node: "printing",
		Job: "o-1", Progress: 0.5, ReportSeq: 12, CommandSeq: 3,
		Pending: fsm.Command{Seq: 3, Name: "print", Node: "ready", Job: "o-1"},
	}
	for _, d := range []fsm.Device{full, {}} {
		got, err := store.DecodeDevice(store.AppendDevice(nil, &d))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, d) {
			t.Fatalf("roundtrip:\n got %+v\nwant %+v", got, d)
		}
	}
	b := store.AppendDevice(nil, &full)
	for i := range b {
		if _, err := store.DecodeDevice(b[:i]); !errors.Is(err, store.ErrCorrupt) {
			t.Fatalf("truncated to %d bytes: %v, want ErrCorrupt", i, err)
		}
	}
}
