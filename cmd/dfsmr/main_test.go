package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"github.com/dfsmr/dfsmr/server/store"
	"github.com/dfsmr/dfsmr/server/store/bolt"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

const jobYAML = `id: job
description: A test job with a signal detour.
nodes:
  todo:
    start: true
    timeout: 1m
    transitions:
      ok: done
      later: {to: todo, delay: 1h}
      hold: {to: held, signal: true}
  held:
    transitions:
      release: {to: todo, signal: true}
  done: {final: true}
`

// badYAML points "ok" at a node that does not exist: line 6, column 11.
const badYAML = `id: bad
nodes:
  a:
    start: true
    transitions:
      ok: nowhere
  b: {final: true}
`

// cli runs the CLI in-process against one real server.
type cli struct {
	t    *testing.T
	addr string
	dir  string
}

func mustCLI(t *testing.T) *cli {
	t.Helper()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := server.New(t.Context(), server.Config{Addr: "127.0.0.1:0", DB: filepath.Join(dir, "dfsmr.db"), Logger: log})
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	if err := s.Start(t.Context(), nil); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	return &cli{t: t, addr: s.Addr(), dir: dir}
}

// file writes a file in the test's directory and returns its path.
func (c *cli) file(name, content string) string {
	c.t.Helper()
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return p
}

type result struct {
	out, err string
	code     int
}

func (c *cli) runIn(stdin string, args ...string) result {
	c.t.Helper()
	var out, errb bytes.Buffer
	code := run(c.t.Context(), append([]string{"--addr", c.addr}, args...), strings.NewReader(stdin), &out, &errb)
	return result{out: out.String(), err: errb.String(), code: code}
}

func (c *cli) run(args ...string) result { c.t.Helper(); return c.runIn("", args...) }

// ok runs a command that must succeed and returns its stdout.
func (c *cli) ok(args ...string) string {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("dfsmr %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.out, r.err)
	}
	return r.out
}

// fails runs a command that must exit with code and print all of want on
// stderr.
func (c *cli) fails(code int, want []string, args ...string) result {
	c.t.Helper()
	r := c.run(args...)
	if r.code != code {
		c.t.Fatalf("dfsmr %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, code, r.out, r.err)
	}
	for _, w := range want {
		if !strings.Contains(r.err, w) {
			c.t.Fatalf("dfsmr %s: stderr does not contain %q:\n%s", strings.Join(args, " "), w, r.err)
		}
	}
	return r
}

func contains(t *testing.T, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Fatalf("output does not contain %q:\n%s", w, got)
		}
	}
}

