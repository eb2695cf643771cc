package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/dfsmr/dfsmr/client/backoff"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Defaults of WorkerOptions.
const (
	// DefaultConcurrency is the default of WorkerOptions.Concurrency.
	DefaultConcurrency = 16
	// DefaultBatch is the default of WorkerOptions.Batch.
	DefaultBatch = 32
	// MaxBatch is the server's limit on one Ready call's max_count.
	MaxBatch = 256
	// DefaultPoll is the default of WorkerOptions.Poll.
	DefaultPoll = 30 * time.Second
	// DefaultCallTimeout is the default of WorkerOptions.CallTimeout.
	DefaultCallTimeout = 10 * time.Second
	// DefaultErrorTransition is the default of WorkerOptions.ErrorTransition.
	DefaultErrorTransition = "error"
	// DefaultErrorParam is the default of WorkerOptions.ErrorParam.
	DefaultErrorParam = "error"
	// WorkerMinBackoff is the worker's first wait before it retries a call
	// that failed with UNAVAILABLE; the wait doubles up to WorkerMaxBackoff,
	// each wait spread by WorkerBackoffJitter.
	WorkerMinBackoff = 20 * time.Millisecond
	// WorkerMaxBackoff caps the worker's wait between retries.
	WorkerMaxBackoff = 2 * time.Second
	// WorkerBackoffJitter spreads each wait by up to this fraction either
	// way, so that the workers of a fleet that lost the server together do
	// not all come back at the same instant.
	WorkerBackoffJitter = 0.2
	// maxFlushers is how many TransitionBatch calls a worker keeps in
	// flight at once: more than one, so that a batch fills while another
	// commits, and the store's group commit can merge them.
	maxFlushers = 1
	// flushWindow bounds how long a report waits for the reports of
	// handlers still running before its TransitionBatch goes out.
	flushWindow = time.Millisecond
	// maxErrorBytes is the server's limit on a param value.
	maxErrorBytes = 4 << 10
)

// Handler does the work of one node for one leased instance and says which
// transition happened. in is the instance as leased (LEASED, with its
// lease). ctx ends when the worker stops past its drain deadline or the
// lease is lost (someone else now holds the instance); a handler should
// then return soon.
//
// A returned error becomes the node's error transition
// (WorkerOptions.ErrorTransition) with the error text in the param named
// WorkerOptions.ErrorParam, so the server retries the item with the node's
// backoff. A panic is treated like an error.
type Handler func(ctx context.Context, in *pb.Instance) (Result, error)

// Result is a handler's outcome: the transition to report.
type Result struct {
	// Transition names a non-signal transition of the instance's node, e.g.
	// "ok" or "throttled".
	Transition string
	// Params are merged into the instance's params, for the next nodes.
	Params map[string]string
	// Delay, when positive, overrides the transition's delay, e.g. with a
	// server's Retry-After. Zero keeps the definition's delay (or backoff).
	Delay time.Duration
}

