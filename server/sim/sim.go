package sim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/dfsmr/dfsmr/internal/clock"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/sched"
	"github.com/dfsmr/dfsmr/server/store"
	"github.com/dfsmr/dfsmr/server/store/bolt"
)

// Config is one simulation run.
type Config struct {
	// Seed decides everything the run does.
	Seed uint64
	// Ticks is how many ticks run with faults on. After them the faults
	// stop and the run goes on until every instance is final, for at most
	// DrainTicks ticks (the liveness bound).
	Ticks int
	// Dir is where the run makes a directory of its own for its bbolt
	// file, removed at the end. Required.
	Dir string
	// ArtifactDir receives the porcupine visualization of a history that
	// is not linearizable. Zero: Dir.
	ArtifactDir string
	// Trace, when set, receives the trace line by line.
	Trace io.Writer
	// Bugs builds deliberate defects into the server (see Bugs).
	Bugs Bugs
}

// DrainTicks bounds the ticks after the faults stop within which every
// instance must reach a final node. Steps of the server's clock back add
// to it (see drainBound): they delay what was due by their size.
const DrainTicks = 400

// drainTick is how far real time moves per tick once the faults stop.
const drainTick = 5 * time.Second

// Result sums up a run.
type Result struct {
	Seed  uint64
	Ticks int
	// Hash is the SHA-256 of the trace: the same seed gives the same hash.
	Hash string
	// Calls counts client calls made; Acked those answered, Ambiguous
	// those whose reply never came (or was a failure of the store).
	Calls, Acked, Ambiguous int
	// Delivered counts requests the server received (duplicates included),
	// Lost and Duplicated the requests the network dropped or copied.
	Delivered, Lost, Duplicated int
	// Crashes counts server crashes; StoreFaults the failed commits
	// (before or after the commit) that did not crash it; ClockSteps the
	// steps of the server's clock, back or forward.
	Crashes, StoreFaults, ClockSteps int
	// Snapshots counts the snapshots of the state the log took; Rebuilds
	// the crashes that lost the state file, after which the state was
	// restored from the last snapshot and the log entries after it.
	Snapshots, Rebuilds int
	// Instances and Changes are the final counts in the store.
	Instances int
	Changes   uint64
	// DrainTicks is how many ticks the faultless end took.
	DrainTicks int
	// Ops is the length of the history checked for linearizability.
	Ops int
	// DeviceCalls counts the calls of printers, the operator and
	// customers; Commands the commands the server sent, Rejected those a
	// printer refused as stale, Prints the prints started, PowerLosses the
	// plugs pulled mid-print, Signals the operator's acknowledged signals.
	DeviceCalls, Commands, Rejected, Prints, PowerLosses, Signals int
	// Visualization is the HTML file written for a history that is not
	// linearizable.
	Visualization string
}

// Add adds the counts of o to r (a total over seeds).
func (r *Result) Add(o Result) {
	r.Calls += o.Calls
	r.Acked += o.Acked
	r.Ambiguous += o.Ambiguous
	r.Delivered += o.Delivered
	r.Lost += o.Lost
	r.Duplicated += o.Duplicated
	r.Crashes += o.Crashes
	r.StoreFaults += o.StoreFaults
	r.ClockSteps += o.ClockSteps
	r.Snapshots += o.Snapshots
	r.Rebuilds += o.Rebuilds
	r.Instances += o.Instances
	r.Changes += o.Changes
	r.Ops += o.Ops
	r.DeviceCalls += o.DeviceCalls
	r.Commands += o.Commands
	r.Rejected += o.Rejected
	r.Prints += o.Prints
	r.PowerLosses += o.PowerLosses
	r.Signals += o.Signals
}

// ReplayCommand is the command that replays one seed.
func ReplayCommand(seed uint64, ticks int, bugs Bugs) string {
	cmd := fmt.Sprintf("go run ./cmd/dfsmr dst --seed %d --ticks %d", seed, ticks)
	switch {
	case bugs.SplitChangelog:
		cmd += " --bug split-changelog"
	case bugs.StaleTokens:
		cmd += " --bug stale-tokens"
	case bugs.ForgetDeviceJob:
		cmd += " --bug forget-device-job"
	}
	return cmd
}

// Error is a failed run: what broke, and how to replay it.
type Error struct {
	Seed  uint64
	Ticks int
	Bugs  Bugs
	Tick  int
	Err   error
}

