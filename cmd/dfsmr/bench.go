package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strings"

	"github.com/dfsmr/dfsmr/internal/bench"
	"github.com/spf13/cobra"
)

func (a *app) benchCommand() *cobra.Command {
	var (
		cfg        bench.Config
		mode       string
		cpuprofile string
		clusterN   int
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure durable steps per second against a no-op RPC baseline",
		Long: `Bench runs --instances instances of a three-step machine ("bench") through
--workers concurrent workers whose handlers do nothing, so that what is
measured is dfsmr itself: every step is a lease and a Transition that the
server acknowledges only once it is fsync'd.

It starts a server in this process on a fresh bbolt file in a temporary
directory (fsync on, no per-client rate limit), unless --addr is given on
the command line (the DFSMR_ADDR environment variable does not count): then
it targets that server, and the store's commit and fsync rates are not
reported.

In the same run, over the same connection and with the same concurrency, it
measures the rate of pairs of no-op unary RPCs (the gRPC health service's
Check), and prints the ratio of durable steps per second to baseline pairs
per second: 1 means a durable step costs as much as two empty RPCs.

Modes: per-call (each worker: Ready for one instance, then Transition);
batched-ready (client.Worker: Ready leases up to --batch instances at once,
one Transition each); batched (client.Worker's default: batched Ready, and
the transitions that handlers finish while a TransitionBatch call is in
flight go together in the next one); continue (batched, and the server
leases each instance's next step straight back to the worker in the commit
of its transition: no Ready call after the first step); refill (continue,
and a slot whose instance finished gets the next READY instance in the same
commit: no Ready calls once the workers are full); or all. Each mode prints its figures and then one JSON
object on a line of its own (keys in lowerCamelCase, as everywhere; nodes
is the number of servers); the last line of the output is JSON. With -o json
only the JSON lines are printed.

With --cluster N (N of 2 or more), each mode runs twice in this process: on
one server, then on a cluster of N servers on loopback that bootstrap the
replicated log together (each has its own files);
the second run's figures end with vsOneNode, its steps/s over the first's.
The workers and the baseline are spread over every server, whose followers
forward writes to the leader (--via all), or go to the leader only (--via
leader).`,
		Example: "  dfsmr bench --instances 20000 --workers 64\n  dfsmr bench --mode all --cpuprofile cpu.out\n  dfsmr bench --mode refill --cluster 3",
		Args:    args(cobra.NoArgs),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			modes := []string{mode}
			if mode == "all" {
				modes = bench.Modes
			} else if !slices.Contains(bench.Modes, mode) {
				return usageErrorf("--mode must be one of %s or all, not %q", strings.Join(bench.Modes, ", "), mode)
			}
			if cmd.Flag("addr").Changed {
				cfg.Addr = a.addr
			}
			if clusterN == 1 || clusterN < 0 {
				return usageErrorf("--cluster must be 2 or more, not %d", clusterN)
			}
			if clusterN > 1 && cfg.Addr != "" {
				return usageErrorf("--cluster runs its servers in this process: it does not go with --addr")
			}
			if err := cfg.Validate(); err != nil {
				return usageError{err}
			}
			if cpuprofile != "" {
				f, err := os.Create(cpuprofile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			sizes := []int{1}
			if clusterN > 1 {
				sizes = append(sizes, clusterN)
			}
			for _, m := range modes {
				cfg.Mode = m
				var one bench.Result
				for _, n := range sizes {
					cfg.Nodes = n
					r, err := bench.Run(a.ctx, cfg)
					if err != nil {
						return fmt.Errorf("bench %s on %d nodes: %w", m, n, err)
					}
					if n == 1 {
						one = r
					} else {
						r.Compare(one)
					}
					if !a.json() {
						fmt.Fprint(a.stdout, r.String())
					}
					if err := a.printValue(r); err != nil {
						return err
					}
				}
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&mode, "mode", bench.ModePerCall, "per-call, batched-ready, batched, continue or all")
	f.IntVar(&cfg.Instances, "instances", bench.DefaultInstances, "instances to run (3 steps each)")
	f.IntVar(&cfg.Workers, "workers", bench.DefaultWorkers, "concurrent workers")
	f.IntVar(&cfg.Batch, "batch", bench.DefaultBatch, "most instances one Ready leases in batched mode")
	f.IntVar(&cfg.Pollers, "pollers", bench.DefaultPollers, "Ready calls per node in flight at once in batched mode")
	f.DurationVar(&cfg.Baseline, "baseline", bench.DefaultBaseline, "how long the no-op RPC baseline runs")
	f.StringVar(&cfg.Dir, "dir", "", "directory of the in-process server's file (default: a temporary one)")
	f.IntVar(&clusterN, "cluster", 0, "also run each mode on a cluster of this many servers in this process, after one server")
	f.StringVar(&cfg.Via, "via", bench.ViaAll, "where a cluster's load goes: all (every server; followers forward writes) or leader")
	f.StringVar(&cpuprofile, "cpuprofile", "", "write a CPU profile of the whole run (server and workers) to this file")
	return cmd
}
