package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/dfsmr/dfsmr/internal/printersim"
	"github.com/spf13/cobra"
)

// Defaults of printer-sim.
const (
	defaultSimPrefix        = "sim-printer-"
	defaultSimPool          = "sim"
	defaultSimPrintTime     = 10 * time.Second
	defaultSimOperatorDelay = 3 * time.Second
)

func (a *app) printerSimCommand() *cobra.Command {
	var (
		count         int
		prefix, pool  string
		prof          printersim.Profile
		link          printersim.Link
		operatorDelay time.Duration
		cancelRate    float64
		noOperator    bool
		seed          uint64
		duration      time.Duration
	)
	cmd := &cobra.Command{
		Use:     "printer-sim",
		GroupID: "devices",
		Short:   "Run simulated 3D printers (and their operators) against the server",
		Long: `Printer-sim connects --count simulated 3D printers to the server over
DeviceService.Connect, registered in --pool, and runs their reactive loop until
interrupted (or for --duration): they obey print, cancel, done, recover and
cleared when the command matches their state and refuse stale ones, print for
--print-time (±--print-jitter), fail with --fail-rate, lose power mid-print
with --power-loss-rate (and come back in error after --restart-delay, or
ready having forgotten the job with --forget-rate), and drop
their connection after a message with --drop-rate (and reconnect after
--reconnect-delay).

Unless --no-operator, simulated operators follow the changelog and, after
about --operator-delay, signal the jobs of these printers retrieved (the part
was taken off the bed) or recovered (the failed printer was cleared), signal
a printer that stopped a cancelled print cleared, and cancel prints with
--cancel-rate.

The same --seed gives the same printers, print for print. One line per
notable event (-o json: one object per event); when it ends, interrupted or
after --duration, a summary line counts the printers, the jobs and the
events of each kind (-o json: one object with "summary": true). Give the printers work with "dfsmr order", watch them with
"dfsmr devices" and "dfsmr changes -f".`,
		Example: "  dfsmr printer-sim --count 5 --pool lab --print-time 20s --fail-rate 0.1 --drop-rate 0.05",
		Args:    args(cobra.NoArgs),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			switch {
			case count < 1:
				return usageErrorf("--count must be at least 1")
			case operatorDelay < 0 || duration < 0:
				return usageErrorf("--operator-delay and --duration must not be negative")
			case !(cancelRate >= 0 && cancelRate <= 1):
				return usageErrorf("--cancel-rate %v is not in [0, 1]", cancelRate)
			}
			if err := prof.Validate(); err != nil {
				return usageErrorf("%v", err)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			link.Client, link.Pool = c, pool
			if err := link.WithDefaults().Validate(); err != nil {
				return usageErrorf("%v", err)
			}
			ctx := a.ctx
			if duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, duration)
				defer cancel()
			}
			var (
				mu    sync.Mutex
				tally printersim.Tally
				begin = time.Now()
			)
			link.OnEvent = func(ev printersim.Event) {
				tally.Add(ev)
				mu.Lock()
				defer mu.Unlock()
				if a.json() {
					a.printValue(simEventJSON(ev))
					return
				}
				fmt.Fprintln(a.stdout, clean(ev.String()))
			}
			fleet := printersim.NewFleet(prefix, count, prof, seed)
			var wg sync.WaitGroup
			var opErr error
			if !noOperator {
				op := &printersim.Operator{Client: c, Delay: operatorDelay, FromSeq: 1, Devices: fleet.IDs(), CancelRate: cancelRate,
					Rand: rand.New(rand.NewPCG(seed, 1<<33)), OnEvent: link.OnEvent}
				wg.Go(func() { opErr = op.Run(ctx) })
			}
			err = fleet.Run(ctx, link, nil)
			wg.Wait()
			if perr := a.printSimSummary(tally.Summary(), time.Since(begin), a.ctx.Err() != nil); err == nil {
				err = perr
			}
			if err != nil {
				return err
			}
			if opErr != nil && ctx.Err() == nil {
				return opErr
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.IntVar(&count, "count", 1, "number of printers")
	f.StringVar(&prefix, "prefix", defaultSimPrefix, "printer ids are this prefix and an index from 1")
	f.StringVar(&pool, "pool", defaultSimPool, "pool the printers register in")
	f.DurationVar(&prof.PrintTime, "print-time", defaultSimPrintTime, "average print duration")
	f.Float64Var(&prof.PrintJitter, "print-jitter", printersim.DefaultPrintJitter, "prints last print-time × (1 ± jitter); negative: exactly print-time")
	f.Float64Var(&prof.FailRate, "fail-rate", 0, "probability that a print fails")
	f.Float64Var(&prof.PowerLossRate, "power-loss-rate", 0, "probability that the plug is pulled during a print")
	f.Float64Var(&prof.ForgetRate, "forget-rate", 0, "probability that a printer whose plug was pulled comes back ready, its job forgotten")
	f.Float64Var(&cancelRate, "cancel-rate", 0, "probability that an operator cancels a print it saw start")
	f.Float64Var(&link.DropRate, "drop-rate", 0, "probability that the connection drops after a message")
	f.DurationVar(&link.ReconnectDelay, "reconnect-delay", printersim.DefaultReconnectDelay, "wait before reconnecting after a drop")
	f.DurationVar(&link.RestartDelay, "restart-delay", printersim.DefaultRestartDelay, "how long a printer stays dark after a power loss")
	f.DurationVar(&link.ReportEvery, "report-every", 0, "report status (and progress) this often when nothing changes (0: only on changes)")
	f.BoolVar(&link.IgnoreStale, "ignore-stale", false, "drop stale commands silently instead of rejecting them")
	f.DurationVar(&operatorDelay, "operator-delay", defaultSimOperatorDelay, "average time an operator takes to act")
	f.BoolVar(&noOperator, "no-operator", false, "run no operators: signal retrieved and recovered yourself")
	f.Uint64Var(&seed, "seed", 1, "seed of the printers' luck and the operators' delays")
	f.DurationVar(&duration, "duration", 0, "stop after this long (0: until interrupted)")
	return cmd
}

// simEventJSON is a printer-sim event for -o json.
func simEventJSON(ev printersim.Event) map[string]any {
	m := map[string]any{"time": ev.At.UTC().Format(time.RFC3339Nano), "printer": ev.Printer, "event": ev.Kind.String()}
	if ev.Job != "" {
		m["job"] = ev.Job
	}
	if ev.Seq != 0 {
		m["commandSeq"] = ev.Seq
	}
	if ev.Detail != "" {
		m["detail"] = ev.Detail
	}
	return m
}

// printSimSummary prints what a printer-sim run did.
func (a *app) printSimSummary(s printersim.Summary, took time.Duration, interrupted bool) error {
	if a.json() {
		return a.printValue(map[string]any{"summary": true, "interrupted": interrupted, "seconds": took.Seconds(),
			"printers": s.Printers, "jobs": s.Jobs, "events": s.Events})
	}
	how := "ran"
	if interrupted {
		how = "interrupted after"
	}
	_, err := fmt.Fprintf(a.stdout, "printer-sim %s %v: %s\n", how, took.Round(time.Millisecond), clean(s.String()))
	return err
}
