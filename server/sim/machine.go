package sim

import (
	"fmt"

	"github.com/dfsmr/dfsmr/machines"
	"github.com/dfsmr/dfsmr/server/fsm"
)

// machineID is the machine every simulated instance runs.
const machineID = "sim"

// variants are the upgrade strategies of the versions the simulator may
// define. Every variant has the same nodes and transitions (so the
// sequential model does not depend on the version an instance runs); they
// differ in content, so each is a version of its own, and in what a new
// version does to running instances.
var variants = []string{"continue", "upgrade", "continue", "upgrade", "abort", "upgrade"}

// machineSource returns the definition of variant v.
//
// Every leased node has a timeout, so a lease a worker lost is re-offered:
// with the faults stopped, every instance can finish. Node a retries with
// a fixed backoff, node b with a jittered exponential one; later and park
// are deferrals; poke and finish are signals.
func machineSource(v int) []byte {
	return fmt.Appendf(nil, `id: %s
description: simulated job, variant %d
upgrade_strategy: %s
nodes:
  a:
    start: true
    timeout: 10s
    retry: {max_attempts: 3, backoff: fixed, initial: 2s}
    transitions:
      ok: b
      error: a
      later: {to: a, delay: 5s}
      give_up: failed
      poke: {to: b, signal: true}
  b:
    timeout: 8s
    retry: {max_attempts: 4, backoff: exponential, initial: 1s, max: 10s, jitter: 0.5}
    transitions:
      ok: done
      error: b
      back: a
      park: {to: b, delay: 3s}
      finish: {to: done, signal: true}
  done: {final: true}
  failed: {final: true}
`, machineID, v, variants[v])
}

// specMachine is the compiled definition the model and the checker read:
// the nodes, transitions and retry policies all variants share.
var specMachine = func() *fsm.Machine {
	m, err := machines.Compile(machineID+".yaml", machineSource(0))
	if err != nil {
		panic(err)
	}
	return m
}()

// workerTransitions and signals are the names the simulated actors choose
// from; each is legal in some node and illegal in others.
var (
	workerTransitions = []string{"ok", "ok", "ok", "error", "later", "give_up", "back", "park", "poke"}
	signalNames       = []string{"poke", "finish", "ok"}
)
