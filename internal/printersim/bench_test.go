package printersim_test

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/internal/printersim"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/store"
)

// The idle fleet: the benchmark runs printers in a child process (this
// test binary, told so by these variables), so that the server's process
// holds only the server when its memory is measured.
var (
	fleetSize   = flag.Int("fleet.size", 1000, "number of printers in BenchmarkPrinters")
	fleetPrint  = flag.Duration("fleet.print", 20*time.Millisecond, "average print time in BenchmarkPrinters")
	fleetReport = flag.Duration("fleet.report", 0, "status report interval of BenchmarkPrinters' printers (0: they report changes only)")
)

const (
	envFleetAddr  = "DFSMR_PRINTERSIM_FLEET_ADDR"
	envFleetCount = "DFSMR_PRINTERSIM_FLEET_COUNT"
	fleetReady    = "connected"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(envFleetAddr); addr != "" {
		n, err := strconv.Atoi(os.Getenv(envFleetCount))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if err := idleFleet(addr, n, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// idleFleet connects n printers, each over its own connection, writes
// fleetReady once the server answered every registration, and keeps them
// connected until in ends.
func idleFleet(addr string, n int, in io.Reader, out io.Writer) error {
	conns, err := dialEach(addr, n)
	if err != nil {
		return err
	}
	defer closeAll(conns)
	ctx, cancel := context.WithCancel(context.Background())
	var connected atomic.Int64
	ready := make(chan struct{})
	fleet := printersim.NewFleet("idle-", n, printersim.Profile{}, 1)
	links := func(i int) printersim.Link {
		return printersim.Link{Client: conns[i], Pool: "idle",
			OnEvent: func(ev printersim.Event) {
				if ev.Kind == printersim.EventConnected && connected.Add(1) == int64(n) {
					close(ready)
				}
			}}
	}
	done := make(chan error, 1)
	go func() { done <- fleet.Run(ctx, printersim.Link{}, links) }()
	go func() {
		<-ready
		fmt.Fprintln(out, fleetReady)
	}()
	io.Copy(io.Discard, in)
	cancel()
	return <-done
}

func dialEach(addr string, n int) ([]*client.Client, error) {
	conns := make([]*client.Client, 0, n)
	for range n {
		c, err := client.Dial(addr)
		if err != nil {
			closeAll(conns)
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

func closeAll(conns []*client.Client) {
	for _, c := range conns {
		c.Close()
	}
}

// serverCostPerPrinter connects n idle printers from a child process and
// returns the server's live heap, goroutine stacks and goroutines per
// connected printer.
func serverCostPerPrinter(b *testing.B, addr string, n int) (heap, stack, goroutines float64) {
	b.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envFleetAddr+"="+addr, envFleetCount+"="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != fleetReady+"\n" {
		b.Fatalf("idle fleet: %q, %v", line, err)
	}
	// Twice: buffers the connections used for their first round and gave
	// back to pools are freed by the second collection (an idle farm's
	// steady state).
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	g1 := runtime.NumGoroutine()
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
	return per(after.HeapAlloc, before.HeapAlloc), per(after.StackInuse, before.StackInuse), float64(g1-g0) / float64(n)
}

// cycles runs n printers, each over its own connection, through print
// cycles of short prints (operators retrieve at once), feeding their pool
// so that no queue runs dry. It calls body once they all printed a first
// part, with a channel that receives each cleared bed, and returns the
// latencies of the rounds the printers started after that.
func cycles(b *testing.B, addr string, n int, body func(cleared <-chan struct{})) []time.Duration {
	b.Helper()
	conns, err := dialEach(addr, n)
	if err != nil {
		b.Fatal(err)
	}
	defer closeAll(conns)
	ctl, err := client.Dial(addr)
	if err != nil {
		b.Fatal(err)
	}
	defer ctl.Close()

	pool := fmt.Sprintf("bench-%d", n)
	var (
		mu        sync.Mutex
		lat       []time.Duration
		connected atomic.Int64
		clearedN  atomic.Int64
	)
	cleared := make(chan struct{}, 1<<20)
	allIn := make(chan struct{})
	fleet := printersim.NewFleet(pool+"-", n, printersim.Profile{PrintTime: *fleetPrint}, 1)
	links := func(i int) printersim.Link {
		return printersim.Link{Client: conns[i], Pool: pool, ReportEvery: *fleetReport,
			OnEvent: func(ev printersim.Event) {
				switch ev.Kind {
				case printersim.EventConnected:
					if connected.Add(1) == int64(n) {
						close(allIn)
					}
				case printersim.EventCleared:
					clearedN.Add(1)
					cleared <- struct{}{}
				}
			},
			OnRound: func(d time.Duration) {
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}}
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { fleet.Run(ctx, printersim.Link{}, links) })
	op := &printersim.Operator{Client: ctl, Devices: fleet.IDs(), Rand: rand.New(rand.NewPCG(1, 2))}
	wg.Go(func() { op.Run(ctx) })
	<-allIn
	// Keep about two jobs per printer queued.
	wg.Go(func() {
		devices := ctl.Devices
		submitted := int64(0)
		for o := 1; ctx.Err() == nil; o++ {
			if submitted-clearedN.Load() > int64(2*n) {
				if !sleepCtx(ctx, 5*time.Millisecond) {
					return
				}
				continue
			}
			q := min(n, 1000)
			if _, err := devices.SubmitOrder(ctx, &pb.SubmitOrderRequest{OrderId: fmt.Sprintf("%s-o%d", pool, o),
				Model: "cube", Quantity: uint32(q), Pool: pool}); err != nil {
				if ctx.Err() == nil {
					b.Error(err)
				}
				return
			}
			submitted += int64(q)
		}
	})
	for range n {
		<-cleared
	}
	mu.Lock()
	lat = lat[:0]
	mu.Unlock()
	body(cleared)
	mu.Lock()
	out := slices.Clone(lat)
	mu.Unlock()
	stop()
	wg.Wait()
	return out
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// BenchmarkPrinters runs 1,000 (-fleet.size) simulated printers, each
// over its own connection, through print cycles of 20 ms prints
// (-fleet.print, ±50%) against one server (real gRPC on loopback, a real
// bbolt file); an op is one part printed, retrieved and cleared. With
// -fleet.report the printers also send a status report (their progress)
// at that interval, as real printers do: rounds that decide nothing. It reports rounds per second (report -> answer, as
// the printers see them), the rounds' p50 and p99 latencies, and the
// server's memory per connected printer (live heap and goroutine stacks,
// measured with the printers in a child process). The baseline, measured
// in the same run, is one printer cycling alone: its rounds/s is bound by
// its prints, its latency is that of an idle server.
func BenchmarkPrinters(b *testing.B) {
	n := *fleetSize
	dir := b.TempDir()
	s := mustServer(b, "127.0.0.1:0", filepath.Join(dir, "dfsmr.db"), nil)

	heap, stack, gs := serverCostPerPrinter(b, s.Addr(), n)

	var baseTook time.Duration
	base := cycles(b, s.Addr(), 1, func(cleared <-chan struct{}) {
		start := time.Now()
		for range 50 {
			<-cleared
		}
		baseTook = time.Since(start)
	})
	baseRate := float64(len(base)) / baseTook.Seconds()
	slices.Sort(base)

	var (
		elapsed         time.Duration
		before, after   store.Stats
		dBefore, dAfter engine.DeviceStats
	)
	lat := cycles(b, s.Addr(), n, func(cleared <-chan struct{}) {
		before, dBefore = s.StoreStats(), s.Engine().DeviceStats()
		for b.Loop() {
			<-cleared
		}
		elapsed = b.Elapsed()
		after, dAfter = s.StoreStats(), s.Engine().DeviceStats()
	})
	slices.Sort(lat)
	rate := float64(len(lat)) / elapsed.Seconds()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	perRound := func(a, b uint64) float64 { return float64(a-b) / float64(max(len(lat), 1)) }
	b.ReportMetric(rate, "rounds/s")
	b.ReportMetric(ms(percentile(lat, 0.50)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
	// Every store update (the rounds that decide, the operators' signals,
	// the orders, the flushes of live fields) and every commit, per round.
	b.ReportMetric(perRound(after.Ops, before.Ops), "writes/round")
	b.ReportMetric(perRound(after.Commits, before.Commits), "commits/round")
	quiet, written := dAfter.QuietRounds-dBefore.QuietRounds, dAfter.WrittenRounds-dBefore.WrittenRounds
	b.ReportMetric(float64(quiet)/float64(max(quiet+written, 1)), "quiet-share")
	b.ReportMetric(heap, "heap-B/printer")
	b.ReportMetric(stack, "stack-B/printer")
	b.ReportMetric(heap+stack, "mem-B/printer")
	b.ReportMetric(gs, "goroutines/printer")
	b.ReportMetric(baseRate, "base-rounds/s")
	b.ReportMetric(ms(percentile(base, 0.50)), "base-p50-ms")
	b.ReportMetric(ms(percentile(base, 0.99)), "base-p99-ms")
	b.ReportMetric(rate/baseRate, "x-rounds-vs-base")
}
