package printersim

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/internal/clock"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The print_job machine's nodes that call for an operator, and the
// signals that answer them.
const (
	JobMachine         = "print_job"
	JobAwaiting        = "awaiting_retrieval"
	JobFailed          = "failed"
	JobCanceled        = "canceled"
	SignalRetrieved    = "retrieved"
	SignalRecovered    = "recovered"
	operatorRetryDelay = 100 * time.Millisecond
	operatorMaxRetry   = 2 * time.Second
)

// DispatchTransition is the print_job transition of a job sent to its
// printer.
const DispatchTransition = "dispatch"

// Operator actions that are no job signal.
const (
	// actionCancel is InstanceService.CancelInstance of a printing job.
	actionCancel = "cancel"
	// actionCleared is the printer signal cleared (DeviceService.SignalDevice).
	actionCleared = CommandCleared
)

// Operator is the humans of the print room: it follows the changelog and,
// a while after a part is ready on a printer's bed (a job reaches
// awaiting_retrieval) or a print failed (a job reaches failed), signals
// the job retrieved or recovered with InstanceService.SignalInstance,
// whether the printer is online or not. After a cancelled print stopped (a
// job reaches canceled from the printer), it takes the partial part off
// and signals the printer cleared (DeviceService.SignalDevice). With
// CancelRate it also cancels some prints (InstanceService.CancelInstance)
// a while after they started. A call that fails because the server is
// away is tried again; one the job or printer no longer allows (another
// operator was quicker) is dropped.
type Operator struct {
	// Client is the connection to the server. Required.
	Client *client.Client
	// Delay is the average time an operator takes to walk to the printer;
	// each action waits uniformly in [Delay/2, 3·Delay/2]. Zero: at once.
	Delay time.Duration
	// FromSeq is where to start reading the changelog: 1 replays every
	// retained change (jobs that waited before the operator came), 0
	// starts from now. Changes retention deleted are skipped.
	FromSeq uint64
	// Devices, when set, limits the operator to the jobs of these printers.
	Devices map[string]bool
	// Clock times the delays. Nil: the wall clock.
	Clock clock.Clock
	// Rand draws the delays. Nil: a source seeded with 1.
	Rand *rand.Rand
	// CancelRate is the probability, in [0, 1], that the operator cancels
	// a print it saw start. Zero: never.
	CancelRate float64
	// OnEvent, when set, receives EventRetrieved, EventRecoverySignaled,
	// EventCancelRequested and EventClearSignaled for every action the
	// server acknowledged, from any goroutine.
	OnEvent func(Event)

	mu sync.Mutex
	wg sync.WaitGroup
}

// Run follows the changelog and acts on it until ctx ends; it waits for
// the actions under way before it returns. It returns ctx's error, or the
// error that stopped the changelog stream.
func (o *Operator) Run(ctx context.Context) error {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Rand == nil {
		o.Rand = rand.New(rand.NewPCG(1, 1))
	}
	defer o.wg.Wait()
	return o.Client.FollowRetained(ctx, &pb.ChangesRequest{FromSeq: o.FromSeq, Machine: JobMachine}, func(c *pb.Change) error {
		if c.GetFromNode() == c.GetToNode() || (o.Devices != nil && !o.Devices[c.GetDevice()]) {
			return nil
		}
		action := ""
		switch {
		case c.GetToNode() == JobAwaiting:
			action = SignalRetrieved
		case c.GetToNode() == JobFailed:
			action = SignalRecovered
		case c.GetToNode() == JobCanceled && c.GetKind() == pb.ChangeKind_CHANGE_KIND_TRANSITIONED:
			action = actionCleared // the printer stopped: clear its bed
		case c.GetTransition() == DispatchTransition && o.CancelRate > 0:
			o.mu.Lock()
			cancel := o.Rand.Float64() < o.CancelRate
			o.mu.Unlock()
			if cancel {
				action = actionCancel
			}
		}
		if action == "" {
			return nil
		}
		o.wg.Add(1)
		go func() {
			defer o.wg.Done()
			o.act(ctx, c.GetInstance(), c.GetDevice(), action)
		}()
		return nil
	})
}

func (o *Operator) wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := o.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

// act walks to the printer and takes action about job, trying again while
// the server is unreachable.
func (o *Operator) act(ctx context.Context, job, device, action string) {
	o.mu.Lock()
	d := time.Duration(float64(o.Delay) * (0.5 + o.Rand.Float64()))
	o.mu.Unlock()
	retry := operatorRetryDelay
	for o.wait(ctx, d) {
		var err error
		kind := EventRetrieved
		switch action {
		case actionCancel:
			kind = EventCancelRequested
			_, err = o.Client.Instances.CancelInstance(ctx, &pb.CancelInstanceRequest{Id: job, Reason: "operator"})
		case actionCleared:
			kind = EventClearSignaled
			_, err = o.Client.Devices.SignalDevice(ctx, &pb.SignalDeviceRequest{DeviceId: device, Signal: CommandCleared})
		case SignalRecovered:
			kind = EventRecoverySignaled
			fallthrough
		default:
			_, err = o.Client.Instances.SignalInstance(ctx, &pb.SignalInstanceRequest{Id: job, Signal: action})
		}
		switch status.Code(err) {
		case codes.OK:
			if o.OnEvent != nil {
				o.OnEvent(Event{At: o.Clock.Now(), Printer: device, Kind: kind, Job: job})
			}
			return
		case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
			d, retry = retry, min(2*retry, operatorMaxRetry)
		default:
			// FAILED_PRECONDITION: the job or printer moved on (an action
			// whose answer was lost took effect, someone else acted, the
			// print ended before the cancel), or ctx ended.
			return
		}
	}
}
