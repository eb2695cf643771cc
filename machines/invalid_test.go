package machines

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dfsmr/dfsmr/server/fsm"
)

// invalidCases pairs every file in testdata/invalid with the exact text
// Compile must report for it: one "file:line:col: field: reason" per line.
// Each file exercises one check (a few exercise the variants of one check).
var invalidCases = []struct {
	file string
	want string
}{
	{"alias_bomb.yaml", `
alias_bomb.yaml:6:36: aliases expand to more than 10000 YAML nodes`},
	{"alias_cycle.yaml", `
alias_cycle.yaml:4:9: aliases expand to more than 10000 YAML nodes`},
	{"bad_breaker.yaml", `
bad_breaker.yaml:2:19: breaker.window: window 65 must be between 1 and 64
bad_breaker.yaml:2:37: breaker.min_outcomes: min_outcomes 0 must be between 1 and 64
bad_breaker.yaml:2:52: breaker.open_share: open_share 0 must be above 0 and at most 1
bad_breaker.yaml:2:68: breaker.close_share: close_share 2 must be between 0 and 1
bad_breaker.yaml:2:95: breaker.delay: delay 9000h is longer than the limit of 8784h
bad_breaker.yaml:2:102: breaker.slow: unknown field "slow"; want one of: window, min_outcomes, open_share, close_share, close_streak, delay`},
	{"bad_breaker_bounds.yaml", `
bad_breaker_bounds.yaml:3:11: breaker.window: window 10 is less than the default min_outcomes 20; set min_outcomes too
bad_breaker_bounds.yaml:4:15: breaker.open_share: open_share 0.2 is less than the default close_share 0.25; set close_share too`},
	{"bad_breaker_scalar.yaml", `
bad_breaker_scalar.yaml:2:10: breaker: must be off or a mapping with window, min_outcomes, open_share, close_share, close_streak, delay, got boolean false`},
	{"bad_duration.yaml", `
bad_duration.yaml:5:14: nodes.work.timeout: invalid duration "30 seconds": write a Go duration such as 30s, 1m30s or 2h
bad_duration.yaml:8:32: nodes.work.transitions.later.delay: a duration needs a unit: write 90s, 90m or 90h (only 0 may go without one)`},
	{"bad_enum.yaml", `
bad_enum.yaml:2:7: kind: unknown kind "robot"; want one of: workflow, device, job
bad_enum.yaml:3:19: upgrade_strategy: unknown upgrade strategy "migrate"; want one of: continue, upgrade, abort
bad_enum.yaml:7:22: nodes.work.retry.backoff: unknown backoff "quadratic"; want one of: fixed, linear, exponential`},
	{"bad_names.yaml", `
bad_names.yaml:1:5: id: invalid name "Bad.Id": must match ^[a-z][a-z0-9_-]{0,63}$
bad_names.yaml:3:3: nodes.9lives: invalid name "9lives": must match ^[A-Za-z][A-Za-z0-9_-]{0,63}$
bad_names.yaml:5:29: nodes.9lives.transitions.not ok: invalid name "not ok": must match ^[A-Za-z][A-Za-z0-9_-]{0,63}$`},
	{"bad_retry.yaml", `
bad_retry.yaml:5:27: nodes.work.retry.max_attempts: max_attempts -1 must not be negative (0 means unlimited)
bad_retry.yaml:5:51: nodes.work.retry.jitter: jitter 1.5 must be between 0 and 1
bad_retry.yaml:8:32: nodes.other.retry.max: max 5s is less than initial 10s`},
	{"bad_timeout.yaml", `
bad_timeout.yaml:5:27: nodes.work.timeout.percentile: percentile 100 must be between 0 and 100, exclusive
bad_timeout.yaml:5:47: nodes.work.timeout.max: max 5s is less than min 10s
bad_timeout.yaml:8:14: nodes.other.timeout.min: required in a percentile timeout
bad_timeout.yaml:8:14: nodes.other.timeout.max: required in a percentile timeout`},
	{"duplicate_key.yaml", `
duplicate_key.yaml:7:7: nodes.work.transitions.ok: duplicate key "ok" (first defined at line 6)`},
	{"duplicate_node.yaml", `
duplicate_node.yaml:7:3: nodes.work: duplicate key "work" (first defined at line 3)`},
	{"empty.yaml", `
empty.yaml: empty document: a definition needs at least id and nodes`},
	{"empty_nodes.yaml", `
empty_nodes.yaml:2:1: nodes: a machine needs at least one node`},
	{"final_with_transitions.yaml", `
final_with_transitions.yaml:8:5: nodes.done.timeout: a final node has no timeout
final_with_transitions.yaml:9:5: nodes.done.transitions: a final node has no transitions`},
	{"job_machine.yaml", `
job_machine.yaml:7:33: nodes.queued.transitions.go.delay: a job machine's transitions cannot be delayed: its instances are HELD by their device, never WAITING
job_machine.yaml:10:19: nodes.printing.transitions.again: a job machine's transition cannot lead back to its own node: a retry would make the job WAITING, and a job is HELD by its device`},
	{"limits.yaml", `
limits.yaml:5:14: nodes.work.timeout: timeout 721h is longer than the limit of 720h
limits.yaml:11:33: nodes.other.transitions.later.delay: delay 8785h is longer than the limit of 8784h
limits.yaml:12:3: nodes.aVeryLongNodeNameThatGoesOnAndOnAndOnAndOnAndOnAndOnPastTheLimit_x: name is 66 bytes, longer than the limit of 64`},
	{"merge_key.yaml", `
merge_key.yaml:2:1: base: unknown field "base"; want one of: id, kind, description, upgrade_strategy, nodes, reconcile, breaker
merge_key.yaml:5:5: nodes.work: merge keys (<<) are not supported; use an alias (*name) as a whole value instead`},
	{"missing_required.yaml", `
missing_required.yaml:1:1: id: required: the machine id
missing_required.yaml:1:1: nodes: required: the machine's nodes`},
	{"missing_target.yaml", `
missing_target.yaml:7:20: nodes.work.transitions.upload.to: unknown node "uploadable"`},
	{"multiple_documents.yaml", `
multiple_documents.yaml:5:1: more than one YAML document: a definition is exactly one document`},
	{"negative_duration.yaml", `
negative_duration.yaml:7:32: nodes.work.transitions.again.delay: duration -5s must not be negative`},
	{"no_final.yaml", `
no_final.yaml:2:1: nodes: no final node: at least one node needs final: true`},
	{"no_path_to_final.yaml", `
no_path_to_final.yaml:6:3: nodes.loop: no path to a final node`},
	{"no_start.yaml", `
no_start.yaml:2:1: nodes: no start node: exactly one node needs start: true`},
	{"not_a_mapping.yaml", `
not_a_mapping.yaml:1:1: must be a mapping, got a sequence`},
	{"reconcile_device.yaml", `
reconcile_device.yaml:10:23: nodes.gone.blocking: a final node cannot be blocking: the device never leaves it
reconcile_device.yaml:15:7: reconcile.rules[1]: a second rule for device node "ready" and job node "queued" (the first is rule 0)
reconcile_device.yaml:16:16: reconcile.rules[2].device: unknown node "sleeping" of this machine
reconcile_device.yaml:17:16: reconcile.rules[3].device: node "gone" is final: a device there is gone
reconcile_device.yaml:18:47: reconcile.rules[4].command: node "ready" has no transition "explode" (it has [print])
reconcile_device.yaml:19:50: reconcile.rules[5].command: node "printing" is not blocking: commands only go to a device waiting for one (mark the node blocking: true)
reconcile_device.yaml:20:39: reconcile.rules[6].notice: a notice is told when the rule's transition is recorded: give the rule a transition
reconcile_device.yaml:21:7: reconcile.rules[7].device: required: a node of this device machine
reconcile_device.yaml:22:40: reconcile.rules[8].colour: unknown field "colour"; want one of: device, job, command, transition, notice, wait, forgotten, forgotten_notice`},
	{"reconcile_jobs.yaml", `
reconcile_jobs.yaml:10:28: reconcile.rules[0].job: unknown node "queueing" of job machine "print_job"
reconcile_jobs.yaml:11:28: reconcile.rules[1].job: node "done" of job machine "print_job" is final: a finished job is no longer the device's
reconcile_jobs.yaml:12:53: reconcile.rules[2].transition: node "printing" of job machine "print_job" has no transition "vanish" (it has [finished failed cancel])
reconcile_jobs.yaml:13:63: reconcile.rules[3].transition: transition "retrieved" of job machine "print_job" is a signal: operators send it, the device's round does not
reconcile_jobs.yaml:14:7: reconcile.rules[4]: a rule for job "none" (a device with no job) can only wait: it has no job to move nor to send a command about
reconcile_jobs.yaml:15:58: reconcile.rules[5].wait: a wait reason explains a rule that does nothing: drop it, or the rule's command and transition
reconcile_jobs.yaml:16:36: reconcile.rules[6].forgotten: forgotten replaces the rule's command or transition when the device dropped the job: give the rule one
reconcile_jobs.yaml:16:47: reconcile.rules[6].forgotten: transition "recovered" of job machine "print_job" is a signal: operators send it, the device's round does not
reconcile_jobs.yaml:17:39: reconcile.rules[7].forgotten: forgotten replaces the rule's command or transition when the device dropped the job: give the rule one`},
	{"reconcile_kinds.yaml", `
reconcile_kinds.yaml:5:5: nodes.work.blocking: only a device machine (kind: device) has blocking nodes
reconcile_kinds.yaml:8:1: reconcile: only a device machine (kind: device) has a reconcile table`},
	{"reconcile_not_jobs.yaml", `
reconcile_not_jobs.yaml:7:9: reconcile.jobs: machine "report" is of kind workflow; the jobs of a device need kind: job
reconcile_not_jobs.yaml:8:3: reconcile.rules: a reconcile table needs at least one rule`},
	{"reserved_name.yaml", `
reserved_name.yaml:7:7: nodes.work.transitions.dfsmr.timeout: reserved: names under dfsmr. belong to the system
reserved_name.yaml:8:13: nodes.work.transitions.fail: reserved: names under dfsmr. belong to the system
reserved_name.yaml:10:3: nodes.dfsmr.upgraded: reserved: names under dfsmr. belong to the system`},
	{"start_final.yaml", `
start_final.yaml:3:10: nodes.done.start: the start node cannot be final`},
	{"syntax_error.yaml", `
syntax_error.yaml:2: invalid YAML: did not find expected ',' or '}'`},
	{"too_many_aliases.yaml", `
too_many_aliases.yaml:102:12: too many aliases: more than 32`},
	{"two_starts.yaml", `
two_starts.yaml:7:5: nodes.two.start: a second start node: "one" (line 4) is already the start node`},
	{"unknown_field.yaml", `
unknown_field.yaml:5:5: nodes.work.timout: unknown field "timout"; want one of: start, final, timeout, retry, transitions, blocking`},
	{"unreachable.yaml", `
unreachable.yaml:6:3: nodes.orphan: unreachable: no path from the start node "work"`},
	{"wrong_type.yaml", `
wrong_type.yaml:4:12: nodes.work.start: must be true or false, got string "yes please"
wrong_type.yaml:5:27: nodes.work.retry.max_attempts: must be an integer, got number 2.5
wrong_type.yaml:5:40: nodes.work.retry.jitter: must be a finite number, got string "lots"
wrong_type.yaml:6:18: nodes.work.transitions: must be a mapping, got a sequence
wrong_type.yaml:7:17: nodes.done.final: must be true or false, got string "yes"
wrong_type.yaml:8:10: nodes.other: must be a mapping, got a sequence`},
}

