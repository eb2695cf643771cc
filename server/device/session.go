package device

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/dfsmr/dfsmr/server/fsm"
	"golang.org/x/time/rate"
)

// Registration is who a device says it is when its stream opens.
type Registration struct {
	ID           string
	Pool         string
	Capabilities map[string]string
	// Machine is the device machine; empty: the server's default
	// ("printer").
	Machine string
}

// ErrReplaced ends a device's stream when a newer stream of the same
// device took over (or the device is no longer online).
var ErrReplaced = errors.New("device stream replaced by a newer one")

// ErrShutdown ends every device stream when the server stops.
var ErrShutdown = errors.New("server is shutting down")

// Engine is what a session needs from the engine: one transaction per
// round, and pokes when something concerning the device is committed.
type Engine interface {
	Connect(ctx context.Context, reg Registration, rep fsm.DeviceReport) (conn uint64, cmd *fsm.DeviceCommand, err error)
	Report(ctx context.Context, id string, conn uint64, rep fsm.DeviceReport) (*fsm.DeviceCommand, error)
	Poke(ctx context.Context, id string, conn uint64) (*fsm.DeviceCommand, error)
	Disconnect(ctx context.Context, id string, conn uint64, reason string) error
	WatchDevice(id string) (<-chan struct{}, func())
}

// Message is one message a device sends: Register only on the first.
type Message struct {
	Register *Registration
	Report   fsm.DeviceReport
}

// Conn is one device's stream, as the session sees it.
type Conn interface {
	// Recv returns the next message; io.EOF when the device closed its
	// side.
	Recv() (Message, error)
	// Send answers a round: reportSeq is the report it answers (0 for a
	// round of the server's own); cmd may be nil.
	Send(reportSeq uint64, cmd *fsm.DeviceCommand) error
}

// Sessions are the live device streams of a server, at most one per
// device: a newer stream of a device ends the older one with ErrReplaced.
// A session holds the connection and nothing else: every round reads the
// store, so a restarted server (or another replica) serves a device the
// same way.
//
// ReportRate and ReportBurst bound each stream's reports: a token bucket
// per stream refills at ReportRate reports a second up to ReportBurst. A
// report past the bucket is not refused: the session waits for a token
// before it reads the next message, so a flooding device is slowed down
// by its stream's flow control, and every report is still answered, in
// order. A report is a device's whole state, so a delayed one is still
// right when it is handled. Zero ReportRate: no limit.
type Sessions struct {
	ReportRate  float64
	ReportBurst int

	mu     sync.Mutex
	live   map[string]*session
	closed bool
}

type session struct {
	cancel context.CancelCauseFunc
}

func (s *Sessions) add(id string, cancel context.CancelCauseFunc) (*session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrShutdown
	}
	if s.live == nil {
		s.live = map[string]*session{}
	}
	if old := s.live[id]; old != nil {
		old.cancel(ErrReplaced)
	}
	se := &session{cancel: cancel}
	s.live[id] = se
	return se, nil
}

func (s *Sessions) remove(id string, se *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live[id] == se {
		delete(s.live, id)
	}
}

// Len returns the number of live sessions.
func (s *Sessions) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live)
}

// Close ends every session with ErrShutdown and refuses new ones.
func (s *Sessions) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, se := range s.live {
		se.cancel(ErrShutdown)
	}
}

// Serve runs one device's stream until it ends: the first message
// registers the device, then every message and every poke runs a round.
// When it returns the device is offline (unless a newer stream took over);
// its job is left as it is.
func (s *Sessions) Serve(ctx context.Context, eng Engine, c Conn) (err error) {
	first, err := c.Recv()
	if err != nil {
		return err
	}
	if first.Register == nil {
		return &fsm.InvalidError{Field: "register", Reason: "required on the first message of the stream"}
	}
	reg := *first.Register
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	se, err := s.add(reg.ID, cancel)
	if err != nil {
		return err
	}
	defer s.remove(reg.ID, se)
	// Watch before the first round, so that nothing committed after it is
	// missed.
	poke, stop := eng.WatchDevice(reg.ID)
	defer stop()
	conn, cmd, err := eng.Connect(ctx, reg, first.Report)
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return err
	}
	defer func() {
		reason := "closed by the device"
		if err != nil {
			reason = "stream ended: " + err.Error()
		}
		// The stream's context is over; the record must still be written.
		if derr := eng.Disconnect(context.WithoutCancel(ctx), reg.ID, conn, reason); derr != nil && err == nil {
			err = derr
		}
	}()
	if err := c.Send(first.Report.Seq, cmd); err != nil {
		return err
	}

	msgs := make(chan Message)
	recvErr := make(chan error, 1)
	var limit *rate.Limiter
	if s.ReportRate > 0 {
		limit = rate.NewLimiter(rate.Limit(s.ReportRate), max(s.ReportBurst, 1))
	}
	go func() {
		for {
			if limit != nil {
				if err := limit.Wait(ctx); err != nil {
					return // the stream is ending
				}
			}
			m, err := c.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case m := <-msgs:
			if m.Register != nil {
				return &fsm.InvalidError{Field: "register", Reason: "only on the first message of the stream"}
			}
			cmd, err := eng.Report(ctx, reg.ID, conn, m.Report)
			if err != nil {
				if ctx.Err() != nil {
					return context.Cause(ctx)
				}
				return fmt.Errorf("report %d: %w", m.Report.Seq, err)
			}
			if err := c.Send(m.Report.Seq, cmd); err != nil {
				return err
			}
		case <-poke:
			cmd, err := eng.Poke(ctx, reg.ID, conn)
			if err != nil {
				if ctx.Err() != nil {
					return context.Cause(ctx)
				}
				return err
			}
			if cmd != nil {
				if err := c.Send(0, cmd); err != nil {
					return err
				}
			}
		}
	}
}