// WorkerOptions configure a Worker. The zero value is ready to use.
type WorkerOptions struct {
	// Name is recorded on every lease and change; default "host/pid".
	Name string
	// Concurrency is the most handlers running at once, over all the
	// registered handlers; default DefaultConcurrency (16).
	Concurrency int
	// Batch is the most instances one Ready call leases; default
	// DefaultBatch (32), at most MaxBatch and Concurrency. A worker never
	// leases more than it has free handler slots for.
	Batch int
	// Pollers is how many Ready calls each handler keeps in flight at once;
	// default 1. More help when a Ready round trip (one durable commit)
	// is long next to the handlers, so that slots freed meanwhile are not
	// left idle.
	Pollers int
	// Poll is how long one Ready call waits for work (long poll); default
	// DefaultPoll (30s), at most 5m.
	Poll time.Duration
	// CallTimeout bounds each Transition, Heartbeat and Relinquish call;
	// default DefaultCallTimeout (10s).
	CallTimeout time.Duration
	// ErrorTransition is the transition a handler's error becomes; default
	// DefaultErrorTransition ("error").
	ErrorTransition string
	// ErrorParam is the param that carries a handler's error text; default
	// DefaultErrorParam ("error").
	ErrorParam string
	// UnaryTransitions reports each handler's transition with its own
	// Transition call. By default the worker reports with TransitionBatch:
	// whenever no such call is in flight it sends every transition its
	// handlers finished meanwhile, so that under load many steps share one
	// call and one commit, and an idle worker still reports at once.
	UnaryTransitions bool
	// Continue asks the server, with each TransitionBatch, to lease an
	// instance straight back to this worker when its transition leaves it
	// READY in a node this worker handles, in the same commit: a
	// multi-step item then needs no Ready call after its first step. The
	// cost is ordering: a continued instance skips ahead of other READY
	// instances, whatever their priority. Ignored with UnaryTransitions.
	Continue bool
	// Refill, with Continue, asks the server to give a slot whose instance
	// was not continued (it finished, or waits) the next READY instance of
	// a node this worker handles, in the same commit, in Ready's order: a
	// busy worker then makes no Ready calls at all.
	Refill bool
	// Logger receives the worker's logs; default slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns o with every zero field set to its default.
func (o WorkerOptions) WithDefaults() WorkerOptions {
	if o.Name == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "unknown"
		}
		o.Name = fmt.Sprintf("%s/%d", host, os.Getpid())
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Batch == 0 {
		o.Batch = min(DefaultBatch, o.Concurrency)
	}
	if o.Pollers == 0 {
		o.Pollers = 1
	}
	if o.Poll == 0 {
		o.Poll = DefaultPoll
	}
	if o.CallTimeout == 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.ErrorTransition == "" {
		o.ErrorTransition = DefaultErrorTransition
	}
	if o.ErrorParam == "" {
		o.ErrorParam = DefaultErrorParam
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Validate reports the first field out of range.
func (o WorkerOptions) Validate() error {
	switch {
	case o.Concurrency < 0:
		return errors.New("worker: Concurrency must not be negative")
	case o.Pollers < 0:
		return errors.New("worker: Pollers must not be negative")
	case o.Batch < 0 || o.Batch > MaxBatch:
		return fmt.Errorf("worker: Batch must be between 0 and %d", MaxBatch)
	case o.Poll < 0 || o.Poll > 5*time.Minute:
		return errors.New("worker: Poll must be between 0 and 5m")
	case o.CallTimeout < 0:
		return errors.New("worker: CallTimeout must not be negative")
	}
	return nil
}

// WorkerStats count what a worker did since it started.
type WorkerStats struct {
	// Leased is the number of leases received.
	Leased uint64
	// Reported is the number of transitions the server accepted.
	Reported uint64
	// Failed is the number of handler errors (and panics) reported as the
	// error transition; they are also in Reported when accepted.
	Failed uint64
	// Aborted is the number of leases lost to someone else (ABORTED).
	Aborted uint64
	// Relinquished is the number of leases given back when stopping.
	Relinquished uint64
}

// callBackoff is the wait before the worker's retry of one of its calls.
var callBackoff = backoff.Policy{Growth: backoff.Exponential, Initial: WorkerMinBackoff, Max: WorkerMaxBackoff, Jitter: WorkerBackoffJitter}

// Worker leases instances from a dfsmr server and runs a handler for each,
// by machine and node: it long-polls Ready for as many instances as it has
// free handler slots (up to Batch per call), runs the handlers
// concurrently (at most Concurrency), heartbeats leases while their
// handlers run, and reports each handler's transition.
//
// Its own calls are retried on UNAVAILABLE with a capped exponential
// backoff; a Transition carries a request id, so a retry after a lost
// response is answered with the first result. ABORTED means someone else
// now holds or has finished the instance (the lease expired): the worker
// logs it and moves on.
//
// Register handlers with Handle, then Start; Stop drains.
type Worker struct {
	c    *Client
	opts WorkerOptions
	log  *slog.Logger

	regs []registration
	// slots holds one token per free handler slot.
	slots chan struct{}

	mu      sync.Mutex
	started bool
	// pollCancel ends the leasing loops; workCancel ends the handlers'
	// context (past the drain deadline).
	pollCancel context.CancelFunc
	workCancel context.CancelFunc
	// reportCtx bounds the reports, which outlive the handlers' context
	// (their leases are still ours) but not a Stop whose ctx ended:
	// abandon ends it then.
	reportCtx context.Context
	abandon   context.CancelFunc
	stopping  atomic.Bool
	polls     sync.WaitGroup
	work      sync.WaitGroup
	stopOnce  sync.Once

	leased, reported, failed, aborted, relinquished atomic.Uint64

	// reports waiting for a TransitionBatch call; flushers counts the
	// goroutines sending them (at most maxFlushers).
	reportMu sync.Mutex
	reports  []*pendingReport
	flushers int
	// handling counts handlers running, or finished and not yet queued
	// for a TransitionBatch; queuedSig is signalled when one is queued.
	handling  atomic.Int64
	queuedSig chan struct{}
}

// pendingReport is one transition waiting for its TransitionBatch.
type pendingReport struct {
	in   *pb.Instance
	req  *pb.TransitionRequest
	done chan reportOutcome
}

// reportOutcome is a transition's outcome: a status error, and the
// continued lease (nil when the instance was not continued).
type reportOutcome struct {
	err  error
	next *pb.Instance
}

type registration struct {
	machine, node string
	h             Handler
}

// NewWorker returns a worker that uses c. It panics on invalid options (a
// programming error), as regexp.MustCompile does.
func NewWorker(c *Client, opts WorkerOptions) *Worker {
	if err := opts.Validate(); err != nil {
		panic(err)
	}
	opts = opts.WithDefaults()
	opts.Batch = min(opts.Batch, opts.Concurrency)
	w := &Worker{c: c, opts: opts, log: opts.Logger.With("component", "worker", "worker", opts.Name)}
	w.queuedSig = make(chan struct{}, 1)
	w.slots = make(chan struct{}, opts.Concurrency)
	for range opts.Concurrency {
		w.slots <- struct{}{}
	}
	return w
}

// Handle registers h for the instances of machine in node. Call it before
// Start; both machine and node are required.
func (w *Worker) Handle(machine, node string, h Handler) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		panic("worker: Handle after Start")
	}
	if machine == "" || node == "" || h == nil {
		panic("worker: Handle needs a machine, a node and a handler")
	}
	w.regs = append(w.regs, registration{machine, node, h})
}

