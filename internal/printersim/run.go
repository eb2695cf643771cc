package printersim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/internal/clock"
)

// Link defaults.
const (
	// DefaultReconnectDelay is how long a printer waits before it opens a
	// new stream after its connection dropped or its stream ended.
	DefaultReconnectDelay = time.Second
	// DefaultRestartDelay is how long a printer stays dark after a power
	// loss before its firmware is back and connects.
	DefaultRestartDelay = 2 * time.Second
	// goodbyeWait bounds how long a printer that shuts down waits for the
	// server to end its stream after it closed its side.
	goodbyeWait = 2 * time.Second
)

// Link is how a simulated printer talks to the server. Its zero value,
// given a Client, is a reliable link on the wall clock that
// rejects stale commands.
type Link struct {
	// Client opens the Connect streams (Client.ConnectDevice). Required.
	Client *client.Client
	// Pool is the pool the printer registers in. Empty: none.
	Pool string
	// Capabilities are registered as they are.
	Capabilities map[string]string
	// Clock drives prints, progress and delays. Nil: the wall clock.
	Clock clock.Clock
	// DropRate is the probability, in [0, 1], that the connection drops
	// right after a message is sent or received: the stream is cut without
	// a goodbye, and the printer reconnects after ReconnectDelay. Zero:
	// never.
	DropRate float64
	// ReconnectDelay is the wait before a new stream after a drop or an
	// ended stream. Zero: DefaultReconnectDelay.
	ReconnectDelay time.Duration
	// RestartDelay is how long the printer stays dark after a power loss.
	// Zero: DefaultRestartDelay.
	RestartDelay time.Duration
	// ReportEvery is the interval of the printer's status reports (with
	// its progress while printing) when nothing changes: a heartbeat that
	// runs a round in every node. Zero: the printer reports only when its
	// state changes.
	ReportEvery time.Duration
	// IgnoreStale makes the printer drop stale or late commands without a
	// word instead of reporting a CommandRejection.
	IgnoreStale bool
	// OnEvent, when set, receives every event of the printer, from the
	// printer's goroutine.
	OnEvent func(Event)
	// OnRound, when set, receives the latency of every round the printer
	// started: from sending a report to receiving the answer to it.
	OnRound func(time.Duration)
}

// WithDefaults returns l with its zero fields set to their defaults.
func (l Link) WithDefaults() Link {
	if l.Clock == nil {
		l.Clock = clock.Real{}
	}
	if l.ReconnectDelay == 0 {
		l.ReconnectDelay = DefaultReconnectDelay
	}
	if l.RestartDelay == 0 {
		l.RestartDelay = DefaultRestartDelay
	}
	return l
}

// Validate reports the first invalid field.
func (l Link) Validate() error {
	switch {
	case l.Client == nil:
		return errors.New("link: no Client")
	case !(l.DropRate >= 0 && l.DropRate <= 1):
		return fmt.Errorf("link: drop rate %v is not in [0, 1]", l.DropRate)
	case l.ReconnectDelay < 0 || l.RestartDelay < 0 || l.ReportEvery < 0:
		return errors.New("link: negative delay")
	}
	return nil
}

// Run connects p to the server and runs its reactive loop until ctx ends:
// it registers and reports, carries out or refuses the commands it gets,
// reports every change of p, and reconnects whenever its stream ends.
// rng decides the drops. On return p is in its final state and may be
// read. Run returns nil when ctx ends, or a configuration error.
func Run(ctx context.Context, l Link, p *Printer, rng *rand.Rand) error {
	l = l.WithDefaults()
	if err := l.Validate(); err != nil {
		return err
	}
	r := &runner{l: l, p: p, rng: rng}
	for {
		outage := r.session(ctx)
		if ctx.Err() != nil || !r.away(ctx, outage) {
			return nil
		}
	}
}

