package sim

import (
	"errors"
	"fmt"

	"github.com/dfsmr/dfsmr/machines"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// Device rounds: simulated printers on the bundled printer machine, orders
// that queue print_job instances on them, and an operator who signals
// retrieved and recovered, cancels prints and signals faulted or stopped
// printers cleared. Printers fault while idle, and some power losses make
// them forget their job. They call the engine directly (a device's
// stream is its connection: a crash ends it), outside the linearizability
// model; the checker follows their changes against the print_job machine
// and the printers' records after every tick.

// Probabilities of the device side, per tick.
const (
	pDeviceAct   = 0.04 // a printer sends something this tick
	pDeviceDrain = 0.5  // the same once the faults stop
	pOrder       = 0.03 // a new order
	pOperator    = 0.1  // the operator looks for a job to signal
	pLateCmd     = 0.05 // a command arrives after the printer's next call
	pPrintFail   = 0.2  // a print fails
	pPowerLoss   = 0.1  // the plug is pulled during a print (half of them forget the job)
	pFault       = 0.01 // an idle printer faults
	pCancel      = 0.2  // the operator may cancel a print this time
	maxPrint     = 12   // ticks a print may last
	maxLiveJobs  = 6    // jobs not final before orders stop
	nPrinters    = 3
	devicePool   = "farm"
)

// Nodes and commands of the bundled printer and print_job machines.
const (
	nodeReady    = "ready"
	nodePrinting = "printing"
	nodeWaiting  = "waiting_retrieval"
	nodeError    = "error"
	jobQueued    = "queued"
	jobAwaiting  = "awaiting_retrieval"
	jobFailed    = "failed"
	jobCanceling = "canceling"
	signalClear  = "cleared"
	printerID    = "printer"
	printJobID   = "print_job"
)

// What becomes of a print.
const (
	outcomeFinish = iota
	outcomeFail
	outcomePower
	outcomeForget // the plug is pulled and the printer forgets the job
)

// jobMachine is the bundled print_job machine, to check the jobs' moves.
var jobMachine = mustBundled(printJobID)

func mustBundled(id string) *fsm.Machine {
	for _, src := range machines.Bundled() {
		if src.File == id+".yaml" {
			m, err := machines.Compile(src.File, src.Data)
			if err != nil {
				panic(err)
			}
			return m
		}
	}
	panic("no bundled machine " + id)
}

// printer is a simulated printer: its hardware (node, job, the print under
// way) and its side of the stream.
type printer struct {
	id      string
	node    string
	job     string
	end     int // tick the print ends
	outcome int
	conn    uint64 // the live stream; 0: not connected
	seq     uint64 // reports sent
	lastCmd uint64 // the seq of the last command carried out
	reject  *fsm.Rejection
	late    *fsm.DeviceCommand
}

// jobShadow is a print job as the changelog built it.
type jobShadow struct {
	node  string
	final bool
}

func (s *sim) definePrinters() {
	for _, id := range []string{printJobID, printerID} {
		for _, src := range machines.Bundled() {
			if src.File == id+".yaml" {
				if _, _, err := s.eng.DefineMachine(s.ctx, src.File, src.Data, "sim"); err != nil {
					s.failf("define %s: %v", id, err)
				}
			}
		}
	}
	for i := range nPrinters {
		s.printers = append(s.printers, &printer{id: fmt.Sprintf("p%d", i), node: nodeReady})
	}
}

// isDeviceChange reports whether c is a change of a device (not of an
// instance, though it may name the device's job).
func isDeviceChange(c fsm.Change) bool {
	return c.Kind >= fsm.ChangeDeviceOnline && c.Kind <= fsm.ChangeDeviceNotice
}

// followJob checks one change of a print job against the print_job
// machine and moves the job's shadow on.
func (s *sim) followJob(c fsm.Change) {
	if isDeviceChange(c) {
		return
	}
	sh := s.jobs[c.Instance]
	bad := func(why string) { s.failf("seq %d %s: job: %s", c.Seq, changeString(c), why) }
	if c.Kind == fsm.ChangeStarted {
		if sh != nil {
			bad("started twice")
		}
		sh = &jobShadow{node: c.FromNode}
		s.jobs[c.Instance] = sh
		s.jobOrder = append(s.jobOrder, c.Instance)
		if c.ToNode != jobMachine.Start {
			bad("a start elsewhere than the start node")
		}
	} else {
		switch {
		case sh == nil:
			bad("change of a job never started")
		case sh.final:
			bad("a FINAL job changed")
		case c.FromNode != sh.node:
			bad("from " + c.FromNode + ", but the job was in " + sh.node)
		}
		var t *fsm.Transition
		if n := jobMachine.Node(c.FromNode); n != nil {
			t = n.Transitions[c.Transition]
		}
		switch {
		case c.Kind != fsm.ChangeTransitioned && c.Kind != fsm.ChangeSignaled:
			bad("not a transition of a held job")
		case t == nil || t.To != c.ToNode || t.Signal != (c.Kind == fsm.ChangeSignaled):
			bad("not a transition of node " + c.FromNode)
		case c.Kind == fsm.ChangeTransitioned && c.Device == "":
			bad("a job transition no device's round took")
		}
	}
	sh.node, sh.final = c.ToNode, c.ToStatus == fsm.StatusFinal
}

// liveJobs counts jobs not final.
func (s *sim) liveJobs() int {
	n := 0
	for _, id := range s.jobOrder {
		if !s.jobs[id].final {
			n++
		}
	}
	return n
}

// devices is the device side of a tick: printers' hardware moves on, then
// printers, the operator and orders call the server.
func (s *sim) devices() {
	for _, p := range s.printers {
		if p.node == nodePrinting && s.tick >= p.end {
			switch p.outcome {
			case outcomeFinish:
				p.node = nodeWaiting
			case outcomeFail:
				p.node = nodeError
			case outcomePower:
				// The printer restarts in error, holding the job; its
				// stream died with the power.
				p.node, p.conn = nodeError, 0
				s.res.PowerLosses++
			case outcomeForget:
				// It restarts idle, knowing only its last command.
				p.node, p.job, p.conn = nodeReady, "", 0
				s.res.PowerLosses++
			}
			s.tracef("%s hardware: %s %s", p.id, p.node, p.job)
		} else if p.node == nodeReady && s.active && s.rng.Float64() < pFault {
			p.node = nodeError
			s.tracef("%s hardware: faults idle", p.id)
		}
	}
	for _, p := range s.printers {
		if act := s.rng.Float64(); s.active && act >= pDeviceAct || act >= pDeviceDrain {
			continue
		}
		if !s.active && p.conn != 0 && s.liveJobs() == 0 {
			continue // the work is done: nothing left to report
		}
		late := p.late
		p.late = nil
		switch r := s.rng.Float64(); {
		case p.conn == 0:
			s.connect(p)
		case s.active && r < 0.05:
			s.disconnect(p)
		case r < 0.25:
			s.deviceRound(p, "poke", func() (*fsm.DeviceCommand, error) { return s.eng.Poke(s.ctx, p.id, p.conn) })
		default:
			rep := s.report(p)
			s.deviceRound(p, "report", func() (*fsm.DeviceCommand, error) { return s.eng.Report(s.ctx, p.id, p.conn, rep) })
		}
		if late != nil {
			// Overtaken by the answer to the printer's next call.
			s.tracef("%s gets a late command", p.id)
			s.obey(p, late)
		}
	}
	if !s.active || s.rng.Float64() < pOperator {
		s.operate()
	}
	if s.active && s.rng.Float64() < pOrder && s.liveJobs() < maxLiveJobs {
		s.order()
	}
}

func (s *sim) report(p *printer) fsm.DeviceReport {
	p.seq++
	rep := fsm.DeviceReport{Seq: p.seq, Node: p.node, Job: p.job, Rejection: p.reject, LastCommand: p.lastCmd}
	p.reject = nil
	return rep
}

// deviceCall runs one call of the device side and sorts its error: nil,
// ambiguous (the store failed or the server crashed), or one the API
// answers; any other is a failure of the run.
func (s *sim) deviceCall(what string, f func() error) (err error, ambiguous bool) {
	s.res.DeviceCalls++
	s.deviceCalled = true
	err, ambiguous, _ = s.engineCall(what, f)
	switch {
	case ambiguous:
		s.tracef("server: %s is ambiguous: %v", what, err)
	case err == nil:
	case errors.Is(err, engine.ErrReplaced), errors.Is(err, store.ErrNotFound), errors.Is(err, fsm.ErrIllegalTransition),
		errors.Is(err, fsm.ErrFinal):
		s.tracef("server: %s: %v", what, err)
	default:
		s.failf("%s: unexpected error: %v", what, err)
	}
	return err, ambiguous
}

func (s *sim) connect(p *printer) {
	rep := s.report(p)
	var conn uint64
	var cmd *fsm.DeviceCommand
	s.tracef("%s connects in %s %q", p.id, p.node, p.job)
	err, _ := s.deviceCall("connect of "+p.id, func() (err error) {
		conn, cmd, err = s.eng.Connect(s.ctx, engine.Registration{ID: p.id, Pool: devicePool}, rep)
		return err
	})
	if err != nil {
		return
	}
	p.conn = conn
	s.command(p, cmd)
}

func (s *sim) disconnect(p *printer) {
	s.tracef("%s disconnects", p.id)
	conn := p.conn
	p.conn = 0
	s.deviceCall("disconnect of "+p.id, func() error { return s.eng.Disconnect(s.ctx, p.id, conn, "sim") })
}

// deviceRound runs a round on p's stream and hands p its command.
func (s *sim) deviceRound(p *printer, what string, f func() (*fsm.DeviceCommand, error)) {
	var cmd *fsm.DeviceCommand
	s.tracef("%s %s in %s %q", p.id, what, p.node, p.job)
	err, _ := s.deviceCall(what+" of "+p.id, func() (err error) {
		cmd, err = f()
		return err
	})
	switch {
	case errors.Is(err, engine.ErrReplaced):
		p.conn = 0
	case err == nil:
		s.command(p, cmd)
	}
}

// command sends cmd to p over the network: lost, late, or carried out at
// once.
func (s *sim) command(p *printer, cmd *fsm.DeviceCommand) {
	if cmd == nil {
		return
	}
	s.res.Commands++
	switch r := s.rng.Float64(); {
	case s.active && r < pLose:
		s.tracef("network loses command %s #%d to %s", cmd.Name, cmd.Seq, p.id)
	case s.active && r < pLose+pLateCmd:
		p.late = cmd
	default:
		s.obey(p, cmd)
	}
}

// obey carries cmd out when it still matches p's state, and otherwise
// refuses it in its next report.
func (s *sim) obey(p *printer, cmd *fsm.DeviceCommand) {
	ok := cmd.Seq > p.lastCmd && cmd.Node == p.node
	switch cmd.Name {
	case "print":
		ok = ok && p.job == "" && p.node == nodeReady
	case "done":
		ok = ok && p.job == cmd.Job
	case "recover":
		// Whatever the failure, it was cleared: the job need not match
		// (the printer may have forgotten it, then faulted idle).
	case "cancel":
		ok = ok && p.node == nodePrinting && p.job == cmd.Job
	case signalClear:
		ok = ok && (p.node == nodeError || p.node == nodeWaiting)
	default:
		ok = false
	}
	if !ok {
		s.res.Rejected++
		s.tracef("%s refuses command %s #%d (%s %q)", p.id, cmd.Name, cmd.Seq, p.node, p.job)
		p.reject = &fsm.Rejection{CommandSeq: cmd.Seq, Reason: "stale"}
		return
	}
	p.lastCmd = cmd.Seq
	if cmd.Name == "print" {
		p.node, p.job, p.end = nodePrinting, cmd.Job, s.tick+1+s.rng.IntN(maxPrint)
		p.outcome = outcomeFinish
		if r := s.rng.Float64(); s.active && r < pPrintFail {
			p.outcome = outcomeFail
		} else if s.active && r < pPrintFail+pPowerLoss/2 {
			p.outcome = outcomeForget
		} else if s.active && r < pPrintFail+pPowerLoss {
			p.outcome = outcomePower
		}
		s.res.Prints++
	} else if cmd.Name == "cancel" {
		p.node, p.job = nodeWaiting, "" // the partial part stays on the bed
	} else {
		p.node, p.job = nodeReady, ""
	}
	s.tracef("%s carries out %s #%d: %s %q", p.id, cmd.Name, cmd.Seq, p.node, p.job)
}

// operate is the operator: it takes a finished part off its printer or
// clears a failed one, by signalling the job; clears a printer that
// faulted or stopped without a job, by signalling the printer; or cancels
// a print. An acknowledged signal must survive every crash.
func (s *sim) operate() {
	type action struct{ id, what string }
	var todo []action
	cancels := s.active && s.rng.Float64() < pCancel
	for _, id := range s.jobOrder {
		switch n := s.jobs[id].node; {
		case n == jobAwaiting:
			todo = append(todo, action{id, "retrieved"})
		case n == jobFailed:
			todo = append(todo, action{id, "recovered"})
		case n == nodePrinting && cancels:
			todo = append(todo, action{id, "cancel"})
		}
	}
	for _, p := range s.printers {
		if p.job == "" && (p.node == nodeError || p.node == nodeWaiting) {
			todo = append(todo, action{p.id, signalClear})
		}
	}
	if len(todo) == 0 {
		return
	}
	a := todo[s.rng.IntN(len(todo))]
	var res fsm.Instance
	var err error
	s.tracef("operator signals %s on %s", a.what, a.id)
	switch a.what {
	case signalClear:
		err, _ = s.deviceCall("signal cleared of "+a.id, func() error {
			_, err := s.eng.SignalDevice(s.ctx, a.id, signalClear, "operator")
			return err
		})
		if err == nil {
			s.res.Signals++
		}
		return
	case "cancel":
		err, _ = s.deviceCall("cancel of "+a.id, func() (err error) {
			res, err = s.eng.CancelInstance(s.ctx, a.id, "operator", "operator")
			return err
		})
	default:
		err, _ = s.deviceCall("signal "+a.what+" of "+a.id, func() (err error) {
			res, err = s.eng.SignalInstance(s.ctx, a.id, a.what, nil, "operator")
			return err
		})
	}
	if err == nil {
		kind := fsm.ChangeSignaled
		if res.Node == fsm.NodeAborted {
			kind = fsm.ChangeCanceled
		}
		s.chk.ack(acked{id: a.id, rev: res.Rev, kind: kind})
		s.res.Signals++
	}
}

// order submits an order to one printer or to the pool; sometimes the
// same order again.
func (s *sim) order() {
	a := engine.OrderArgs{Model: "part", Quantity: 1 + s.rng.IntN(2), Actor: "customer"}
	if s.nextOrder > 0 && s.rng.IntN(5) == 0 {
		a.ID = fmt.Sprintf("o%03d", s.rng.IntN(s.nextOrder))
	} else {
		a.ID = fmt.Sprintf("o%03d", s.nextOrder)
		s.nextOrder++
	}
	if s.rng.IntN(2) == 0 {
		a.Pool = devicePool
	} else {
		a.Printer = s.printers[s.rng.IntN(len(s.printers))].id
	}
	s.tracef("customer orders %s x%d on %s%s", a.ID, a.Quantity, a.Printer, a.Pool)
	s.deviceCall("order "+a.ID, func() error {
		_, _, err := s.eng.SubmitOrder(s.ctx, a)
		if errors.Is(err, engine.ErrAlreadyExists) {
			return nil // the same id with other content: refused, as it must be
		}
		return err
	})
}

// checkDevices checks the printers' records and the jobs against each
// other, the changelog and the printers themselves: no printer holds two
// jobs and no job is printing on two printers; every job in progress
// belongs to exactly the printer its order queued it on.
func (s *sim) checkDevices() {
	s.deviceCalled = false
	var devs []fsm.Device
	jobs := map[string]fsm.Instance{}
	s.view(func(tx store.ReadTx) (err error) {
		if devs, err = tx.Devices("", "", 0); err != nil {
			return err
		}
		for _, id := range s.jobOrder {
			if s.jobs[id].final {
				continue
			}
			if jobs[id], err = tx.Instance(id); err != nil {
				return err
			}
		}
		return nil
	})
	holder := map[string]string{}
	byID := map[string]fsm.Device{}
	for _, d := range devs {
		byID[d.ID] = d
		if d.Job == "" {
			continue
		}
		if other, ok := holder[d.Job]; ok {
			s.failf("job %s is the job of printers %s and %s", d.Job, other, d.ID)
		}
		holder[d.Job] = d.ID
		j, ok := jobs[d.Job]
		switch {
		case !ok:
			s.failf("printer %s holds job %s, which is final or unknown", d.ID, d.Job)
		case j.Node == jobQueued:
			s.failf("printer %s holds job %s, still queued", d.ID, d.Job)
		case j.Params[engine.JobParamDevice] != d.ID:
			s.failf("printer %s holds job %s, queued on %s", d.ID, d.Job, j.Params[engine.JobParamDevice])
		}
	}
	for _, id := range s.jobOrder {
		j, ok := jobs[id]
		if !ok {
			continue
		}
		if sh := s.jobs[id]; j.Node != sh.node {
			s.failf("job %s is in %s, its changelog says %s", id, j.Node, sh.node)
		}
		if j.Node == nodePrinting && holder[id] == "" {
			s.failf("job %s is printing on %s, but no printer's record names it", id, j.Params[engine.JobParamDevice])
		}
	}
	printing := map[string]string{}
	for _, p := range s.printers {
		if p.node != nodePrinting {
			continue
		}
		if other, ok := printing[p.job]; ok {
			s.failf("job %s is printing on printers %s and %s", p.job, other, p.id)
		}
		printing[p.job] = p.id
		if j := jobs[p.job]; (j.Node != nodePrinting && j.Node != jobCanceling) || byID[p.id].Job != p.job {
			s.failf("printer %s prints job %s, which the server has in %q on printer record %q", p.id, p.job, j.Node, byID[p.id].Job)
		}
	}
}