func (e *Error) Error() string {
	return fmt.Sprintf("dst seed %d failed at tick %d: %v\nreplay: %s", e.Seed, e.Tick, e.Err, ReplayCommand(e.Seed, e.Ticks, e.Bugs))
}

func (e *Error) Unwrap() error { return e.Err }

// Probabilities of the faults, per tick or per store commit.
const (
	pCrashTick   = 0.0005 // the server dies between calls
	pClockJump   = 0.002  // the clock jumps minutes ahead
	pFailBefore  = 0.004  // a commit fails
	pFailAfter   = 0.004  // a commit succeeds but reports a failure
	pCrashBefore = 0.0007 // the server dies before a commit
	pCrashAfter  = 0.0007 // the server dies after a commit
	pLose        = 0.03   // a request or a reply is lost
	pDuplicate   = 0.03   // a request is delivered twice
	pIssue       = 0.15   // an idle actor makes a call this tick
	maxDelay     = 3      // ticks a message may take
	callTimeout  = 6      // ticks after which a client gives up on a call
	maxLive      = 10     // instances not known final before clients stop starting more
	checkEvery   = 500    // ticks between full checks
	nClients     = 2
	nWorkers     = 3
)

type sim struct {
	cfg Config
	ctx context.Context
	rng *rand.Rand
	clk *clock.Fake // real time: only forward
	// srvClk is the server's clock: real time plus the clock steps;
	// stepsBack sums the steps back.
	srvClk    *serverClock
	stepsBack time.Duration
	path      string

	bolt *bolt.Store
	// log is the replicated log the store proposes to; it outlives
	// crashes. lostFile says the crash lost the state file, rebuilding
	// that the state is being rebuilt from the log.
	log                  *simLog
	lostFile, rebuilding bool
	fs                   *faultStore
	eng                  *engine.Engine
	heap                 sched.Heap

	tick    int
	now     int64 // porcupine's logical time: one per event
	active  bool  // faults on
	called  bool  // the engine was called since the last check
	trace   hash.Hash
	ops     []*opRec
	actors  []*actor
	reqs    []*message
	resps   []*message
	nextCID int
	nextID  int
	res     Result
	// sent holds the transition requests delivered so far (see
	// opRec.again).
	sent map[sentKey]bool

	// committed holds the changes of commits not yet checked, as the
	// commit hook delivered them.
	committed []fsm.Change
	chk       checker

	printers     []*printer
	jobs         map[string]*jobShadow
	jobOrder     []string // job ids, in start order
	nextOrder    int
	deviceCalled bool // the device side called the engine since the last check
}

// Run runs one simulation. A broken invariant, a run that does not finish
// or a history that is not linearizable is an *Error naming the seed.
func Run(cfg Config) (res Result, err error) {
	s := &sim{
		cfg:   cfg,
		ctx:   context.Background(),
		rng:   rand.New(rand.NewPCG(cfg.Seed, 0x64736d72)),
		clk:   clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
		trace: sha256.New(),
		res:   Result{Seed: cfg.Seed, Ticks: cfg.Ticks},
		jobs:  map[string]*jobShadow{},
		sent:  map[sentKey]bool{},
	}
	s.srvClk = &serverClock{real: s.clk}
	s.chk.init()
	dir, err := os.MkdirTemp(cfg.Dir, fmt.Sprintf("dst-%d-", cfg.Seed))
	if err != nil {
		return s.res, err
	}
	defer os.RemoveAll(dir)
	s.path = filepath.Join(dir, "dfsmr.db")
	defer func() {
		if p := recover(); p != nil {
			f, ok := p.(simFailure)
			if !ok {
				panic(p)
			}
			err = &Error{Seed: cfg.Seed, Ticks: cfg.Ticks, Bugs: cfg.Bugs, Tick: s.tick, Err: f.err}
		}
		if s.bolt != nil {
			_ = s.bolt.Close()
		}
		res = s.res
	}()
	s.run()
	return s.res, nil
}

// simFailure carries a failed check up to Run.
type simFailure struct{ err error }

func (s *sim) failf(format string, args ...any) {
	s.tracef("FAIL "+format, args...)
	panic(simFailure{fmt.Errorf(format, args...)})
}

func (s *sim) tracef(format string, args ...any) {
	line := fmt.Sprintf("%d %s\n", s.tick, fmt.Sprintf(format, args...))
	s.trace.Write([]byte(line))
	if s.cfg.Trace != nil {
		io.WriteString(s.cfg.Trace, line)
	}
}

