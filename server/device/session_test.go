package device

import (
	"context"
	"io"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
)

// floodConn is a device that sends n reports as fast as they are read.
type floodConn struct {
	mu   sync.Mutex
	sent uint64
	n    uint64
	acks []uint64
}

func (c *floodConn) Recv() (Message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sent == c.n {
		return Message{}, io.EOF
	}
	c.sent++
	m := Message{Report: fsm.DeviceReport{Seq: c.sent, Node: "ready"}}
	if c.sent == 1 {
		m.Register = &Registration{ID: "p1"}
	}
	return m, nil
}

func (c *floodConn) Send(reportSeq uint64, _ *fsm.DeviceCommand) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.acks = append(c.acks, reportSeq)
	return nil
}

// countingEngine runs rounds without a store and counts them.
type countingEngine struct{ reports int }

func (e *countingEngine) Connect(context.Context, Registration, fsm.DeviceReport) (uint64, *fsm.DeviceCommand, error) {
	return 1, nil, nil
}

func (e *countingEngine) Report(context.Context, string, uint64, fsm.DeviceReport) (*fsm.DeviceCommand, error) {
	e.reports++
	return nil, nil
}

func (e *countingEngine) Poke(context.Context, string, uint64) (*fsm.DeviceCommand, error) {
	return nil, nil
}
func (e *countingEngine) Disconnect(context.Context, string, uint64, string) error {
	return nil
}
func (e *countingEngine) WatchDevice(string) (<-chan struct{}, func()) {
	return make(chan struct{}), func() {}
}

// TestReportsRateLimited floods a session with 1 + 100 reports at a limit
// of 10 a second, burst 5: every report is handled and answered in order,
// but the last only after (100-5)/10 = 9.5 s. Without the limit they all
// went through at once.
func TestReportsRateLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &Sessions{ReportRate: 10, ReportBurst: 5}
		c := &floodConn{n: 101}
		e := &countingEngine{}
		start := time.Now()
		if err := s.Serve(t.Context(), e, c); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		if e.reports != 100 || len(c.acks) != 101 || c.acks[100] != 101 {
			t.Fatalf("%d reports handled, %d answered; want 100 and 101", e.reports, len(c.acks))
		}
		if took < 9500*time.Millisecond || took > 10*time.Second {
			t.Fatalf("100 reports at 10/s, burst 5, took %s; want 9.5s", took)
		}
	})
}
