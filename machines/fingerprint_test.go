package machines

import (
	"strings"
	"testing"
)

// reportRewritten is report.yaml written differently: other key and node
// order, flow and block styles swapped, no anchors, defaults spelled out
// or left out, durations in other units. It is the same machine.
const reportRewritten = `
# The same report machine, written by someone else.
upgrade_strategy: continue
kind: workflow
nodes:
  failed:
    final: true
  completed: {final: true, start: false}
  uploadable:
    transitions:
      give_up: failed
      throttled:
        delay: 30000ms
        to: uploadable
        signal: false
      error: uploadable
      ok: completed
    retry: {jitter: 0.2, max: 300s, initial: 1s, backoff: exponential, max_attempts: 8}
    timeout:
      max: 10m
      min: 5m
      percentile: 95.0
  downloadable:
    transitions: {give_up: failed, throttled: {to: downloadable, delay: 0.5m}, error: downloadable, ok: uploadable}
    retry: {max_attempts: 8, jitter: 0.2, max: 5m}   # backoff and initial are the defaults
    timeout: "600s"
    start: true
description: "Download one item, then upload it; retry each step on its own."
id: report
`

func TestFingerprintSameMachine(t *testing.T) {
	orig := bundledMachine(t, "report.yaml")
	rewritten := mustCompile(t, "rewritten.yaml", reportRewritten)
	if a, b := Fingerprint(orig), Fingerprint(rewritten); a != b {
		t.Errorf("rewritten report has fingerprint %s, want the original's %s", b, a)
	}
	orig.Version = 42
	if a, b := Fingerprint(orig), Fingerprint(rewritten); a != b {
		t.Errorf("Version changed the fingerprint: %s vs %s", a, b)
	}
}

func TestFingerprintChanges(t *testing.T) {
	var src string
	for _, s := range Bundled() {
		if s.File == "report.yaml" {
			src = string(s.Data)
		}
	}
	base := Fingerprint(mustCompile(t, "report.yaml", src))
	seen := map[string]string{base: "original"}
	tests := []struct{ name, old, new string }{
		{"id", "id: report", "id: report2"},
		{"kind", "id: report", "id: report\nkind: device"},
		{"upgrade strategy", "upgrade_strategy: continue", "upgrade_strategy: abort"},
		{"description", "description: Download", "description: download"},
		{"delay", "{to: downloadable, delay: 30s}", "{to: downloadable, delay: 31s}"},
		{"signal", "{to: downloadable, delay: 30s}", "{to: downloadable, delay: 30s, signal: true}"},
		{"target", "give_up: failed         # an", "give_up: completed         # an"},
		{"transition name", "ok: uploadable", "okay: uploadable"},
		{"jitter", "jitter: 0.2", "jitter: 0.25"},
		{"max attempts", "max_attempts: 8", "max_attempts: 0"},
		{"backoff", "backoff: exponential", "backoff: linear"},
		{"retry max", "max: 5m", "max: 6m"},
		{"fixed timeout", "timeout: 10m", "timeout: 0"},
		{"default timeout", "timeout: 10m\n", ""},
		{"percentile", "percentile: 95", "percentile: 90"},
		{"percentile min", "min: 5m", "min: 6m"},
		{"start node", "start: true", "start: false"},
	}
	for _, tt := range tests {
		if !strings.Contains(src, tt.old) {
			t.Fatalf("%s: report.yaml does not contain %q", tt.name, tt.old)
		}
		changed := strings.Replace(src, tt.old, tt.new, 1)
		if tt.name == "start node" {
			changed = strings.Replace(changed, "  uploadable:\n", "  uploadable:\n    start: true\n", 1)
			// uploadable is now the start; downloadable must stay reachable.
			changed = strings.Replace(changed, "ok: completed", "ok: completed\n      back: downloadable", 1)
		}
		fp := Fingerprint(mustCompile(t, tt.name, changed))
		if prev, dup := seen[fp]; dup {
			t.Errorf("%s: same fingerprint as %s", tt.name, prev)
		}
		seen[fp] = tt.name
	}
}

