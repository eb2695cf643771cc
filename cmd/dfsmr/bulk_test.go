package main

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
)

// flakyYAML fails an instance at its first error.
const flakyYAML = `id: flaky
nodes:
  fetch:
    start: true
    retry: {max_attempts: 1}
    transitions: {ok: build, error: fetch}
  build:
    retry: {max_attempts: 1}
    transitions: {ok: done, error: build}
  done: {final: true}
`

// tty is stdin that says it is a terminal, with a person's answer in it.
type tty struct{ *strings.Reader }

func (tty) IsTerminal() bool { return true }

// runTTY runs the CLI with answer typed on a terminal.
func (c *cli) runTTY(answer string, args ...string) result {
	c.t.Helper()
	var out, errb bytes.Buffer
	code := run(c.t.Context(), append([]string{"--addr", c.addr}, args...), tty{strings.NewReader(answer)}, &out, &errb)
	return result{out: out.String(), err: errb.String(), code: code}
}

// fail starts instance id of flaky and fails it in fetch.
func (c *cli) fail(id string) {
	c.t.Helper()
	c.ok("start", "flaky", "--id", id)
	r := decode(c.t, c.ok("ready", "--machine", "flaky", "-o", "json"), &pb.ReadyResponse{})
	if r.GetInstance().GetId() != id {
		c.t.Fatalf("leased %s, want %s", r.GetInstance().GetId(), id)
	}
	c.ok("transition", id, strconv.FormatUint(r.GetLease().GetToken(), 10), "error")
}

func TestRetryCommand(t *testing.T) {
	c := mustCLI(t)
	c.ok("define", c.file("flaky.yaml", flakyYAML))
	c.fail("f-1")

	out := c.ok("retry", "f-1", "--reason", "fixed the mirror")
	contains(t, out, "f-1", "fetch", "ready")
	c.fails(1, []string{"FAILED_PRECONDITION", "only an instance in dfsmr.failed can be retried"}, "retry", "f-1")
	h := c.ok("get", "f-1", "--history")
	contains(t, h, "retried", "dfsmr.failed -> fetch (dfsmr.retry)", `reason="fix`)

	// Bulk: counted, then confirmed with --yes.
	c.fail("f-1")
	c.fail("f-2")
	out = c.ok("retry", "--machine", "flaky", "--node", "fetch", "--dry-run")
	contains(t, out, "2 instances match; nothing was changed", "f-1", "f-2")
	c.fails(2, []string{"2 instances match: add --yes to retry them"}, "retry", "--machine", "flaky")
	out = c.ok("retry", "--machine", "flaky", "--yes")
	contains(t, out, "retried 2 of 2 matching instances")
	res := decode(t, c.ok("-o", "json", "retry", "--machine", "flaky", "--yes"), &pb.RetryInstancesResponse{})
	if res.GetMatched() != 0 || res.GetChanged() != 0 {
		t.Fatalf("nothing left to retry: %v", res)
	}

	c.fails(2, []string{"give an ID or filter flags, not both"}, "retry", "f-1", "--machine", "flaky")
	c.fails(2, []string{"give an ID, or --machine or --all"}, "retry")
	c.fails(1, []string{"INVALID_ARGUMENT", "node"}, "retry", "--node", "fetch", "--yes")
}

func TestCancelCommandByFilter(t *testing.T) {
	c := mustCLI(t)
	c.ok("define", c.file("job.yaml", jobYAML))
	c.ok("define", c.file("flaky.yaml", flakyYAML))
	for _, id := range []string{"j-1", "j-2", "j-3"} {
		c.ok("start", "job", "--id", id)
	}
	c.ok("start", "flaky", "--id", "other")

	out := c.ok("cancel", "--machine", "job", "--dry-run")
	contains(t, out, "3 instances match; nothing was changed", "j-1", "j-2", "j-3")
	// No terminal, no --yes: refused before anything changes.
	r := c.fails(2, []string{"3 instances match: add --yes to cancel them (stdin is not a terminal"}, "cancel", "--machine", "job")
	if r.out != "" {
		t.Fatalf("refusal printed %q", r.out)
	}
	// On a terminal: the count, the ids and a question.
	r = c.runTTY("n\n", "cancel", "--machine", "job", "--status", "ready")
	if r.code != 1 || !strings.Contains(r.err, "Cancel these 3 instances? [y/N]") || !strings.Contains(r.err, "not confirmed: nothing was changed") {
		t.Fatalf("declined: exit %d\n%s%s", r.code, r.out, r.err)
	}
	if out := c.ok("instances", "--machine", "job", "--status", "ready"); strings.Count(out, " ready ") != 3 {
		t.Fatalf("a declined cancel changed instances:\n%s", out)
	}
	r = c.runTTY("y\n", "cancel", "--machine", "job", "--reason", "wrong batch")
	if r.code != 0 || !strings.Contains(r.out, "cancelled 3 of 3 matching instances") {
		t.Fatalf("confirmed: exit %d\n%s%s", r.code, r.out, r.err)
	}
	contains(t, c.ok("get", "j-2", "--history"), "canceled", "wrong batch")
	contains(t, c.ok("get", "other"), "ready")

	res := decode(t, c.ok("-o", "json", "cancel", "--machine", "job", "--yes"), &pb.CancelInstancesResponse{})
	if res.GetMatched() != 0 {
		t.Fatalf("nothing left to cancel: %v", res)
	}
	c.fails(2, []string{"give an ID, or --machine, --status or --all"}, "cancel")
	c.fails(2, []string{"--status must be"}, "cancel", "--machine", "job", "--status", "bogus", "--yes")
	c.fails(1, []string{"INVALID_ARGUMENT", "FINAL instances cannot be cancelled"}, "cancel", "--machine", "job", "--status", "final", "--yes")
	out = c.ok("cancel", "--all", "--yes")
	contains(t, out, "cancelled 1 of 1 matching instances")
}
