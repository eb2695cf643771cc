package machines

import (
	"testing"
	"time"
)

// TestRetryInitialRules: initial 0s retries at once, as documented; an
// initial above the default max without a max raises the max to it.
func TestRetryInitialRules(t *testing.T) {
	const src = `id: r
nodes:
  now:
    start: true
    retry: {initial: 0s}
    transitions: {error: now, ok: slow}
  slow:
    retry: {initial: 10m, backoff: exponential}
    transitions: {error: slow, ok: done}
  done: {final: true}
`
	m, err := Compile("r.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if r := m.Node("now").Retry; r.Initial != 0 || r.Delay(2, 0.5) != 0 || r.Delay(5, 0.9) != 0 {
		t.Errorf("initial 0s: %+v, delay %v; want retries at once", r, r.Delay(2, 0.5))
	}
	if r := m.Node("slow").Retry; r.Initial != 10*time.Minute || r.Max != 10*time.Minute {
		t.Errorf("initial 10m without max: %+v; want max raised to 10m", r)
	}
}