// Start starts leasing for every registered handler and returns at once.
// ctx bounds the whole run: when it ends, the worker stops leasing and
// cancels running handlers (call Stop for a graceful drain).
func (w *Worker) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		return errors.New("worker: already started")
	}
	if len(w.regs) == 0 {
		return errors.New("worker: no handler registered")
	}
	w.started = true
	pollCtx, pollCancel := context.WithCancel(ctx)
	workCtx, workCancel := context.WithCancel(context.WithoutCancel(ctx))
	w.pollCancel, w.workCancel = pollCancel, workCancel
	w.reportCtx, w.abandon = context.WithCancel(context.WithoutCancel(ctx))
	// A run whose ctx ends is a forced stop: handlers are cancelled too.
	context.AfterFunc(ctx, func() { w.stopping.Store(true); workCancel() })
	for _, r := range w.regs {
		for range w.opts.Pollers {
			w.polls.Go(func() { w.poll(pollCtx, workCtx, r) })
		}
	}
	return nil
}

// Stop drains the worker: it stops leasing, lets running handlers finish
// and report until ctx ends, then cancels the rest and gives their leases
// back (Relinquish: READY again at once, no attempt counted), and waits
// for every goroutine it started. It is idempotent and safe when the
// worker was never started.
//
// A long-polling Ready cancelled by Stop may have leased work whose
// response is lost; that work is offered again when its lease times out.
func (w *Worker) Stop(ctx context.Context) error {
	w.mu.Lock()
	started := w.started
	w.mu.Unlock()
	if !started {
		return nil
	}
	w.stopOnce.Do(func() {
		w.stopping.Store(true)
		w.pollCancel()
		w.polls.Wait()
		done := make(chan struct{})
		go func() { w.work.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			// Reports and relinquishes that still retry (their server
			// is down) are given up too: their leases time out.
			w.workCancel()
			w.abandon()
			<-done
		}
		w.workCancel()
		w.abandon()
	})
	return ctx.Err()
}

// Stats returns the worker's counters.
func (w *Worker) Stats() WorkerStats {
	return WorkerStats{
		Leased:       w.leased.Load(),
		Reported:     w.reported.Load(),
		Failed:       w.failed.Load(),
		Aborted:      w.aborted.Load(),
		Relinquished: w.relinquished.Load(),
	}
}