// TestFingerprintDevice: a device machine's blocking nodes and reconcile
// rules are content; the order of rules is not.
func TestFingerprintDevice(t *testing.T) {
	var src string
	for _, s := range Bundled() {
		if s.File == "printer.yaml" {
			src = string(s.Data)
		}
	}
	base := Fingerprint(mustCompile(t, "printer.yaml", src))
	reordered := strings.Replace(src,
		"    - {device: ready, job: queued, command: print, transition: dispatch}\n", "", 1) +
		"    - {device: ready, job: queued, command: print, transition: dispatch}\n"
	if fp := Fingerprint(mustCompile(t, "reordered", reordered)); fp != base {
		t.Errorf("moving a rule changed the fingerprint")
	}
	seen := map[string]string{base: "original"}
	for _, tt := range []struct{ name, old, new string }{
		{"blocking", "    start: true\n    blocking: true\n", "    start: true\n"},
		{"jobs", "jobs: print_job", "jobs: other_job"},
		{"rule job", "{device: error, job: recovering, command: recover}", "{device: error, job: failing, command: recover}"},
		{"rule command", "job: printing\n      command: print\n", "job: printing\n      command: retire\n"},
		{"forgotten", "forgotten: failed\n", "forgotten: finished\n"},
		{"forgotten notice", "it is not printed again;", "it is not printed;"},
		{"wait", "wait: \"idle; the next order wakes it\"", "wait: \"idle\""},
		{"rule transition", "transition: reset}", "transition: scrap}"},
		{"notice", "bed, then signal retrieved", "bed, then signal"},
	} {
		if !strings.Contains(src, tt.old) {
			t.Fatalf("%s: printer.yaml does not contain %q", tt.name, tt.old)
		}
		changed := strings.Replace(src, tt.old, tt.new, 1)
		if tt.name == "blocking" {
			// A command needs a blocking node: drop the rules that send
			// one from ready.
			changed = strings.Replace(changed, "command: print, ", "", 1)
			changed = strings.Replace(changed, "      command: print\n      forgotten: failed\n", "      forgotten: failed\n      transition: failed\n", 1)
		}
		fp := Fingerprint(mustCompile(t, tt.name, changed))
		if prev, dup := seen[fp]; dup {
			t.Errorf("%s: same fingerprint as %s", tt.name, prev)
		}
		seen[fp] = tt.name
	}
}

func TestFingerprintNil(t *testing.T) {
	// Hand-built machines can be incomplete; Fingerprint must not panic.
	if Fingerprint(nil) == "" {
		t.Error("Fingerprint(nil) is empty")
	}
}

// TestFingerprintBreaker: every breaker setting is content; a block that
// spells out the defaults is the same machine as none.
func TestFingerprintBreaker(t *testing.T) {
	const base = "id: b\nnodes: {a: {start: true, transitions: {ok: z}}, z: {final: true}}\n"
	plain := Fingerprint(mustCompile(t, "plain", base))
	defaults := Fingerprint(mustCompile(t, "defaults", base+
		"breaker: {window: 50, min_outcomes: 20, open_share: 0.5, close_share: 0.25, close_streak: 5, delay: 30s}\n"))
	if defaults != plain {
		t.Error("a breaker block of the defaults changed the fingerprint")
	}
	seen := map[string]string{plain: "no breaker block"}
	for _, block := range []string{
		"off", "{window: 40}", "{min_outcomes: 10}", "{open_share: 0.8}", "{close_share: 0.1}",
		"{close_streak: 2}", "{delay: 1s}", "{delay: 0}",
	} {
		fp := Fingerprint(mustCompile(t, block, base+"breaker: "+block+"\n"))
		if prev, dup := seen[fp]; dup {
			t.Errorf("breaker: %s has the fingerprint of %s", block, prev)
		}
		seen[fp] = block
	}
}
