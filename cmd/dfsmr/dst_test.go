package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// TestDST runs the simulation from the command line: one seed twice gives
// the same trace hash, and a seed that fails under a deliberate bug exits
// 1 and prints the command that replays it.
func TestDST(t *testing.T) {
	hashRE := regexp.MustCompile(`trace hash ([0-9a-f]{64})`)
	var hashes []string
	for range 2 {
		var out, errb bytes.Buffer
		if code := run(t.Context(), []string{"dst", "--seed", "9", "--ticks", "300", "--dir", t.TempDir()}, strings.NewReader(""), &out, &errb); code != exitOK {
			t.Fatalf("dst: exit %d: %s%s", code, out.String(), errb.String())
		}
		m := hashRE.FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("no trace hash in %q", out.String())
		}
		hashes = append(hashes, m[1])
	}
	if hashes[0] != hashes[1] {
		t.Fatalf("seed 9 printed trace hashes %s and %s", hashes[0], hashes[1])
	}

	var out, errb bytes.Buffer
	code := run(t.Context(), []string{"dst", "--seed", "1", "--ticks", "300", "--bug", "stale-tokens", "--dir", t.TempDir()}, strings.NewReader(""), &out, &errb)
	if code != exitFailed {
		t.Fatalf("dst --bug stale-tokens: exit %d, want %d: %s", code, exitFailed, out.String())
	}
	contains(t, out.String(), "replay: go run ./cmd/dfsmr dst --seed 1 --ticks 300 --bug stale-tokens")

	if code := run(t.Context(), []string{"dst", "--seeds", "2", "--trace"}, strings.NewReader(""), &out, &errb); code != exitUsage {
		t.Fatalf("dst --seeds 2 --trace: exit %d, want %d", code, exitUsage)
	}
}