// lines splits output into non-empty lines.
func lines(s string) []string {
	var out []string
	for l := range strings.Lines(s) {
		if l = strings.TrimRight(l, "\n"); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// decode parses one protojson line into m.
func decode[M proto.Message](t *testing.T, line string, m M) M {
	t.Helper()
	if err := protojson.Unmarshal([]byte(line), m); err != nil {
		t.Fatalf("not protojson: %v\n%s", err, line)
	}
	return m
}

func TestMachines(t *testing.T) {
	c := mustCLI(t)
	job := c.file("job.yaml", jobYAML)

	out := c.ok("define", job)
	contains(t, out, "ID", "VERSION", "job", "created", job)
	out = c.ok("define", job)
	contains(t, out, "unchanged")
	out = c.runIn(strings.Replace(jobYAML, "A test job", "Another test job", 1), "define", "-").out
	if !regexp.MustCompile(`job\s+2\s+created\s+<stdin>`).MatchString(out) {
		t.Fatalf("define - did not create version 2:\n%s", out)
	}
	resp := decode(t, c.ok("-o", "json", "define", job), &pb.DefineMachineResponse{})
	if resp.GetCreated() || resp.GetMachine().GetVersion() != 1 {
		t.Fatalf("define -o json = %v, want version 1, not created", resp)
	}

	// A malformed definition: INVALID_ARGUMENT, with file:line:column.
	bad := c.file("bad.yaml", badYAML)
	r := c.fails(exitFailed, []string{"dfsmr: INVALID_ARGUMENT: ", bad + ":6:11:", "nowhere"}, "define", bad)
	if r.out != "" {
		t.Fatalf("a failed define printed %q", r.out)
	}
	if !strings.HasPrefix(r.err, "dfsmr: INVALID_ARGUMENT: ") {
		t.Fatalf("stderr does not start with the status:\n%s", r.err)
	}
	// Several problems: every one on its own line, with its position.
	worse := c.file("worse.yaml", strings.Replace(badYAML, "b: {final: true}", "b: {final: true, start: true}", 1))
	r = c.fails(exitFailed, []string{"dfsmr: INVALID_ARGUMENT: " + worse + ":"}, "define", worse)
	if n := len(regexp.MustCompile(`(?m)^  source: .*worse\.yaml:\d+:\d+: `).FindAllString(r.err, -1)); n < 1 {
		t.Fatalf("want the other problems as field violations with positions, got %d:\n%s", n, r.err)
	}

	out = c.ok("machines")
	contains(t, out, "ID", "KIND", "NODES", "DEFINED")
	if !regexp.MustCompile(`(?m)^job\s+2\s+workflow\s+3\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`).MatchString(out) {
		t.Fatalf("machines: no row for job:\n%s", out)
	}
	for _, id := range []string{"crawler", "print_job", "printer", "report"} {
		contains(t, out, id)
	}
	if n := len(lines(c.ok("machines", "-o", "json"))); n != 5 {
		t.Fatalf("machines -o json printed %d lines, want 5", n)
	}

	out = c.ok("machine", "job", "--version", "1")
	contains(t, out, "A test job", "VERSIONS:", "1, 2", "todo", "held", "1m ", "release", "1h ", "yes")
	out = c.ok("machine", "report")
	contains(t, out, "p95", "8 attempts, exponential 1s..5m, jitter 0.2", "p95 of recent, 5m..10m ", "throttled")
	c.fails(exitFailed, []string{"NOT_FOUND"}, "machine", "nosuch")

	// graph: from the server, and offline from a file.
	dot := c.ok("graph", "job")
	contains(t, dot, "digraph", `"todo"`, `"held"`, "dashed")
	contains(t, c.ok("graph", "job", "--format", "mermaid"), "stateDiagram-v2", "todo --> held")
	if off := c.ok("graph", "--file", job); off != dot {
		t.Fatalf("graph --file differs from the server's graph:\n%s\n---\n%s", off, dot)
	}
	c.fails(exitFailed, []string{bad + ":6:11:"}, "graph", "--file", bad)
	c.fails(exitUsage, []string{"--format"}, "graph", "job", "--format", "svg")
	c.fails(exitUsage, nil, "graph", "job", "--file", job)
	c.fails(exitUsage, nil, "graph")
}

func TestInstancesAndWork(t *testing.T) {
	c := mustCLI(t)
	c.ok("define", c.file("job.yaml", jobYAML))

	// start is idempotent by id.
	out := c.ok("start", "job", "--id", "j1", "--param", "a=1", "--param", "b=x y")
	contains(t, out, "j1", "todo", "ready", "created")
	out = c.ok("start", "job", "--id", "j1", "--param", "a=1", "--param", "b=x y")
	contains(t, out, "already exists")
	c.fails(exitFailed, []string{"ALREADY_EXISTS"}, "start", "job", "--id", "j1", "--param", "a=2")
	c.fails(exitFailed, []string{"NOT_FOUND"}, "start", "nosuch")
	c.fails(exitUsage, []string{"--param"}, "start", "job", "--param", "novalue")
	c.fails(exitUsage, nil, "start", "job", "--delay", "1m", "--at", "2030-01-01T00:00:00Z")
	out = c.ok("start", "job", "--id", "later", "--delay", "1h")
	contains(t, out, "waiting")
	at := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)
	started := decode(t, c.ok("start", "job", "--id", "at", "--at", at, "-o", "json"), &pb.StartInstanceResponse{})
	if !started.GetCreated() || started.GetInstance().GetStatus() != pb.InstanceStatus_INSTANCE_STATUS_WAITING {
		t.Fatalf("start --at = %v", started)
	}
	contains(t, c.ok("get", "at"), at)
	// A field violation of the request, printed on its own line.
	c.fails(exitFailed, []string{"dfsmr: INVALID_ARGUMENT: ", "start_time"}, "start", "job", "--at", "2099-01-02T03:04:05Z")

	// ready, heartbeat, relinquish, then a stale token.
	ready := decode(t, c.ok("ready", "--machine", "job", "--worker", "w1", "-o", "json"), &pb.ReadyResponse{})
	if ready.GetInstance().GetId() != "j1" || ready.GetLease().GetWorker() != "w1" {
		t.Fatalf("ready = %v", ready)
	}
	tok := fmt.Sprint(ready.GetLease().GetToken())
	out = c.ok("heartbeat", "j1", tok)
	contains(t, out, "EXPIRES", "j1", tok)
	out = c.ok("get", "j1")
	contains(t, out, "leased", "worker w1", "a=1", `b="x y"`)
	out = c.ok("relinquish", "j1", tok)
	contains(t, out, "j1", "todo", "ready")
	c.fails(exitFailed, []string{"dfsmr: ABORTED: "}, "transition", "j1", tok, "ok")
	c.fails(exitFailed, []string{"ABORTED"}, "heartbeat", "j1", tok)
	c.fails(exitUsage, []string{"TOKEN"}, "transition", "j1", "notanumber", "ok")

	// ready in table form, an illegal transition, then a legal one.
	out = c.ok("ready", "--machine", "job", "--node", "todo")
	contains(t, out, "ID", "TOKEN", "EXPIRES", "j1", "job@1", "todo")
	fields := strings.Fields(lines(out)[1])
	tok = fields[3]
	c.fails(exitFailed, []string{"dfsmr: FAILED_PRECONDITION: "}, "transition", "j1", tok, "nosuch")
	c.fails(exitFailed, []string{"FAILED_PRECONDITION"}, "transition", "j1", tok, "release") // a signal
	out = c.ok("transition", "j1", tok, "ok", "--param", "result=fine", "--request-id", "r1")
	contains(t, out, "j1", "done", "final")
	// The same request id again is the same result, not ABORTED.
	contains(t, c.ok("transition", "j1", tok, "ok", "--param", "result=fine", "--request-id", "r1"), "done")

	// No work: exit code 3, nothing on stdout.
	r := c.fails(exitNoWork, []string{"no work"}, "ready", "--machine", "job")
	if r.out != "" {
		t.Fatalf("ready without work printed %q", r.out)
	}

	// A delayed transition.
	c.ok("start", "job", "--id", "j3")
	ready = decode(t, c.ok("ready", "--machine", "job", "-o", "json"), &pb.ReadyResponse{})
	out = c.ok("transition", "j3", fmt.Sprint(ready.GetLease().GetToken()), "later", "--delay", "2h")
	contains(t, out, "waiting")

	// signal and cancel.
	c.ok("start", "job", "--id", "j2")
	contains(t, c.ok("signal", "j2", "hold", "--param", "why=operator"), "j2", "held", "ready")
	c.fails(exitFailed, []string{"FAILED_PRECONDITION"}, "signal", "j2", "ok")
	c.fails(exitFailed, []string{"NOT_FOUND"}, "signal", "nosuch", "hold")
	contains(t, c.ok("cancel", "j2", "--reason", "not needed"), "j2", "dfsmr.aborted", "final")
	c.fails(exitFailed, []string{"FAILED_PRECONDITION"}, "cancel", "j2")

	// get --history.
	out = c.ok("get", "j2", "--history")
	contains(t, out, "HISTORY:", "started", "signaled", "todo -> held (hold)", "why=operator", "canceled", `reason="not needed"`)
	got := decode(t, c.ok("get", "j1", "--history", "-o", "json"), &pb.GetInstanceResponse{})
	var kinds []string
	for _, ch := range got.GetInstance().GetHistory() {
		kinds = append(kinds, changeName(ch.GetKind()))
	}
	if want := "[started leased heartbeat relinquished leased transitioned]"; fmt.Sprint(kinds) != want {
		t.Fatalf("history of j1 = %v, want %s", kinds, want)
	}

	// Filters.
	out = c.ok("instances", "--machine", "job", "--status", "final")
	if n := len(lines(out)); n != 3 {
		t.Fatalf("instances --status final: %d lines, want header + 2:\n%s", n, out)
	}
	contains(t, out, "j1", "j2")
	c.fails(exitUsage, []string{"--status"}, "instances", "--status", "sleeping")
	c.fails(exitUsage, []string{"--output"}, "instances", "-o", "yaml")
	c.fails(exitUsage, nil, "get")
	c.fails(exitUsage, nil, "nosuchcommand")
}

func TestInstancesPagination(t *testing.T) {
	c := mustCLI(t)
	cl, err := client.Dial(c.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range 250 {
		if _, err := cl.Instances.StartInstance(t.Context(), &pb.StartInstanceRequest{
			Id: fmt.Sprintf("item-%03d", i), Machine: "report",
		}); err != nil {
			t.Fatal(err)
		}
	}
	out := c.ok("instances")
	ls := lines(out)
	if len(ls) != 251 {
		t.Fatalf("instances printed %d lines, want header + 250", len(ls))
	}
	for i, l := range ls[1:] {
		if want := fmt.Sprintf("item-%03d ", i); !strings.HasPrefix(l, want) {
			t.Fatalf("line %d = %q, want it to start with %q", i+1, l, want)
		}
	}
	js := lines(c.ok("instances", "--machine", "report", "-o", "json"))
	if len(js) != 250 {
		t.Fatalf("instances -o json printed %d lines, want 250", len(js))
	}
	if in := decode(t, js[249], &pb.Instance{}); in.GetId() != "item-249" {
		t.Fatalf("last instance = %s", in.GetId())
	}
	if n := len(lines(c.ok("instances", "--limit", "7"))); n != 8 {
		t.Fatalf("instances --limit 7 printed %d lines, want header + 7", n)
	}
	if n := len(lines(c.ok("instances", "--limit", "120", "-o", "json"))); n != 120 {
		t.Fatalf("instances --limit 120 printed %d lines, want 120", n)
	}
}

func TestChanges(t *testing.T) {
	c := mustCLI(t)
	c.ok("define", c.file("job.yaml", jobYAML))
	for i := range 30 {
		c.ok("start", "job", "--id", fmt.Sprintf("j%d", i))
	}
	ready := decode(t, c.ok("ready", "--machine", "job", "-o", "json"), &pb.ReadyResponse{})
	c.ok("transition", ready.GetInstance().GetId(), fmt.Sprint(ready.GetLease().GetToken()), "ok")
	c.ok("cancel", "j5")

	// Every change from 1 to the head, once each, then exit.
	js := lines(c.ok("changes", "--from", "1", "-o", "json"))
	var seqs []uint64
	for _, l := range js {
		seqs = append(seqs, decode(t, l, &pb.Change{}).GetSeq())
	}
	// 4 bundled machines + job + 30 starts + lease + transition + cancel.
	const head = 4 + 1 + 30 + 3
	if len(seqs) != head {
		t.Fatalf("changes printed %d changes, want %d: %v", len(seqs), head, seqs)
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("change %d has seq %d: gap or duplicate in %v", i, s, seqs)
		}
	}
	// The default --from is 1.
	if n := len(lines(c.ok("changes"))); n != head {
		t.Fatalf("changes printed %d lines, want %d", n, head)
	}
	// From the middle; from just after the head (nothing); beyond it.
	if n := len(lines(c.ok("changes", "--from", "30"))); n != head-29 {
		t.Fatalf("changes --from 30 printed %d lines, want %d", n, head-29)
	}
	if out := c.ok("changes", "--from", fmt.Sprint(head+1)); out != "" {
		t.Fatalf("changes from head+1 printed %q", out)
	}
	c.fails(exitFailed, []string{"OUT_OF_RANGE"}, "changes", "--from", fmt.Sprint(head+2))
	c.fails(exitUsage, nil, "changes", "--from", "0")

	// Filters stop at the head too, even though the last change (cancel
	// j5) does not match.
	out := c.ok("changes", "--instance", "j0")
	ls := lines(out)
	if len(ls) != 3 {
		t.Fatalf("changes --instance j0 printed %d lines, want 3:\n%s", len(ls), out)
	}
	contains(t, ls[0], "started", "job@1 j0 todo ready")
	contains(t, ls[1], "leased", "token=1")
	contains(t, ls[2], "transitioned", "todo -> done (ok) final")
	out = c.ok("changes", "--machine", "report")
	if ls := lines(out); len(ls) != 1 || !strings.Contains(ls[0], "machine_defined") {
		t.Fatalf("changes --machine report:\n%s", out)
	}
}

// lineWriter hands every line written to it over a channel.
type lineWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	line chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		l, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.Reset()
			w.buf.WriteString(l)
			return len(p), nil
		}
		w.line <- strings.TrimSuffix(l, "\n")
	}
}

