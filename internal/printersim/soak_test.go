package printersim_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/internal/printersim"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	soakDuration = flag.Duration("soak.duration", 3*time.Second, "how long the soak test runs its printers")
	soakSeed     = flag.Uint64("soak.seed", 0, "seed of the soak test (0: a new one, printed)")
	soakPrinters = flag.Int("soak.printers", 50, "number of printers in the soak test")
	soakRestarts = flag.Duration("soak.restart-every", time.Second, "the soak test restarts the server at most this often")
)

// soakLog is what the soak test saw happen, from every goroutine.
type soakLog struct {
	mu     sync.Mutex
	counts map[printersim.EventKind]int
	// printed counts the print commands each printer carried out, per job.
	printed map[string]map[string]int
	// acked are the operator signals the server acknowledged.
	acked []printersim.Event
	// submitted are the jobs of acknowledged orders.
	submitted []string
}

func (l *soakLog) event(ev printersim.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.counts[ev.Kind]++
	switch ev.Kind {
	case printersim.EventPrinting:
		if l.printed[ev.Job] == nil {
			l.printed[ev.Job] = map[string]int{}
		}
		l.printed[ev.Job][ev.Printer]++
	case printersim.EventRetrieved, printersim.EventRecoverySignaled, printersim.EventCancelRequested, printersim.EventClearSignaled:
		l.acked = append(l.acked, ev)
	}
}

// TestSoak runs simulated printers, their operators and a stream of
// orders against a server that restarts on the same bbolt file now and
// then, with dropped connections, failed prints, pulled plugs (some of
// which make the printer forget its job), and operators who cancel prints
// and clear printers. At the end every job is in a node consistent with
// its printer, no job was ever printing on two printers (nor twice), no
// cancelled job ended before its printer stopped, and every operator
// action the server acknowledged is in the changelog.
//
// -soak.duration, -soak.seed, -soak.printers and -soak.restart-every tune
// it; a failure prints the seed to replay the run's luck.
func TestSoak(t *testing.T) {
	seed := *soakSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("soak seed %d: replay with -run TestSoak -soak.seed=%d", seed, seed)
		}
	})
	rng := rand.New(rand.NewPCG(seed, 0))
	addr, db := freeAddr(t), filepath.Join(t.TempDir(), "dfsmr.db")
	srv := mustServer(t, addr, db, nil)
	c := mustClient(t, addr)
	log := &soakLog{counts: map[printersim.EventKind]int{}, printed: map[string]map[string]int{}}

	const pool = "soak"
	fleet := printersim.NewFleet("p", *soakPrinters, printersim.Profile{
		PrintTime: 60 * time.Millisecond, PrintJitter: 0.5, FailRate: 0.15, PowerLossRate: 0.08, ForgetRate: 0.5,
	}, seed)
	base := printersim.Link{
		Client: c, Pool: pool, DropRate: 0.02,
		ReconnectDelay: 30 * time.Millisecond, RestartDelay: 80 * time.Millisecond, ReportEvery: 150 * time.Millisecond,
		OnEvent: log.event,
	}
	links := func(i int) printersim.Link { l := base; l.IgnoreStale = ignoresStale(i); return l }

	ctx, stopPrinters := context.WithCancel(context.Background())
	defer stopPrinters()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := fleet.Run(ctx, base, links); err != nil {
			t.Error(err)
		}
	})
	op := &printersim.Operator{Client: c, Delay: 30 * time.Millisecond, FromSeq: 1, Devices: fleet.IDs(), CancelRate: 0.1,
		Rand: rand.New(rand.NewPCG(seed, 1<<33)), OnEvent: log.event}
	wg.Go(func() {
		if err := op.Run(ctx); err != nil && ctx.Err() == nil {
			t.Error(err)
		}
	})
	// Three clerks submit orders, so that queues build up.
	for k := range uint64(3) {
		orderRng := rand.New(rand.NewPCG(seed, 1<<34+k))
		wg.Go(func() { submitOrders(ctx, t, c, fmt.Sprintf("c%d-", k), orderRng, pool, log) })
	}

	// The chaos: restart the server on the same file now and then. The run
	// lasts -soak.duration, and longer (a minute at most) until it saw
	// every kind of event it means to exercise and two restarts, however
	// slow the machine.
	mustSee := []printersim.EventKind{printersim.EventPrinting, printersim.EventFinished, printersim.EventCleared,
		printersim.EventRetrieved, printersim.EventFailed, printersim.EventRecovered, printersim.EventRecoverySignaled,
		printersim.EventPowerLoss, printersim.EventDropped, printersim.EventRejected, printersim.EventIgnored,
		printersim.EventCancelRequested, printersim.EventCanceled, printersim.EventClearSignaled, printersim.EventDeviceCleared,
		printersim.EventForgot}
	missing := func() []printersim.EventKind {
		log.mu.Lock()
		defer log.mu.Unlock()
		var out []printersim.EventKind
		for _, k := range mustSee {
			if log.counts[k] == 0 {
				out = append(out, k)
			}
		}
		return out
	}
	// A restart waits for -soak.restart-every and for some progress since
	// the last one (beds cleared or printers recovered), so that a slow
	// machine gets as much work done between restarts as a fast one.
	progress := func() int {
		log.mu.Lock()
		defer log.mu.Unlock()
		return log.counts[printersim.EventCleared] + log.counts[printersim.EventRecovered]
	}
	const progressPerRestart, minRestarts = 20, 2
	restarts, slowest := 0, time.Duration(0)
	start := time.Now()
	lastRestart, lastProgress := start, 0
	check := time.NewTicker(20 * time.Millisecond)
	defer check.Stop()
	for range check.C {
		took := time.Since(start)
		if took >= *soakDuration && ((restarts >= minRestarts && len(missing()) == 0) || took > *soakDuration+time.Minute) {
			break
		}
		if time.Since(lastRestart) < *soakRestarts || progress()-lastProgress < progressPerRestart {
			continue
		}
		t0 := time.Now()
		if err := srv.Stop(context.Background()); err != nil {
			t.Fatalf("stop server: %v", err)
		}
		time.Sleep(time.Duration(rng.Int64N(int64(100 * time.Millisecond))))
		srv = mustServer(t, addr, db, nil)
		slowest = max(slowest, time.Since(t0))
		restarts++
		lastRestart, lastProgress = time.Now(), progress()
	}
	stopPrinters()
	wg.Wait()
	t.Logf("seed %d, %d printers, ran %v, %d server restarts (slowest %v): %d jobs ordered; events %v",
		seed, len(fleet.Printers), time.Since(start).Round(time.Millisecond), restarts, slowest.Round(time.Millisecond),
		len(log.submitted), log.counts)
	if m := missing(); len(m) > 0 || restarts < minRestarts {
		t.Errorf("the soak saw no %v events and %d restarts: it did not exercise what it checks", m, restarts)
	}

	changes := readChangelog(t, c)
	checkPrintedOnce(t, log, changes)
	checkStoppedBeforeCanceled(t, changes)
	checkSignalsKept(t, log, changes)
	checkRejections(t, fleet, changes)
	checkConsistent(t, c, fleet)
}