// bundledResolver resolves machine ids to the bundled definitions, so that
// the reconcile tables of the invalid files are checked against print_job
// and report.
func bundledResolver(t *testing.T) Resolver {
	t.Helper()
	byID := map[string]*fsm.Machine{}
	for _, src := range Bundled() {
		m, err := Compile(src.File, src.Data)
		if err != nil {
			t.Fatal(err)
		}
		byID[m.ID] = m
	}
	return func(id string) (*fsm.Machine, bool) {
		m, ok := byID[id]
		return m, ok
	}
}

func testdataInvalid() ([]string, error) {
	return filepath.Glob(filepath.Join("testdata", "invalid", "*.yaml"))
}

func TestInvalid(t *testing.T) {
	for _, tt := range invalidCases {
		t.Run(tt.file, func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join("testdata", "invalid", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			m, err := CompileWith(tt.file, src, bundledResolver(t))
			if err == nil {
				t.Fatalf("Compile succeeded: %+v", m)
			}
			if m != nil {
				t.Errorf("Compile returned a machine with its error")
			}
			if got, want := err.Error(), strings.TrimPrefix(tt.want, "\n"); got != want {
				t.Errorf("errors:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// TestInvalidGenerated covers the limits whose inputs are too big to commit.
func TestInvalidGenerated(t *testing.T) {
	tooManyNodes := func() string {
		var b strings.Builder
		b.WriteString("id: big\nnodes:\n  a: {start: true, transitions: {ok: z}}\n  z: {final: true}\n")
		for i := range MaxNodes - 1 {
			fmt.Fprintf(&b, "  n%d: {transitions: {ok: z}}\n", i)
		}
		return b.String()
	}
	tests := []struct {
		name string
		src  string
		want string
	}{
		{
			"oversize",
			"id: big\n#" + strings.Repeat("x", MaxSourceBytes),
			fmt.Sprintf("oversize: source is %d bytes, more than the limit of %d", MaxSourceBytes+9, MaxSourceBytes),
		},
		{
			"too_many_nodes",
			tooManyNodes(),
			// Line 3 + MaxNodes: the first node past the limit.
			fmt.Sprintf("too_many_nodes:%d:3: nodes.n254: too many nodes: more than %d", 3+MaxNodes, MaxNodes),
		},
		{
			"too_many_transitions",
			manyTransitions(MaxTransitionsPerNode + 1),
			fmt.Sprintf("too_many_transitions:%d:7: nodes.a.transitions.t%d: too many transitions: more than %d per node", 6+MaxTransitionsPerNode, MaxTransitionsPerNode, MaxTransitionsPerNode),
		},
		{
			"long_description",
			"id: d\nnodes: {a: {start: true, transitions: {ok: b}}, b: {final: true}}\ndescription: " + strings.Repeat("x", MaxDescriptionBytes+1) + "\n",
			fmt.Sprintf("long_description:3:14: description: description is %d bytes, longer than the limit of %d", MaxDescriptionBytes+1, MaxDescriptionBytes),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.name, []byte(tt.src))
			if err == nil {
				t.Fatal("Compile succeeded")
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}
