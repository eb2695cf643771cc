package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/spf13/cobra"
)

// lowerCamelKey is how protojson names fields; every -o json output uses
// it.
var lowerCamelKey = regexp.MustCompile(`^[a-z][a-zA-Z0-9]*$`)

// checkKeys fails when an object key anywhere in v is not lowerCamelCase
// (the keys of maps that hold data, params, event and node counts, are
// data).
func checkKeys(t *testing.T, cmd string, v any, path string) {
	t.Helper()
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if !lowerCamelKey.MatchString(k) {
				t.Errorf("%s -o json: key %q at %s is not lowerCamelCase", cmd, k, path)
			}
			if k != "params" && k != "events" && k != "nodes" {
				checkKeys(t, cmd, e, path+"."+k)
			}
		}
	case []any:
		for _, e := range v {
			checkKeys(t, cmd, e, path+"[]")
		}
	}
}

// TestJSONEveryCommand runs every command of the CLI with -o json and
// checks that stdout is JSON, one object per line, with lowerCamelCase
// keys. A command added without a case here fails the test.
func TestJSONEveryCommand(t *testing.T) {
	c := mustCLI(t)
	cl, err := client.Dial(c.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	job := c.file("job.yaml", jobYAML)
	c.ok("define", job)
	c.ok("start", "job", "--id", "j-ready")
	c.ok("start", "job", "--id", "j-work")

	// One case per command path, in an order where each can succeed.
	type step struct {
		path  string
		args  []string
		stdin string
		// cluster runs the step against a ClusterService that stands
		// for a cluster's server.
		cluster bool
	}
	var tok, leased string
	steps := []step{
		{path: "define", args: []string{"define", job}},
		{path: "machines", args: []string{"machines"}},
		{path: "machine", args: []string{"machine", "job"}},
		{path: "graph", args: []string{"graph", "job"}},
		{path: "start", args: []string{"start", "job", "--id", "j1", "--param", "k=v"}},
		{path: "instances", args: []string{"instances"}},
		{path: "get", args: []string{"get", "j1", "--history"}},
		{path: "signal", args: []string{"signal", "j1", "hold"}},
		{path: "cancel", args: []string{"cancel", "j1"}},
		{path: "retry", args: []string{"retry", "--machine", "job", "--dry-run"}},
		{path: "ready", args: []string{"ready", "--machine", "job", "--worker", "w1"}},
		{path: "heartbeat"}, {path: "relinquish"}, {path: "transition"}, // filled in below with the token
		{path: "changes", args: []string{"changes"}},
		{path: "token new", args: []string{"token", "new"}},
		{path: "token hash", args: []string{"token", "hash"}, stdin: "sometoken\n"},
		{path: "backup", args: []string{"backup", filepath.Join(c.dir, "copy.db")}},
		{path: "printer-sim", args: []string{"printer-sim", "--count", "1", "--pool", "lab", "--duration", "200ms", "--no-operator"}},
		{path: "devices", args: []string{"devices"}},
		{path: "order", args: []string{"order", "--model", "m", "--pool", "lab", "--quantity", "2", "--id", "oj"}},
		{path: "order status", args: []string{"order", "status", "oj"}},
		{path: "retrieved"}, {path: "recovered"}, {path: "cleared"}, {path: "order reprint"},
		{path: "bench", args: []string{"bench", "--instances", "5", "--workers", "2", "--baseline", "20ms"}},
		{path: "report-demo", args: []string{"report-demo", "--items", "2", "--workers", "2", "--no-serial", "--dir", filepath.Join(c.dir, "demo")}},
		{path: "dst", args: []string{"dst", "--seed", "3", "--ticks", "50", "--dir", t.TempDir()}},
		{path: "cluster status", args: []string{"cluster", "status"}, cluster: true},
		{path: "cluster members", args: []string{"cluster", "members"}, cluster: true},
		{path: "cluster add", args: []string{"cluster", "add", "n4", "127.0.0.1:7004", "127.0.0.1:5004"}, cluster: true},
		{path: "cluster remove", args: []string{"cluster", "remove", "n3"}, cluster: true},
		{path: "cluster transfer", args: []string{"cluster", "transfer"}, cluster: true},
	}
	fc, _ := mustFakeCluster(t)
	covered := map[string]bool{}
	for _, s := range steps {
		covered[s.path] = true
	}
	var walk func(cmd *cobra.Command)
	walk = func(cmd *cobra.Command) {
		for _, sub := range cmd.Commands() {
			if sub.Runnable() {
				path := strings.TrimPrefix(sub.CommandPath(), "dfsmr ")
				// help and completion print text for a person or a shell.
				if sub.Name() != "help" && sub.Name() != "completion" && !covered[path] {
					t.Errorf("command %q has no -o json case", path)
				}
			}
			walk(sub)
		}
	}
	walk((&app{}).rootCommand())

	for _, s := range steps {
		args := s.args
		switch s.path {
		case "heartbeat", "relinquish", "transition":
			if tok == "" {
				r := decode(t, c.ok("ready", "--machine", "job", "-o", "json"), &pb.ReadyResponse{})
				tok, leased = fmt.Sprint(r.GetLease().GetToken()), r.GetInstance().GetId()
			}
			args = []string{s.path, leased, tok}
			if s.path == "transition" {
				args = append(args, "ok")
			}
			if s.path == "relinquish" {
				tok = ""
			}
		case "retrieved", "recovered", "cleared", "order reprint":
			// A failed call prints its error on stderr and nothing on
			// stdout, which is still valid (no object); their success
			// prints what signal prints, checked above.
			r := c.run(append(append([]string{"-o", "json"}, strings.Fields(s.path)...), "nosuch-job")...)
			if r.out != "" {
				t.Errorf("%s -o json failed but printed %q", s.path, r.out)
			}
			continue
		}
		runner := c
		if s.cluster {
			runner = fc
		}
		r := runner.runIn(s.stdin, append([]string{"-o", "json"}, args...)...)
		if r.code != 0 {
			t.Fatalf("dfsmr -o json %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.out, r.err)
		}
		ls := lines(r.out)
		if len(ls) == 0 {
			t.Errorf("%s -o json printed nothing", s.path)
		}
		for _, l := range ls {
			var v any
			if err := json.Unmarshal([]byte(l), &v); err != nil {
				t.Errorf("%s -o json: a line is not JSON (%v): %q", s.path, err, l)
				continue
			}
			if _, ok := v.(map[string]any); !ok {
				t.Errorf("%s -o json: a line is not an object: %q", s.path, l)
			}
			checkKeys(t, s.path, v, "")
		}
	}
}
