package main

import (
	"slices"
	"strings"
	"testing"
)

// completions runs cobra's hidden __complete command, as the shell scripts
// do, and returns the suggestions and the directive line.
func (c *cli) completions(args ...string) ([]string, string) {
	c.t.Helper()
	out := c.ok(append([]string{"__complete"}, args...)...)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	return lines[:len(lines)-1], lines[len(lines)-1]
}

// TestCompletionAsksTheServer: machine ids complete the arguments of
// start, machine and graph and the --machine flags; instance ids complete
// the arguments of get, transition, signal, cancel and the others.
func TestCompletionAsksTheServer(t *testing.T) {
	c := mustCLI(t)
	c.ok("define", c.file("job.yaml", jobYAML))
	c.ok("start", "job", "--id", "j1")
	c.ok("start", "job", "--id", "j2")
	c.ok("start", "report", "--id", "r1")

	for _, args := range [][]string{
		{"start", ""}, {"machine", ""}, {"graph", ""}, {"instances", "--machine", ""}, {"ready", "--machine", ""}, {"changes", "--machine", ""},
	} {
		got, directive := c.completions(args...)
		if !slices.Contains(got, "job") || !slices.Contains(got, "report") || slices.Contains(got, "j1") || directive != ":4" {
			t.Errorf("complete %q: %q %s, want the machine ids, no files (:4)", args, got, directive)
		}
	}
	for _, cmd := range []string{"get", "transition", "signal", "cancel", "heartbeat", "relinquish", signalRetrieved} {
		got, directive := c.completions(cmd, "")
		if !slices.Contains(got, "j1") || !slices.Contains(got, "j2") || !slices.Contains(got, "r1") || directive != ":4" {
			t.Errorf("complete %s: %q %s, want the instance ids", cmd, got, directive)
		}
	}
	if got, _ := c.completions("get", "j"); !slices.Equal(got, []string{"j1", "j2"}) {
		t.Errorf("complete get j: %q, want [j1 j2]", got)
	}
	if got, _ := c.completions("start", "jo"); !slices.Equal(got, []string{"job"}) {
		t.Errorf("complete start jo: %q, want [job]", got)
	}
	// Only the first argument is an id.
	if got, _ := c.completions("get", "j1", ""); len(got) != 0 {
		t.Errorf("complete get j1 <tab>: %q, want nothing", got)
	}
}

// TestCompletionWithoutServer gives no suggestions, and no error, when the
// server cannot be reached.
func TestCompletionWithoutServer(t *testing.T) {
	c := &cli{t: t, addr: "127.0.0.1:1", dir: t.TempDir()}
	for _, args := range [][]string{{"get", ""}, {"start", ""}, {"instances", "--machine", ""}} {
		got, directive := c.completions(args...)
		if len(got) != 0 || directive != ":4" {
			t.Errorf("complete %q without a server: %q %s, want nothing", args, got, directive)
		}
	}
}

func TestCompletionScriptsAndVersion(t *testing.T) {
	c := &cli{t: t, addr: "127.0.0.1:1", dir: t.TempDir()}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		if out := c.ok("completion", shell); !strings.Contains(out, "__complete") {
			t.Errorf("completion %s prints no script calling __complete:\n%.200s", shell, out)
		}
	}
	if out := c.ok("--version"); !strings.HasPrefix(out, "dfsmr ") || !strings.Contains(out, "go1.") {
		t.Errorf("--version printed %q", out)
	}
}