// poll leases work for r until pollCtx ends. It takes free handler slots
// first and asks for no more instances than it holds slots: after an empty
// poll it holds one, so an idle registration does not starve the others.
func (w *Worker) poll(pollCtx, workCtx context.Context, r registration) {
	want := w.opts.Batch
	failures := int64(0) // Ready calls failed in a row
	warned := false      // about a machine or node the server lacks
	for {
		// Take one slot (blocking), then whatever else is free up to want.
		select {
		case <-w.slots:
		case <-pollCtx.Done():
			return
		}
		n := w.fill(pollCtx, want)
		resp, err := w.c.Work.Ready(pollCtx, &pb.ReadyRequest{
			Worker: w.opts.Name, Machine: r.machine, Node: r.node,
			MaxCount: uint32(n), Wait: durationpb.New(w.opts.Poll),
		})
		list := resp.GetInstances()
		for range n - len(list) {
			w.slots <- struct{}{}
		}
		if pollCtx.Err() != nil {
			// Leases that arrived with the cancellation are still ours.
			for _, in := range list {
				w.leased.Add(1)
				w.giveBack(in, "worker stopping")
				w.slots <- struct{}{}
			}
			return
		}
		if err != nil {
			failures++
			wait := callBackoff.Delay(failures, rand.Float64())
			switch {
			case status.Code(err) != codes.NotFound:
				w.log.Warn("Ready failed; retrying", "machine", r.machine, "node", r.node, "err", err, "backoff", wait)
			case !warned:
				// Said once: the handler waits, polling, until its machine
				// or node is defined.
				warned = true
				w.log.Warn("handler registered for a machine or node the server does not have; polling until it is defined",
					"machine", r.machine, "node", r.node, "err", err)
			}
			if !sleep(pollCtx, wait) {
				return
			}
			continue
		}
		failures = 0
		if len(list) == 0 {
			want = 1
			continue
		}
		want = w.opts.Batch
		w.leased.Add(uint64(len(list)))
		for _, in := range list {
			w.work.Go(func() {
				defer func() { w.slots <- struct{}{} }()
				w.run(workCtx, r.h, in)
			})
		}
	}
}

// fillWindow bounds how long a poller of a busy worker waits for more
// free slots before it asks for work: handlers that finish together free
// their slots a few microseconds apart, and a poller that asked for the
// first one alone would fall into lockstep with the reports, each Ready
// leasing a few instances (measured: 2.5 leases per Ready, a few steps per
// commit, instead of dozens).
const fillWindow = 2 * time.Millisecond

// fill holds one free slot (it has already been taken) and takes more, up
// to want: whatever is free now, and, while at least half of the others
// are busy with handlers that will free theirs, whatever frees up within
// fillWindow, until it holds half of want.
func (w *Worker) fill(ctx context.Context, want int) int {
	n := 1
	var window <-chan time.Time
	for n < want {
		select {
		case <-w.slots:
			n++
			continue
		default:
		}
		busy := w.opts.Concurrency - len(w.slots) - n
		if 2*n >= want || 2*busy < w.opts.Concurrency {
			return n
		}
		if window == nil {
			t := time.NewTimer(fillWindow)
			defer t.Stop()
			window = t.C
		}
		select {
		case <-w.slots:
			n++
		case <-window:
			return n
		case <-ctx.Done():
			return n
		}
	}
	return n
}

// errLeaseLost cancels a handler whose lease someone else now holds.
var errLeaseLost = errors.New("lease lost")

// run runs h on in, heartbeating its lease meanwhile, and reports the
// outcome; then it goes on with the lease the server continued, if any.
func (w *Worker) run(workCtx context.Context, h Handler, in *pb.Instance) {
	for in != nil {
		next := w.runOne(workCtx, h, in)
		if next == nil {
			return
		}
		w.leased.Add(1)
		h = w.handler(next.GetMachine(), next.GetNode())
		if h == nil || w.stopping.Load() {
			w.giveBack(next, "no handler, or worker stopping")
			return
		}
		in = next
	}
}

// handler returns the handler registered for machine and node, or nil.
func (w *Worker) handler(machine, node string) Handler {
	for _, r := range w.regs {
		if r.machine == machine && r.node == node {
			return r.h
		}
	}
	return nil
}