// away keeps the printer working offline for d (a print goes on, and may
// finish, fail or lose power, which keeps it dark for RestartDelay more).
// It returns false if ctx ended first.
func (r *runner) away(ctx context.Context, d time.Duration) bool {
	back := r.l.Clock.Now().Add(d)
	t := r.l.Clock.NewTimer(d)
	defer t.Stop()
	for {
		now := r.l.Clock.Now()
		if ev, ok := r.p.Advance(now); ok {
			r.emit(ev)
			if ev.Kind == EventPowerLoss || ev.Kind == EventForgot {
				back = now.Add(r.l.RestartDelay)
			}
		}
		if !now.Before(back) {
			return true
		}
		at := back
		if next, ok := r.p.Next(); ok && next.Before(at) {
			at = next
		}
		t.Stop()
		t.ResetAt(at)
		select {
		case <-ctx.Done():
			return false
		case <-t.C():
		}
	}
}

type runner struct {
	l   Link
	p   *Printer
	rng *rand.Rand
	// sent are the reports awaiting their answers, oldest first.
	sent []sentReport
	// lastReport is when the last report was sent.
	lastReport time.Time
	// registered is set once the server answered the stream's first
	// report.
	registered bool
}

type sentReport struct {
	seq uint64
	at  time.Time
}

type received struct {
	resp *pb.ConnectResponse
	err  error
}

func (r *runner) emit(ev Event) {
	if r.l.OnEvent != nil {
		r.l.OnEvent(ev)
	}
}

// errDropped ends a session whose connection the simulation dropped.
var errDropped = errors.New("connection dropped")

