package sim

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

var (
	flagSeeds = flag.Int("sim.seeds", 0, "seeds TestSimulation runs; 0: 256 (the CI budget), 16 under the race detector, an eighth of that with -short")
	flagTicks = flag.Int("sim.ticks", 2000, "ticks of each seed with faults on")
	flagSeed  = flag.Uint64("sim.seed", 1, "first seed TestSimulation runs")
)

// ciSeeds is the CI budget of seeds: .ci/run runs it without the race
// detector (go test -run TestSimulation ./server/sim/ -args -sim.seeds=256).
const ciSeeds = 256

// seeds is how many seeds TestSimulation runs: -sim.seeds when given, else
// the CI budget, or 16 under the race detector, which slows the
// one-goroutine simulator about fivefold (256 seeds took 290 s on two busy
// cores) and has no concurrency of the simulator's to check; -short runs an
// eighth of either.
func seeds() int {
	n := *flagSeeds
	if n > 0 {
		return n
	}
	n = ciSeeds
	if raceEnabled {
		n = 16
	}
	if testing.Short() {
		n /= 8
	}
	return n
}

// TestSimulation runs seeds() seeds with faults on, each checked for
// linearizability, split over parallel subtests.
func TestSimulation(t *testing.T) {
	const groups = 8
	n := seeds()
	artifacts := t.TempDir()
	var mu sync.Mutex
	var total Result
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		t.Logf("%d seeds x %d ticks: %d calls (%d acknowledged, %d ambiguous), %d delivered, %d lost, %d duplicated, %d crashes (%d rebuilt from a snapshot and the log; %d snapshots), %d store faults, %d instances, %d changes, %d operations checked; devices: %d calls, %d commands (%d refused as stale), %d prints, %d power losses, %d operator signals acknowledged",
			n, *flagTicks, total.Calls, total.Acked, total.Ambiguous, total.Delivered, total.Lost, total.Duplicated,
			total.Crashes, total.Rebuilds, total.Snapshots, total.StoreFaults, total.Instances, total.Changes, total.Ops,
			total.DeviceCalls, total.Commands, total.Rejected, total.Prints, total.PowerLosses, total.Signals)
		// The budget must crash the server often: at least 200 times in
		// 256 seeds, and proportionally in 16 or more (about three per
		// seed is usual; fewer seeds vary too much to hold to it).
		if n >= 16 && total.Crashes*ciSeeds < 200*n {
			t.Errorf("%d simulated crashes in %d seeds; the CI budget needs at least 200 per %d seeds", total.Crashes, n, ciSeeds)
		}
		// About half the crashes lose the state file.
		if n >= 16 && total.Rebuilds*4 < total.Crashes {
			t.Errorf("%d of %d crashes rebuilt the state from the log; want about half", total.Rebuilds, total.Crashes)
		}
	})
	for g := range groups {
		t.Run(fmt.Sprintf("group%d", g), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			for i := g; i < n; i += groups {
				seed := *flagSeed + uint64(i)
				res, err := Run(Config{Seed: seed, Ticks: *flagTicks, Dir: dir, ArtifactDir: artifacts})
				if err != nil {
					keepArtifact(t, res)
					t.Fatal(err)
				}
				mu.Lock()
				total.Add(res)
				mu.Unlock()
			}
		})
	}
}

// keepArtifact copies a failing seed's visualization where it survives the
// test's temporary directories.
func keepArtifact(t *testing.T, res Result) {
	if res.Visualization == "" {
		return
	}
	b, err := os.ReadFile(res.Visualization)
	if err != nil {
		t.Log(err)
		return
	}
	f, err := os.CreateTemp("", fmt.Sprintf("dst-seed-%d-*.html", res.Seed))
	if err != nil {
		t.Log(err)
		return
	}
	f.Write(b)
	f.Close()
	t.Logf("linearizability visualization: %s", f.Name())
}

// TestSameSeedSameTrace runs one seed twice: the traces are the same byte
// for byte, and so are the hashes.
func TestSameSeedSameTrace(t *testing.T) {
	var traces [2]bytes.Buffer
	var hashes [2]string
	for i := range 2 {
		res, err := Run(Config{Seed: 42, Ticks: 1000, Dir: t.TempDir(), Trace: &traces[i]})
		if err != nil {
			t.Fatal(err)
		}
		hashes[i] = res.Hash
		t.Logf("run %d: trace hash %s, %d trace bytes, %d crashes", i, res.Hash, traces[i].Len(), res.Crashes)
	}
	for _, ev := range []string{"connects in", "carries out print", "operator signals", "customer orders"} {
		if !bytes.Contains(traces[0].Bytes(), []byte(ev)) {
			t.Errorf("the trace of seed 42 has no %q: device rounds did not run", ev)
		}
	}
	if hashes[0] != hashes[1] || !bytes.Equal(traces[0].Bytes(), traces[1].Bytes()) {
		t.Fatalf("seed 42 ran twice gave hashes %s and %s", hashes[0], hashes[1])
	}
	other, err := Run(Config{Seed: 43, Ticks: 1000, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if other.Hash == hashes[0] {
		t.Fatalf("seeds 42 and 43 gave the same trace hash %s", other.Hash)
	}
}

// catches runs the CI budget's seeds in order against a server built with
// bugs until one fails, and returns that failure.
func catches(t *testing.T, bugs Bugs) *Error {
	t.Helper()
	for i := range 256 {
		seed := uint64(1000 + i)
		_, err := Run(Config{Seed: seed, Ticks: *flagTicks, Dir: t.TempDir(), Bugs: bugs})
		var e *Error
		if errors.As(err, &e) {
			t.Logf("caught after %d seeds: %v", i+1, e)
			return e
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Fatalf("256 seeds x %d ticks did not catch %+v", *flagTicks, bugs)
	return nil
}

// TestCatchesSplitChangelog proves that the simulator catches a server
// that commits changelog entries in a transaction of their own.
func TestCatchesSplitChangelog(t *testing.T) {
	t.Parallel()
	catches(t, Bugs{SplitChangelog: true})
}

// TestCatchesStaleTokens proves that the simulator catches a server that
// lets a stale fencing token take effect.
func TestCatchesStaleTokens(t *testing.T) {
	t.Parallel()
	catches(t, Bugs{StaleTokens: true})
}

// TestCatchesForgetDeviceJob proves that the simulator catches a server
// that loses track of the job a printer holds.
func TestCatchesForgetDeviceJob(t *testing.T) {
	t.Parallel()
	e := catches(t, Bugs{ForgetDeviceJob: true})
	if !strings.Contains(e.Err.Error(), "printer") {
		t.Fatalf("caught by a check of something else than devices: %v", e)
	}
}