// runOne runs h on in and reports its transition; it returns the lease
// the server continued, if any.
func (w *Worker) runOne(workCtx context.Context, h Handler, in *pb.Instance) (next *pb.Instance) {
	hctx, cancel := context.WithCancelCause(workCtx)
	defer cancel(nil)
	hbDone := make(chan struct{})
	hbStop := make(chan struct{})
	go func() {
		defer close(hbDone)
		w.heartbeat(hctx, hbStop, cancel, in)
	}()
	w.handling.Add(1)
	queued := false // the report was queued, which ends handling
	defer func() {
		if !queued {
			w.handling.Add(-1)
		}
	}()
	res, err := call(hctx, h, in)
	close(hbStop)
	<-hbDone

	log := w.log.With("instance", in.GetId(), "node", in.GetNode(), "token", in.GetLease().GetToken())
	if errors.Is(context.Cause(hctx), errLeaseLost) {
		w.aborted.Add(1)
		log.Info("lease lost while the handler ran; someone else has the instance")
		return nil
	}
	if err != nil && w.stopping.Load() && hctx.Err() != nil {
		w.giveBack(in, "handler cancelled by stop")
		return nil
	}
	req := &pb.TransitionRequest{
		Id:        in.GetId(),
		Token:     in.GetLease().GetToken(),
		RequestId: fmt.Sprintf("%s/%d", w.opts.Name, in.GetLease().GetToken()),
	}
	if err != nil {
		w.failed.Add(1)
		req.Transition = w.opts.ErrorTransition
		req.Params = map[string]string{w.opts.ErrorParam: truncate(err.Error(), maxErrorBytes)}
	} else {
		req.Transition, req.Params = res.Transition, res.Params
		if res.Delay > 0 {
			req.Delay = durationpb.New(res.Delay)
		}
	}
	// The report outlives the handlers' context: its lease is still
	// ours (a Stop whose ctx ended gives it up).
	rctx := w.reportCtx
	if w.opts.UnaryTransitions {
		err = w.retry(rctx, in, func(ctx context.Context) error {
			_, err := w.c.Work.Transition(ctx, req)
			return err
		})
	} else {
		queued = true
		next, err = w.batchTransition(rctx, in, req)
	}
	switch status.Code(err) {
	case codes.OK:
		w.reported.Add(1)
	case codes.Aborted:
		w.aborted.Add(1)
		log.Info("transition refused: someone else finished the instance", "transition", req.Transition, "err", err)
	default:
		// A handler bug (an unknown transition) or a server failure: the
		// lease times out and the node's retry policy decides.
		log.Error("transition failed", "transition", req.Transition, "err", err)
	}
	return next
}

// batchTransition queues req and returns its outcome: the continued
// lease, if any, and the item's status error. If no
// TransitionBatch call is in flight, this goroutine sends the queue
// (including req), and goes on sending what queued meanwhile until the
// queue is empty; otherwise it waits for the goroutine that is sending.
func (w *Worker) batchTransition(ctx context.Context, in *pb.Instance, req *pb.TransitionRequest) (*pb.Instance, error) {
	p := &pendingReport{in: in, req: req, done: make(chan reportOutcome, 1)}
	w.reportMu.Lock()
	w.reports = append(w.reports, p)
	w.handling.Add(-1)
	select {
	case w.queuedSig <- struct{}{}:
	default:
	}
	if w.flushers >= maxFlushers {
		w.reportMu.Unlock()
		o := <-p.done
		return o.next, o.err
	}
	w.flushers++
	w.reportMu.Unlock()
	for {
		w.gather()
		w.reportMu.Lock()
		n := min(len(w.reports), MaxBatch)
		if n == 0 {
			w.flushers--
			w.reportMu.Unlock()
			break
		}
		batch := slices.Clone(w.reports[:n])
		w.reports = slices.Delete(w.reports, 0, n)
		w.reportMu.Unlock()
		w.sendBatch(ctx, batch)
	}
	o := <-p.done
	return o.next, o.err
}

// gather waits, at most flushWindow, while handlers are still running and
// the queue of reports is not full: handlers that finish together (the
// items of one returned batch) then go in one call and one commit instead
// of trickling into many.
func (w *Worker) gather() {
	var deadline <-chan time.Time
	for {
		w.reportMu.Lock()
		full := len(w.reports) >= MaxBatch
		w.reportMu.Unlock()
		if full || w.handling.Load() == 0 {
			return
		}
		if deadline == nil {
			t := time.NewTimer(flushWindow)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-w.queuedSig:
		case <-deadline:
			return
		}
	}
}

