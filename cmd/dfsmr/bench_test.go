package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// lastJSON parses the last line of out as the bench's JSON summary.
func lastJSON(t *testing.T, out string) map[string]any {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &m); err != nil {
		t.Fatalf("last line is not JSON: %v\n%s", err, out)
	}
	for _, k := range []string{"stepsPerS", "baselinePairsPerS", "ratio", "p50Ms", "p99Ms"} {
		if _, ok := m[k].(float64); !ok {
			t.Fatalf("JSON has no number %q: %v", k, m)
		}
	}
	return m
}

func TestBenchInProcess(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(t.Context(), []string{"bench", "--instances", "60", "--workers", "4", "--baseline", "50ms", "--mode", "all", "--dir", t.TempDir()}, nil, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	m := lastJSON(t, out.String())
	if m["mode"] != "refill" || m["completed"] != 60.0 || m["commitsPerS"].(float64) <= 0 {
		t.Fatalf("summary %v", m)
	}
	contains(t, out.String(), "mode              per-call", "durable steps/s", "fsyncs/s")
}

func TestBenchAgainstServer(t *testing.T) {
	c := mustCLI(t)
	m := lastJSON(t, c.ok("bench", "--instances", "40", "--workers", "4", "--baseline", "50ms"))
	// The store is in another process's reach: no commit figures.
	if m["mode"] != "per-call" || m["completed"] != 40.0 || m["commitsPerS"] != 0.0 {
		t.Fatalf("summary %v", m)
	}
	c.fails(exitUsage, []string{"--mode"}, "bench", "--mode", "fast")
}
