package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/dfsmr/dfsmr/server/sim"
	"github.com/spf13/cobra"
)

// dstCommand runs the deterministic simulation (package server/sim) in
// process: it needs no server.
func (a *app) dstCommand() *cobra.Command {
	var (
		seed     uint64
		seeds    int
		ticks    int
		trace    bool
		dir      string
		parallel int
		bug      string
	)
	cmd := &cobra.Command{
		Use:   "dst",
		Short: "Run the deterministic simulation of the server for some seeds",
		Long: `Dst runs the real engine and bbolt store under a simulated clock, network and
crashes, driven by one seed, and checks every invariant after every step, that
every instance finishes once the faults stop, and that the history of client
calls is linearizable. The same seed always runs the same way: it prints the
same trace hash (--trace prints the trace itself).

--seeds N runs the seeds from --seed on, --parallel at a time. A failing seed
is printed with the command that replays it; when the history is not
linearizable, porcupine's HTML visualization is written to --dir. The exit
code is 1 when any seed fails.

--bug builds a deliberate defect into the server, to watch the simulation
catch it: split-changelog (changelog entries committed in a transaction of
their own), stale-tokens (a stale fencing token takes effect) or
forget-device-job (a printer's record loses the job it holds).`,
		Example: "  dfsmr dst --seed 7 --ticks 2000\n  dfsmr dst --seeds 10000\n  dfsmr dst --seed 7 --trace | less",
		Args:    args(cobra.NoArgs),
		RunE: runE(func(*cobra.Command, []string) error {
			var bugs sim.Bugs
			switch bug {
			case "":
			case "split-changelog":
				bugs.SplitChangelog = true
			case "stale-tokens":
				bugs.StaleTokens = true
			case "forget-device-job":
				bugs.ForgetDeviceJob = true
			default:
				return usageErrorf("--bug must be split-changelog, stale-tokens or forget-device-job, not %q", bug)
			}
			switch {
			case seeds < 1:
				return usageErrorf("--seeds must be at least 1")
			case ticks < 0:
				return usageErrorf("--ticks must not be negative")
			case parallel < 1:
				return usageErrorf("--parallel must be at least 1")
			case trace && seeds != 1:
				return usageErrorf("--trace needs --seeds 1")
			case trace && a.json():
				return usageErrorf("--trace prints text: not with -o json")
			}
			if dir == "" {
				d, err := os.MkdirTemp("", "dfsmr-dst-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(d)
				dir = d
			}
			return a.runDST(seed, seeds, ticks, parallel, dir, trace, bugs)
		}),
	}
	f := cmd.Flags()
	f.Uint64Var(&seed, "seed", 1, "the (first) seed")
	f.IntVar(&seeds, "seeds", 1, "how many seeds to run, from --seed on")
	f.IntVar(&ticks, "ticks", 2000, "ticks of each seed with faults on")
	f.BoolVar(&trace, "trace", false, "print the trace of the seed")
	f.StringVar(&dir, "dir", "", "directory for the bbolt files and visualizations (default: a temporary one, removed after)")
	f.IntVar(&parallel, "parallel", runtime.NumCPU(), "seeds run at once")
	f.StringVar(&bug, "bug", "", "build a defect into the server: split-changelog, stale-tokens or forget-device-job")
	return cmd
}

func (a *app) runDST(first uint64, n, ticks, parallel int, dir string, trace bool, bugs sim.Bugs) error {
	start := time.Now()
	var (
		mu     sync.Mutex
		total  sim.Result
		failed []error
		wg     sync.WaitGroup
		next   = make(chan uint64)
	)
	for range min(parallel, n) {
		wg.Go(func() {
			for seed := range next {
				cfg := sim.Config{Seed: seed, Ticks: ticks, Dir: dir, Bugs: bugs}
				if trace {
					cfg.Trace = a.stdout
				}
				res, err := sim.Run(cfg)
				mu.Lock()
				switch {
				case err != nil && a.json():
					failed = append(failed, err)
					a.printValue(map[string]any{"seed": seed, "ok": false, "error": err.Error()})
				case err != nil:
					failed = append(failed, err)
					fmt.Fprintf(a.stdout, "seed %d: FAIL\n%s\n", seed, cleanLines(err.Error()))
				case n == 1 && a.json():
					a.printValue(map[string]any{"seed": seed, "ok": true, "traceHash": res.Hash})
				case n == 1:
					fmt.Fprintf(a.stdout, "seed %d: ok, trace hash %s\n", seed, res.Hash)
				}
				total.Add(res)
				mu.Unlock()
			}
		})
	}
	ran := 0
feed:
	for ; ran < n; ran++ {
		select {
		case next <- first + uint64(ran):
		case <-a.ctx.Done(): // interrupted: report the seeds already running and done
			break feed
		}
	}
	close(next)
	wg.Wait()
	interrupted := ran < n
	if interrupted && !a.json() {
		fmt.Fprintf(a.stdout, "interrupted after seed %d\n", first+uint64(ran)-1)
	}
	n = ran
	if a.json() {
		total.Seed, total.Hash = 0, ""
		if err := a.printValue(map[string]any{"seeds": n, "ticks": ticks, "failed": len(failed), "interrupted": interrupted,
			"seconds": time.Since(start).Seconds(), "totals": total}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(a.stdout, "%d seeds x %d ticks in %v: %d failed; %d calls attempted, %d acknowledged, %d ambiguous; "+
			"%d requests delivered, %d messages lost, %d duplicated; %d crashes, %d store faults; %d instances, %d changes, %d operations checked; "+
			"%d device calls, %d commands (%d refused as stale), %d prints, %d power losses, %d operator signals\n",
			n, ticks, time.Since(start).Round(time.Millisecond), len(failed), total.Calls, total.Acked, total.Ambiguous,
			total.Delivered, total.Lost, total.Duplicated, total.Crashes, total.StoreFaults, total.Instances, total.Changes, total.Ops,
			total.DeviceCalls, total.Commands, total.Rejected, total.Prints, total.PowerLosses, total.Signals)
	}
	if len(failed) > 0 {
		return &codeError{code: exitFailed, msg: fmt.Sprintf("%d of %d seeds failed", len(failed), n)}
	}
	return nil
}
