package sim

import (
	"flag"
	"testing"
)

var (
	flagSeeds = flag.Int("sim.seeds", 256, "seeds TestSimulation runs")
	flagTicks = flag.Int("sim.ticks", 2000, "ticks of each seed with faults on")
	flagSeed  = flag.Uint64("sim.seed", 1, "first seed TestSimulation runs")
)

func TestOneSeed(t *testing.T) {
	res, err := Run(Config{Seed: *flagSeed, Ticks: *flagTicks, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
}