// sendBatch sends one TransitionBatch, retried on UNAVAILABLE until the
// first item's lease expires, and hands every item its outcome.
func (w *Worker) sendBatch(ctx context.Context, batch []*pendingReport) {
	req := &pb.TransitionBatchRequest{Transitions: make([]*pb.TransitionRequest, len(batch))}
	for i, p := range batch {
		req.Transitions[i] = p.req
	}
	if w.opts.Continue {
		req.Worker = w.opts.Name
		for _, r := range w.regs {
			req.ContinueNodes = append(req.ContinueNodes, r.machine+"/"+r.node)
		}
		req.Refill = w.opts.Refill
	}
	var resp *pb.TransitionBatchResponse
	err := w.retry(ctx, batch[0].in, func(ctx context.Context) error {
		var err error
		resp, err = w.c.Work.TransitionBatch(ctx, req)
		return err
	})
	if err == nil && len(resp.GetResults()) != len(batch) {
		err = status.Errorf(codes.Internal, "TransitionBatch returned %d results for %d items", len(resp.GetResults()), len(batch))
	}
	for i, p := range batch {
		switch {
		case err != nil:
			p.done <- reportOutcome{err: err}
		case resp.GetResults()[i].GetCode() != 0:
			r := resp.GetResults()[i]
			p.done <- reportOutcome{err: status.Error(codes.Code(r.GetCode()), r.GetMessage())}
		default:
			p.done <- reportOutcome{next: resp.GetResults()[i].GetNext()}
		}
	}
}

// call runs h, turning a panic into an error.
func call(ctx context.Context, h Handler, in *pb.Instance) (res Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return h(ctx, in)
}

// heartbeat extends in's lease at half its length until stop closes. A
// lease that never expires needs none. ABORTED cancels the handler with
// errLeaseLost.
func (w *Worker) heartbeat(ctx context.Context, stop <-chan struct{}, cancel context.CancelCauseFunc, in *pb.Instance) {
	l := in.GetLease()
	if l.GetExpireTime() == nil {
		return
	}
	period := l.GetExpireTime().AsTime().Sub(l.GetAcquireTime().AsTime()) / 2
	if period <= 0 {
		return
	}
	t := time.NewTimer(period)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := w.retry(ctx, in, func(ctx context.Context) error {
			_, err := w.c.Work.Heartbeat(ctx, &pb.HeartbeatRequest{Id: in.GetId(), Token: l.GetToken()})
			return err
		})
		switch status.Code(err) {
		case codes.OK:
		case codes.Aborted, codes.NotFound, codes.FailedPrecondition:
			cancel(errLeaseLost)
			return
		default:
			w.log.Warn("heartbeat failed", "instance", in.GetId(), "err", err)
		}
		t.Reset(period)
	}
}

// giveBack relinquishes in's lease, so that the instance is offered again
// at once without counting an attempt.
func (w *Worker) giveBack(in *pb.Instance, why string) {
	// Relinquishing runs as Stop gives up: it is bounded by one
	// CallTimeout, not by the lease (the lease times out otherwise).
	ctx, cancel := context.WithTimeout(context.Background(), w.opts.CallTimeout)
	defer cancel()
	err := w.retry(ctx, in, func(ctx context.Context) error {
		_, err := w.c.Work.Relinquish(ctx, &pb.RelinquishRequest{Id: in.GetId(), Token: in.GetLease().GetToken()})
		return err
	})
	if err != nil {
		w.log.Warn("relinquish failed; the lease will time out", "instance", in.GetId(), "why", why, "err", err)
		return
	}
	w.relinquished.Add(1)
	w.log.Info("lease relinquished", "instance", in.GetId(), "why", why)
}

// retry calls f, each call bounded by CallTimeout, until it returns
// anything but UNAVAILABLE, with a capped exponential backoff and jitter. It gives up
// when the lease of in expires (past that, the call cannot succeed with
// this lease), or after one CallTimeout for a lease that never expires or
// expires sooner. ctx ends it early.
func (w *Worker) retry(ctx context.Context, in *pb.Instance, f func(ctx context.Context) error) error {
	deadline := time.Now().Add(w.opts.CallTimeout)
	if exp := in.GetLease().GetExpireTime(); exp != nil && exp.AsTime().After(deadline) {
		deadline = exp.AsTime()
	}
	for failures := int64(1); ; failures++ {
		cctx, cancel := context.WithTimeout(ctx, w.opts.CallTimeout)
		err := f(cctx)
		cancel()
		wait := callBackoff.Delay(failures, rand.Float64())
		if status.Code(err) != codes.Unavailable || time.Now().Add(wait).After(deadline) {
			return err
		}
		if !sleep(ctx, wait) {
			return err
		}
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
