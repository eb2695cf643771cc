package main

import (
	"fmt"
	"os"

	"github.com/dfsmr/dfsmr/internal/reportdemo"
	"github.com/spf13/cobra"
)

func (a *app) reportDemoCommand() *cobra.Command {
	var (
		cfg         reportdemo.Config
		machineFile string
		noSerial    bool
	)
	cmd := &cobra.Command{
		Use:   "report-demo",
		Short: "Run the report pipeline example against a simulated reporting API",
		Long: `Report-demo moves --items reports (a client's report for a day) through the
bundled report machine: downloadable -> uploadable -> completed. It starts a
simulated reporting API on loopback (--latency per request, a --failure-rate
of HTTP 500s, and a --rate-limit answered with 429 and Retry-After) and a
dfsmr server in this process (or uses --addr when given on the command
line), then runs a worker with --workers concurrent handlers:

  downloadable  download the CSV report, convert cost to euros and watch time
                to seconds, stage the result; a 429 takes the throttled
                transition with the API's Retry-After as its delay
  uploadable    write the report atomically under <dir>/uploads/CLIENT/DAY.csv;
                the same content again is harmless, different content is a
                conflict (give_up)

A failure retries only its own item, with the node's backoff; a throttled
item waits alone. Progress is a live bar when stdout is a terminal, plain
lines otherwise.

Then the same reports go through a plain serial loop that retries the whole
item in place and sleeps the same backoff (or Retry-After), and both wall
times and their ratio are printed (--no-serial skips it). Both progress
lines are labelled; while the last items wait out a backoff the line says
so. --dir is created when missing. With -o json there is no progress, and
the result is one JSON object (durations in seconds).`,
		Example: "  dfsmr report-demo --items 500 --workers 64 --latency 20ms --failure-rate 0.2 --rate-limit 2000",
		Args:    args(cobra.NoArgs),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if cmd.Flag("addr").Changed {
				cfg.Addr = a.addr
			}
			if machineFile != "" {
				b, err := os.ReadFile(machineFile)
				if err != nil {
					return err
				}
				cfg.MachineSource = string(b)
			}
			cfg.Serial = !noSerial
			if !a.json() {
				cfg.Progress, cfg.ProgressTTY = a.stdout, isTerminal(a.stdout)
			}
			r, err := reportdemo.Run(a.ctx, cfg)
			if err != nil {
				return err
			}
			if a.json() {
				return a.printValue(reportDemoJSON(r))
			}
			fmt.Fprint(a.stdout, r.String())
			return nil
		}),
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Items, "items", reportdemo.DefaultItems, "reports to move")
	f.IntVar(&cfg.Workers, "workers", reportdemo.DefaultWorkers, "concurrent handlers")
	f.DurationVar(&cfg.API.Latency, "latency", 0, "latency of every API request")
	f.Float64Var(&cfg.API.FailureRate, "failure-rate", 0, "share of API requests that fail with HTTP 500 (0 to 1)")
	f.Float64Var(&cfg.API.ThrottleRate, "throttle-rate", 0, "share of API requests answered 429 with Retry-After: 1 whatever the rate (0 to 1)")
	f.Float64Var(&cfg.API.RateLimit, "rate-limit", 0, "API requests per second before HTTP 429 (0: no limit)")
	f.IntVar(&cfg.API.Burst, "burst", 0, "API rate limit burst (default: one second's worth)")
	f.Uint64Var(&cfg.API.Seed, "seed", 1, "seed of the API's failures")
	f.StringVar(&cfg.Machine, "machine", reportdemo.DefaultMachine, "machine to run (a variant of report)")
	f.StringVar(&machineFile, "machine-file", "", "define this machine file first (e.g. report with shorter delays)")
	f.StringVar(&cfg.Dir, "dir", "", "working directory, created when missing: staging, uploads, server file (default: a temporary one)")
	f.BoolVar(&noSerial, "no-serial", false, "skip the serial baseline")
	return cmd
}

// reportDemoJSON is a report-demo result for -o json: durations in
// seconds rather than Go's nanoseconds.
func reportDemoJSON(r reportdemo.Result) map[string]any {
	return map[string]any{
		"items": r.Items, "workers": r.Workers, "completed": r.Completed, "failed": r.Failed,
		"wallSeconds": r.Wall.Seconds(), "retries": r.Retries, "throttles": r.Throttles,
		"api": r.API, "upload": r.Upload,
		"serialWallSeconds": r.SerialWall.Seconds(), "serialCompleted": r.SerialCompleted,
		"serialFailed": r.SerialFailed, "serialApi": r.SerialAPI, "speedup": r.Speedup, "prefix": r.Prefix,
	}
}