func (s *sim) run() {
	s.open()
	for i := range nClients {
		s.actors = append(s.actors, &actor{name: fmt.Sprintf("client%d", i), client: s.newClient()})
	}
	for i := range nWorkers {
		s.actors = append(s.actors, &actor{name: fmt.Sprintf("worker%d", i), worker: true, client: s.newClient()})
	}
	// The first version, defined before any fault.
	if _, _, err := s.eng.DefineMachine(s.ctx, machineID+".yaml", machineSource(0), "sim"); err != nil {
		s.failf("define: %v", err)
	}
	s.definePrinters()
	s.absorb()
	s.check()

	s.active = true
	for s.tick = 1; s.tick <= s.cfg.Ticks; s.tick++ {
		s.step()
		if s.tick%checkEvery == 0 {
			s.fullCheck()
		}
	}
	s.active = false
	s.tracef("faults stop")
	start := s.tick
	for ; ; s.tick++ {
		if bound := s.drainBound(); s.tick-start > bound {
			s.failf("liveness: %d instances and %d jobs not final %d ticks after the faults stopped", s.unfinished(), s.liveJobs(), bound)
		}
		s.step()
		if s.unfinished() == 0 && s.liveJobs() == 0 && len(s.reqs) == 0 && len(s.resps) == 0 && s.idle() {
			break
		}
	}
	s.res.DrainTicks = s.tick - start
	s.fullCheck()
	s.finalState()
	s.linearizable()
	s.res.Hash = hex.EncodeToString(s.trace.Sum(nil))
}

// drainBound is DrainTicks plus the ticks that the server clock's steps
// back delay due work by: a step back of d delays what was due by d.
func (s *sim) drainBound() int {
	return DrainTicks + int((s.stepsBack+drainTick-1)/drainTick)
}

// open opens the store at s.path and makes a new engine over it: the
// start of the server process.
func (s *sim) open() {
	b, err := bolt.Open(s.path, bolt.Options{
		CommitHook: func(cs []fsm.Change) {
			if !s.rebuilding {
				s.committed = append(s.committed, cs...)
			}
		},
		MaxBatch: 1,
		// A simulated crash closes the file in process: the OS keeps
		// every write, so fsync would only cost time.
		NoSync: true,
	})
	if err != nil {
		s.failf("open store: %v", err)
	}
	s.bolt = b
	if s.log == nil {
		s.log = &simLog{}
	}
	s.log.st = b
	if s.lostFile {
		// The entries were applied, and their changes seen, before the
		// file was lost: rebuilding it repeats no change.
		s.rebuilding = true
		err := s.log.rebuild(b)
		s.rebuilding, s.lostFile = false, false
		if err != nil {
			s.failf("rebuild the state from the log: %v", err)
		}
	}
	b.SetProposer(s.log)
	s.fs = &faultStore{inner: b, pick: s.pickFault, bugs: s.cfg.Bugs}
	s.eng = engine.New(s.fs, engine.Options{
		Clock:  s.srvClk,
		Rand:   rand.New(rand.NewPCG(s.rng.Uint64(), s.rng.Uint64())),
		Logger: slog.New(slog.DiscardHandler),
	})
	// The scheduler's heap is rebuilt from the due index, as at Start.
	s.heap = sched.Heap{}
	err = b.View(s.ctx, func(tx store.ReadTx) error {
		due, err := tx.Due(time.Unix(0, 1<<62), 0)
		for _, d := range due {
			s.heap.Set(d.ID, d.At)
		}
		return err
	})
	if err != nil {
		s.failf("load due index: %v", err)
	}
	if err := s.eng.Resume(s.ctx); err != nil {
		s.failf("resume: %v", err)
	}
	s.absorb()
}

// crash kills the server: its memory goes, its replies in flight are lost
// with their connections, and a new process opens the same file.
func (s *sim) crash(why string) {
	s.res.Crashes++
	s.tracef("crash (%s)", why)
	s.fs.dead = true
	if err := s.bolt.Close(); err != nil {
		s.failf("close store: %v", err)
	}
	s.bolt = nil
	if s.rng.IntN(2) == 0 {
		// The state file is lost with the machine; the log is not (it
		// is on other servers, or another disk).
		s.lostFile = true
		if err := os.Remove(s.path); err != nil {
			s.failf("lose the state file: %v", err)
		}
		s.tracef("state file lost: rebuild from the snapshot and %d entries", len(s.log.entries))
	}
	s.resps = nil
	for _, p := range s.printers {
		// The streams die with the server, and the commands on them.
		p.conn, p.late = 0, nil
	}
	s.open()
	s.fullCheck()
}