// ignoresStale says which printers of the soak ignore stale commands: half
// of them; the others reject them.
func ignoresStale(i int) bool { return i%2 == 1 }

// submitOrders submits small orders to the pool until ctx ends, their ids
// starting with prefix. An order
// that fails because the server is away is submitted again with the same
// id: SubmitOrder is idempotent.
func submitOrders(ctx context.Context, t *testing.T, c *client.Client, prefix string, rng *rand.Rand, pool string, log *soakLog) {
	devices := c.Devices
	for n := 1; ; n++ {
		req := &pb.SubmitOrderRequest{OrderId: fmt.Sprintf("%so%d", prefix, n), Model: fmt.Sprintf("model-%d", rng.IntN(5)),
			Quantity: uint32(1 + rng.IntN(16)), Pool: pool, Priority: int32(rng.IntN(3))}
		for {
			resp, err := devices.SubmitOrder(ctx, req)
			if err == nil {
				log.mu.Lock()
				for _, j := range resp.GetJobs() {
					log.submitted = append(log.submitted, j.GetId())
				}
				log.mu.Unlock()
				break
			}
			if ctx.Err() != nil {
				return
			}
			if code := status.Code(err); code != codes.Unavailable && code != codes.NotFound {
				// NotFound: the pool has no printer yet, before the first
				// registration. Anything else is a bug.
				t.Errorf("SubmitOrder %v: %v", req, err)
				return
			}
			if !sleepCtx(ctx, 10*time.Millisecond) {
				return
			}
		}
		if !sleepCtx(ctx, time.Duration(rng.Int64N(int64(40*time.Millisecond)))) {
			return
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// readChangelog replays the whole changelog.
func readChangelog(t *testing.T, c *client.Client) []*pb.Change {
	t.Helper()
	var all []*pb.Change
	err := c.Follow(t.Context(), &pb.ChangesRequest{FromSeq: 1, StopAtHead: true}, func(ch *pb.Change) error {
		all = append(all, ch)
		return nil
	})
	if err != nil {
		t.Fatalf("replay the changelog: %v", err)
	}
	for i, ch := range all {
		if ch.GetSeq() != uint64(i+1) {
			t.Fatalf("change %d has seq %d: the changelog has a gap", i+1, ch.GetSeq())
		}
	}
	return all
}

// checkPrintedOnce checks that no job was ever printing on two printers:
// from the printers' side (each job was started once, by one printer), and
// from the changelog (each job was dispatched at most once, every print
// command of a job went to one printer, and no two printers reported
// printing the same job at the same time).
func checkPrintedOnce(t *testing.T, log *soakLog, changes []*pb.Change) {
	t.Helper()
	for job, by := range log.printed {
		if len(by) != 1 {
			t.Errorf("job %s printed by %v", job, by)
		}
		for p, n := range by {
			if n != 1 {
				t.Errorf("job %s printed %d times by %s", job, n, p)
			}
		}
	}
	dispatched := map[string]int{}
	commandedTo := map[string]string{}
	printingOn := map[string]string{} // job -> device printing it, per DEVICE_MOVED
	for _, ch := range changes {
		job, dev := ch.GetInstance(), ch.GetDevice()
		switch ch.GetKind() {
		case pb.ChangeKind_CHANGE_KIND_TRANSITIONED:
			if ch.GetMachine() == printersim.JobMachine && ch.GetTransition() == "dispatch" {
				if dispatched[job]++; dispatched[job] > 1 {
					t.Errorf("change %d: job %s dispatched again", ch.GetSeq(), job)
				}
			}
		case pb.ChangeKind_CHANGE_KIND_DEVICE_COMMAND:
			if ch.GetTransition() != printersim.CommandPrint {
				continue
			}
			if prev, ok := commandedTo[job]; ok && prev != dev {
				t.Errorf("change %d: print of job %s sent to %s, earlier to %s", ch.GetSeq(), job, dev, prev)
			}
			commandedTo[job] = dev
		case pb.ChangeKind_CHANGE_KIND_DEVICE_MOVED:
			if ch.GetFromNode() == printersim.NodePrinting {
				for j, d := range printingOn {
					if d == dev {
						delete(printingOn, j)
					}
				}
			}
			if ch.GetToNode() == printersim.NodePrinting && job != "" {
				if other, ok := printingOn[job]; ok && other != dev {
					t.Errorf("change %d: %s reports printing job %s, which %s is printing", ch.GetSeq(), dev, job, other)
				}
				printingOn[job] = dev
			}
		}
	}
	if len(dispatched) == 0 {
		t.Error("the changelog has no dispatch")
	}
}

// checkStoppedBeforeCanceled checks that a cancelled print's job ended
// only once its printer had left printing: the printer confirmed it
// stopped.
func checkStoppedBeforeCanceled(t *testing.T, changes []*pb.Change) {
	t.Helper()
	node := map[string]string{} // device -> its last reported node
	stopped := 0
	for _, ch := range changes {
		switch ch.GetKind() {
		case pb.ChangeKind_CHANGE_KIND_DEVICE_MOVED, pb.ChangeKind_CHANGE_KIND_DEVICE_ONLINE:
			node[ch.GetDevice()] = ch.GetToNode()
		case pb.ChangeKind_CHANGE_KIND_TRANSITIONED:
			if ch.GetMachine() == printersim.JobMachine && ch.GetToNode() == printersim.JobCanceled {
				stopped++
				if n := node[ch.GetDevice()]; n == printersim.NodePrinting {
					t.Errorf("change %d: job %s canceled while %s is printing", ch.GetSeq(), ch.GetInstance(), ch.GetDevice())
				}
			}
		}
	}
	if stopped == 0 {
		t.Error("no cancelled print ended in the changelog")
	}
}

// checkSignalsKept checks that every operator action the server
// acknowledged is in the changelog: job signals, cancels (the job's cancel
// signal) and printer signals.
func checkSignalsKept(t *testing.T, log *soakLog, changes []*pb.Change) {
	t.Helper()
	signaled := map[[2]string]bool{}
	for _, ch := range changes {
		if ch.GetKind() == pb.ChangeKind_CHANGE_KIND_SIGNALED {
			id := ch.GetInstance()
			if id == "" {
				id = ch.GetDevice()
			}
			signaled[[2]string{id, ch.GetTransition()}] = true
		}
	}
	for _, ev := range log.acked {
		id, signal := ev.Job, printersim.SignalRetrieved
		switch ev.Kind {
		case printersim.EventRecoverySignaled:
			signal = printersim.SignalRecovered
		case printersim.EventCancelRequested:
			signal = printersim.CommandCancel
		case printersim.EventClearSignaled:
			id, signal = ev.Printer, printersim.CommandCleared
		}
		if !signaled[[2]string{id, signal}] {
			t.Errorf("operator action %s on %s was acknowledged but is not in the changelog", signal, id)
		}
	}
}

// checkRejections checks that the printers that reject stale commands
// were heard (DEVICE_REJECTED), and that those that ignore them never
// said a word.
func checkRejections(t *testing.T, fleet *printersim.Fleet, changes []*pb.Change) {
	t.Helper()
	ignores := map[string]bool{}
	for i, p := range fleet.Printers {
		ignores[p.ID()] = ignoresStale(i)
	}
	heard := 0
	for _, ch := range changes {
		if ch.GetKind() != pb.ChangeKind_CHANGE_KIND_DEVICE_REJECTED {
			continue
		}
		heard++
		if ignores[ch.GetDevice()] {
			t.Errorf("change %d: %s ignores stale commands but rejected command %d", ch.GetSeq(), ch.GetDevice(), ch.GetToken())
		}
	}
	if heard == 0 {
		t.Error("the changelog has no DEVICE_REJECTED")
	}
}

// holds lists, for each node of a print job that is not final, the
// printer states it is consistent with: the printer may be ahead of the
// server (it finished, failed or carried out a command whose report was
// lost), never behind it nor on another job.
var holds = map[string][]string{
	// Printing it, or done or failed with it offline; or ready without it:
	// the print command was lost, or the printer forgot the job.
	"printing": {"printing/J", "waiting_retrieval/J", "error/J", "ready/"},
	// Still printing it, or stopped (cancel carried out), finished or
	// failed, and not yet reported; or ready without it.
	"canceling": {"printing/J", "waiting_retrieval/", "waiting_retrieval/J", "error/J", "ready/"},
	// The part is on the bed.
	"awaiting_retrieval": {"waiting_retrieval/J"},
	// Still on the bed, or done carried out and not yet reported.
	"retrieved": {"waiting_retrieval/J", "ready/"},
	// In error with it, or ready without it: the printer forgot it.
	"failed": {"error/J", "ready/"},
	// Still in error, or recover carried out and not yet reported.
	"recovering": {"error/J", "ready/"},
}

// checkConsistent checks that every job is final, queued and held by no
// printer, or in a node consistent with its printer's state; that every
// job a printer holds is the job the server gave it; and that no printer
// carried out a command the server did not send.
func checkConsistent(t *testing.T, c *client.Client, fleet *printersim.Fleet) {
	t.Helper()
	byID := map[string]*printersim.Printer{}
	for _, p := range fleet.Printers {
		byID[p.ID()] = p
	}
	jobs, err := c.ListAllInstances(t.Context(), &pb.ListInstancesRequest{Machine: printersim.JobMachine}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	heldBy := map[string]string{}
	for _, p := range fleet.Printers {
		if p.Job() != "" {
			heldBy[p.Job()] = p.ID()
		}
	}
	final := 0
	for _, j := range jobs {
		p := byID[j.GetParams()["printer"]]
		if p == nil {
			t.Errorf("job %s is queued on %q, not a printer of the fleet", j.GetId(), j.GetParams()["printer"])
			continue
		}
		if h, ok := heldBy[j.GetId()]; ok && h != p.ID() {
			t.Errorf("job %s of %s is held by %s", j.GetId(), p.ID(), h)
		}
		if j.GetStatus() == pb.InstanceStatus_INSTANCE_STATUS_FINAL || j.GetNode() == "queued" {
			final++
			if p.Job() == j.GetId() {
				t.Errorf("job %s is %s but %s holds it in %s", j.GetId(), j.GetNode(), p.ID(), p.Node())
			}
			continue
		}
		got := p.Node() + "/"
		if p.Job() == j.GetId() {
			got += "J"
		} else if p.Job() != "" {
			got += p.Job()
		}
		ok := false
		for _, want := range holds[j.GetNode()] {
			ok = ok || want == got
		}
		if !ok {
			t.Errorf("job %s in %s, but its printer %s is in %s with job %q", j.GetId(), j.GetNode(), p.ID(), p.Node(), p.Job())
		}
	}
	t.Logf("%d jobs, %d final or queued", len(jobs), final)
	devs, err := c.Devices.ListDevices(t.Context(), &pb.ListDevicesRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs.GetDevices() {
		p := byID[d.GetId()]
		if p == nil {
			continue
		}
		if p.Job() != "" && d.GetJobId() != p.Job() {
			t.Errorf("printer %s holds job %s but the server gave it %q", p.ID(), p.Job(), d.GetJobId())
		}
		if p.LastCommand() > d.GetCommandSeq() {
			t.Errorf("printer %s carried out command %d; the server sent up to %d", p.ID(), p.LastCommand(), d.GetCommandSeq())
		}
	}
}
