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

// TestBenchCluster runs a mode on one server and then on a cluster of two:
// two JSON lines, nodes 1 and 2, the second with its ratio to the first.
func TestBenchCluster(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(t.Context(), []string{"bench", "--instances", "20", "--workers", "4", "--baseline", "50ms", "--cluster", "2", "--via", "leader", "-o", "json"}, nil, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 JSON lines, got:\n%s", out.String())
	}
	var one map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &one); err != nil {
		t.Fatal(err)
	}
	two := lastJSON(t, out.String())
	if one["nodes"] != 1.0 || one["vsOneNode"] != nil || two["nodes"] != 2.0 || two["via"] != "leader" || two["completed"] != 20.0 {
		t.Fatalf("lines %v and %v", one, two)
	}
	if v, _ := two["vsOneNode"].(float64); v <= 0 {
		t.Fatalf("vsOneNode %v", two["vsOneNode"])
	}
	c := mustCLI(t)
	c.fails(exitUsage, []string{"--cluster"}, "bench", "--cluster", "1")
	c.fails(exitUsage, []string{"--cluster", "--addr"}, "bench", "--cluster", "3")
	c.fails(exitUsage, []string{"via"}, "bench", "--via", "followers")
}
