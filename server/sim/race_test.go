//go:build race

package sim

// raceEnabled: the race detector slows the simulator about fivefold, and
// the simulator runs on one goroutine, so TestSimulation runs few seeds
// under it; .ci/run runs the full budget without -race as a step of its own.
const raceEnabled = true