func TestChangesFollow(t *testing.T) {
	c := mustCLI(t)
	ctx, cancel := context.WithCancel(t.Context())
	out := &lineWriter{line: make(chan string, 100)}
	var errb bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--addr", c.addr, "changes", "-f", "--machine", "report", "-o", "json"}, strings.NewReader(""), out, &errb)
	}()

	// From now: the changes of the bundled machines are not replayed. "Now"
	// is when the CLI's stream registers, so wait until changes that happen
	// after the start arrive; start instances until the first one shows
	// up.
	cl, err := client.Dial(c.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Instances.StartInstance(t.Context(), &pb.StartInstanceRequest{Id: "other", Machine: "crawler"}); err != nil {
		t.Fatal(err)
	}
	var first *pb.Change
	started := 0
	for i := 0; first == nil; i++ {
		started++
		if _, err := cl.Instances.StartInstance(t.Context(), &pb.StartInstanceRequest{Id: fmt.Sprintf("f%d", i), Machine: "report"}); err != nil {
			t.Fatal(err)
		}
		select {
		case l := <-out.line:
			first = decode(t, l, &pb.Change{})
		case code := <-done:
			t.Fatalf("changes -f ended with %d: %s", code, errb.String())
		case <-time.After(100 * time.Millisecond):
			// Started before the stream registered: start another.
		}
	}
	if first.GetKind() != pb.ChangeKind_CHANGE_KIND_STARTED || first.GetMachine() != "report" {
		t.Fatalf("first followed change = %v", first)
	}
	prev := first.GetSeq()
	// Instances started after the first one shown follow it, in order.
	var k int
	fmt.Sscanf(first.GetInstance(), "f%d", &k)
	for j := k + 1; j < started; j++ {
		ch := decode(t, <-out.line, &pb.Change{})
		if ch.GetSeq() != prev+1 || ch.GetInstance() != fmt.Sprintf("f%d", j) {
			t.Fatalf("followed %v after seq %d", ch, prev)
		}
		prev = ch.GetSeq()
	}
	for i := range 5 {
		if _, err := cl.Instances.StartInstance(t.Context(), &pb.StartInstanceRequest{Id: fmt.Sprintf("g%d", i), Machine: "report"}); err != nil {
			t.Fatal(err)
		}
		ch := decode(t, <-out.line, &pb.Change{})
		if ch.GetSeq() != prev+1 || ch.GetInstance() != fmt.Sprintf("g%d", i) {
			t.Fatalf("followed %v after seq %d", ch, prev)
		}
		prev = ch.GetSeq()
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("changes -f exited %d after interrupt: %s", code, errb.String())
	}
}