// session runs one stream and returns how long to stay away before the
// next one.
func (r *runner) session(ctx context.Context) time.Duration {
	// The stream outlives ctx by its goodbye, goodbyeWait at most; cut
	// ends it abruptly.
	sctx, cut := context.WithCancel(context.WithoutCancel(ctx))
	defer cut()
	defer context.AfterFunc(ctx, func() { time.AfterFunc(goodbyeWait, cut) })()
	r.sent, r.registered = r.sent[:0], false
	reg := &pb.DeviceRegistration{DeviceId: r.p.ID(), Pool: r.l.Pool, Capabilities: r.l.Capabilities}
	now := r.l.Clock.Now()
	d, err := r.l.Client.ConnectDevice(sctx, reg, r.p.State(now))
	if err != nil {
		return r.ended(err)
	}
	defer d.Drop()
	r.sent = append(r.sent, sentReport{1, now})
	r.lastReport = now
	if r.drop() {
		return r.ended(errDropped)
	}
	recv := make(chan received)
	go func() {
		for {
			resp, err := d.Recv()
			select {
			case recv <- received{resp, err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()

	timer := r.l.Clock.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		r.arm(timer)
		select {
		case <-ctx.Done():
			goodbye(sctx, d, recv)
			return 0
		case m := <-recv:
			if m.err != nil {
				return r.ended(m.err)
			}
			if err := r.answer(d, m.resp); err != nil {
				return r.ended(cause(err, recv))
			}
		case <-timer.C():
			now := r.l.Clock.Now()
			ev, changed := r.p.Advance(now)
			if changed {
				r.emit(ev)
				if ev.Kind == EventPowerLoss || ev.Kind == EventForgot {
					return r.l.RestartDelay
				}
			} else if !r.reportDue(now) {
				continue
			}
			if err := r.send(d, nil); err != nil {
				return r.ended(cause(err, recv))
			}
		}
	}
}

// cause returns why a stream failed: a Send that fails with io.EOF means
// the stream ended, and its status comes with the next Recv.
func cause(err error, recv <-chan received) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	for m := range recv {
		if m.err != nil {
			return m.err
		}
	}
	return err
}

// ended reports why a session ended and returns the wait before the next.
func (r *runner) ended(err error) time.Duration {
	if errors.Is(err, errDropped) {
		r.emit(Event{At: r.l.Clock.Now(), Printer: r.p.ID(), Kind: EventDropped, Job: r.p.Job()})
	} else {
		r.emit(Event{At: r.l.Clock.Now(), Printer: r.p.ID(), Kind: EventDisconnected, Job: r.p.Job(), Detail: err.Error()})
	}
	return r.l.ReconnectDelay
}

// goodbye closes the printer's side of the stream and waits for the
// server to end it, so that the server hears a clean goodbye.
func goodbye(sctx context.Context, d *client.Device, recv <-chan received) {
	if d.Close() != nil {
		return
	}
	for {
		select {
		case m := <-recv:
			if m.err != nil {
				return
			}
		case <-sctx.Done():
			return
		}
	}
}

// arm sets the timer to the printer's next change of its own or its next
// status report, or stops it when there is neither.
func (r *runner) arm(t clock.Timer) {
	at, ok := r.p.Next()
	if every := r.l.ReportEvery; every > 0 {
		if next := r.lastReport.Add(every); !ok || next.Before(at) {
			at, ok = next, true
		}
	}
	t.Stop()
	if ok {
		t.ResetAt(at)
	}
}

func (r *runner) reportDue(now time.Time) bool {
	return r.l.ReportEvery > 0 && !now.Before(r.lastReport.Add(r.l.ReportEvery))
}

// answer handles one message of the server: the answer to a report, a
// command, or both.
func (r *runner) answer(d *client.Device, resp *pb.ConnectResponse) error {
	now := r.l.Clock.Now()
	if !r.registered {
		r.registered = true
		r.emit(Event{At: now, Printer: r.p.ID(), Kind: EventConnected, Job: r.p.Job(), Detail: r.p.Node()})
	}
	if seq := resp.GetReportSeq(); seq != 0 {
		for len(r.sent) > 0 && r.sent[0].seq <= seq {
			if r.sent[0].seq == seq && r.l.OnRound != nil {
				r.l.OnRound(now.Sub(r.sent[0].at))
			}
			r.sent = r.sent[1:]
		}
	}
	if r.drop() {
		return errDropped
	}
	c := resp.GetCommand()
	if c == nil {
		return nil
	}
	ev, rej := r.p.Command(c, now)
	if rej != nil && r.l.IgnoreStale {
		ev.Kind = EventIgnored
		r.emit(ev)
		return nil
	}
	r.emit(ev)
	return r.send(d, rej)
}

// send reports the printer's state, with its refusal of a command when
// rej is set.
func (r *runner) send(d *client.Device, rej *pb.CommandRejection) error {
	now := r.l.Clock.Now()
	st := r.p.State(now)
	var (
		seq uint64
		err error
	)
	if rej != nil {
		seq, err = d.Reject(st, rej.GetCommandSeq(), rej.GetReason())
	} else {
		seq, err = d.Report(st)
	}
	if err != nil {
		return err
	}
	r.lastReport = now
	r.sent = append(r.sent, sentReport{seq, now})
	if r.drop() {
		return errDropped
	}
	return nil
}

func (r *runner) drop() bool {
	return r.l.DropRate > 0 && r.rng.Float64() < r.l.DropRate
}

// Tally counts the events of a simulation run, for the summary printed
// when it ends (interrupted or not). It is safe for concurrent use: pass
// its Add to Link.OnEvent and Operator.OnEvent.
type Tally struct {
	mu       sync.Mutex
	kinds    map[EventKind]int
	printers map[string]bool
	jobs     map[string]bool
}

// Add counts ev.
func (t *Tally) Add(ev Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.kinds == nil {
		t.kinds, t.printers, t.jobs = map[EventKind]int{}, map[string]bool{}, map[string]bool{}
	}
	t.kinds[ev.Kind]++
	t.printers[ev.Printer] = true
	if ev.Job != "" {
		t.jobs[ev.Job] = true
	}
}

// Summary is what a Tally counted.
type Summary struct {
	// Printers and Jobs count the distinct printers and jobs seen.
	Printers, Jobs int
	// Events counts the events by kind name ("printing", "failed",
	// "operator-retrieved"); kinds that never happened are absent.
	Events map[string]int
}

// Summary returns the counts so far.
func (t *Tally) Summary() Summary {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := Summary{Printers: len(t.printers), Jobs: len(t.jobs), Events: map[string]int{}}
	for k, n := range t.kinds {
		s.Events[k.String()] = n
	}
	return s
}

// String is the summary as one line: the counts of every kind that
// happened, in the order of the kinds.
func (s Summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d printers, %d jobs", s.Printers, s.Jobs)
	for k := EventPrinting; k <= EventForgot; k++ {
		if n := s.Events[k.String()]; n > 0 {
			fmt.Fprintf(&b, ", %d %s", n, k)
		}
	}
	return b.String()
}