func (s *sim) pickFault() fault {
	x := s.rng.Float64()
	for _, f := range []struct {
		p float64
		f fault
	}{{pFailBefore, faultFailBefore}, {pFailAfter, faultFailAfter}, {pCrashBefore, faultCrashBefore}, {pCrashAfter, faultCrashAfter}} {
		if x < f.p {
			return f.f
		}
		x -= f.p
	}
	return faultNone
}

// engineCall runs f against the engine with the store's faults armed
// while the faults are on, and returns what it committed. It reports whether the call's outcome is ambiguous (an injected
// failure or a crash); a crash restarts the server before engineCall
// returns.
func (s *sim) engineCall(what string, f func() error) (err error, ambiguous bool, committed []fsm.Change) {
	s.fs.armed, s.fs.last = s.active, faultNone
	s.called = true
	err = f()
	s.fs.armed = false
	if s.fs.last != faultNone {
		s.tracef("store %s during %s", s.fs.last, what)
	}
	if errors.Is(err, errInjected) || errors.Is(err, errCrashed) || s.fs.dead {
		ambiguous = true
		if !s.fs.dead {
			s.res.StoreFaults++
		}
	}
	committed = s.absorb()
	if s.fs.dead {
		s.crash("during " + what)
	}
	return err, ambiguous, committed
}

// step is one tick: faults, time, the scheduler, new calls, the network,
// and then the check of every invariant against what the tick committed.
func (s *sim) step() {
	if s.active && s.rng.Float64() < pCrashTick {
		s.crash("between calls")
	}
	if s.active && s.rng.Float64() < pClockJump {
		d := time.Duration(1+s.rng.IntN(10)) * time.Minute
		s.tracef("clock jumps %v", d)
		s.clk.Advance(d)
	}
	if s.active && s.rng.Float64() < pClockStep {
		s.stepClock()
	}
	if s.active {
		s.clk.Advance(time.Duration(s.rng.IntN(2000)) * time.Millisecond)
	} else {
		s.clk.Advance(drainTick)
	}
	s.fire()
	for _, a := range s.actors {
		if a.pending != nil && s.tick-a.pending.issued > callTimeout {
			s.giveUp(a)
		}
		if a.pending == nil && (!s.active || s.rng.Float64() < pIssue) {
			s.issue(a)
		}
	}
	s.devices()
	s.deliverRequests()
	s.deliverResponses()
	if s.called {
		s.check()
	}
	if s.deviceCalled {
		s.checkDevices()
	}
}

// fire does what the engine's scheduler does when its timer fires: pop
// what is due from the heap and fire it in one transaction.
func (s *sim) fire() {
	// The scheduler reads the server's clock, steps and all.
	due := s.heap.PopDue(s.srvClk.Now(), 256)
	if len(due) == 0 {
		return
	}
	ids := make([]string, len(due))
	for i, d := range due {
		ids[i] = d.ID
	}
	var later []store.Due
	err, ambiguous, _ := s.engineCall("fire", func() error {
		var err error
		later, err = s.eng.FireDue(s.ctx, ids)
		return err
	})
	if err != nil {
		if !ambiguous {
			s.failf("fire %v: %v", ids, err)
		}
		if !errors.Is(err, errCrashed) {
			// As the scheduler does after a failed Fire: try again later.
			// (After a crash the new heap came from the store.)
			retry := s.srvClk.Now().Add(sched.DefaultRetry)
			for _, id := range ids {
				s.heap.Set(id, retry)
			}
		}
	}
	for _, d := range later {
		s.heap.Set(d.ID, d.At)
	}
}

func (s *sim) newClient() int {
	s.nextCID++
	return s.nextCID - 1
}

// unfinished counts instances the checker has seen that are not final.
func (s *sim) unfinished() int {
	n := 0
	for _, id := range s.chk.order {
		if !s.chk.inst[id].final {
			n++
		}
	}
	return n
}

func (s *sim) idle() bool {
	for _, a := range s.actors {
		if a.pending != nil {
			return false
		}
	}
	return true
}