func TestAddrFromEnv(t *testing.T) {
	c := mustCLI(t)
	t.Setenv(envAddr, c.addr)
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"machines"}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("machines with %s set: exit %d: %s", envAddr, code, errb.String())
	}
	contains(t, out.String(), "report")
}

// TestBackup backs up a running server with the CLI and opens the copy as
// a store holding what was written before.
func TestBackup(t *testing.T) {
	c := mustCLI(t)
	c.ok("start", "report", "--id", "before-backup")
	path := filepath.Join(c.dir, "copy.db")
	out := c.ok("backup", path)
	contains(t, out, path+": ", " bytes, changelog head ", "sha256 ")
	c.fails(exitFailed, []string{"the target exists", "--force"}, "backup", path)
	jsonOut := c.ok("-o", "json", "backup", "--force", path) // replaces the previous copy
	contains(t, jsonOut, `"file":"`+path+`"`, `"sha256":"`, `"headSeq":`)

	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatalf("the backup does not open: %v", err)
	}
	defer st.Close()
	err = st.View(t.Context(), func(tx store.ReadTx) error {
		_, err := tx.Instance("before-backup")
		return err
	})
	if err != nil {
		t.Fatalf("instance started before the backup: %v", err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(c.dir, ".copy.db.tmp-*")); len(leftovers) > 0 {
		t.Fatalf("temporary files left behind: %v", leftovers)
	}
	c.fails(exitUsage, []string{"accepts 1 arg"}, "backup")
}

// TestBackupRefusesLiveDatabase points backup at the server's own
// database: refused, with or without --force, and nothing changed: the
// same file, no temporary file left, and the server goes on storing.
func TestBackupRefusesLiveDatabase(t *testing.T) {
	c := mustCLI(t)
	c.ok("start", "report", "--id", "before")
	db := filepath.Join(c.dir, "dfsmr.db")
	before, err := os.Stat(db)
	if err != nil {
		t.Fatal(err)
	}
	for _, force := range [][]string{nil, {"--force"}} {
		c.fails(exitFailed, []string{"database in use"}, append([]string{"backup", db}, force...)...)
	}
	after, err := os.Stat(db)
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("the live database was replaced: %v", err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(c.dir, ".dfsmr.db.tmp-*")); len(leftovers) > 0 {
		t.Fatalf("temporary files left behind: %v", leftovers)
	}
	c.ok("start", "report", "--id", "after")
	contains(t, c.ok("instances"), "before", "after")
}
