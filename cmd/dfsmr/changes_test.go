package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// waitLimit bounds the waits for a line that must come.
const waitLimit = 30 * time.Second

// TestChangeLines checks what an operator scans in "changes": the attempt,
// the lease expiry and the due time with their countdowns, the worker
// rather than an address, --kind, lines of at most 120 columns, and colour
// only when asked for.
func TestChangeLines(t *testing.T) {
	c := mustCLI(t)
	c.ok("define", c.file("job.yaml", jobYAML))
	c.ok("start", "job", "--id", "j1", "--param", "long="+strings.Repeat("x", 200))
	c.ok("start", "job", "--id", "later", "--delay", "1h")
	ready := decode(t, c.ok("ready", "--machine", "job", "--worker", "w1", "-o", "json"), &pb.ReadyResponse{})
	tok := fmt.Sprint(ready.GetLease().GetToken())
	c.ok("transition", "j1", tok, "later", "--delay", "30m")

	out := c.ok("changes", "--instance", "j1")
	ls := lines(out)
	if len(ls) != 3 {
		t.Fatalf("changes --instance j1:\n%s", out)
	}
	for _, l := range ls {
		if n := utf8.RuneCountInString(l); n > lineWidth {
			t.Errorf("a line of %d columns:\n%s", n, l)
		}
		if strings.Contains(l, "127.0.0.1:") {
			t.Errorf("a line names the caller's address:\n%s", l)
		}
	}
	if !strings.HasSuffix(ls[0], "x…") {
		t.Errorf("long params not cut with an ellipsis:\n%s", ls[0])
	}
	// The lease: its attempt, its expiry (the node's 1m timeout) with a
	// countdown, the worker. A due time on another day than the change
	// (near midnight) takes more room, and the line shows the countdown
	// alone.
	if !regexp.MustCompile(`leased +job@1 j1 todo by w1 attempt 1 expires (\S+ \(in ([1-5]?\ds|1m)\)|in ([1-5]?\ds|1m)) token=1$`).MatchString(ls[1]) {
		t.Errorf("lease line:\n%s", ls[1])
	}
	if !regexp.MustCompile(`transitioned +job@1 j1 todo \(later\) waiting by w1 until (\S+ \(in (2\dm\d+s|30m)\)|in (2\dm\d+s|30m)) token=1$`).MatchString(ls[2]) {
		t.Errorf("delayed transition line:\n%s", ls[2])
	}
	// --wide keeps everything.
	if !strings.Contains(c.ok("changes", "--instance", "j1", "--wide"), strings.Repeat("x", 200)) {
		t.Error("--wide cut the params")
	}

	// --kind: names, repeatable and comma-separated; an unknown one is a
	// usage error listing the kinds.
	out = c.ok("changes", "--kind", "leased,transitioned", "--kind", "machine-defined")
	if n := len(lines(out)); n != 4+1+1+1 {
		t.Fatalf("--kind leased,transitioned,machine-defined: %d lines:\n%s", n, out)
	}
	if strings.Contains(out, "started") {
		t.Fatalf("--kind let a start through:\n%s", out)
	}
	js := lines(c.ok("changes", "--kind", "STARTED", "-o", "json"))
	if len(js) != 2 || decode(t, js[1], &pb.Change{}).GetInstance() != "later" {
		t.Fatalf("--kind STARTED -o json: %v", js)
	}
	c.fails(exitUsage, []string{`--kind "leaded"`, "leased", "device_notice"}, "changes", "--kind", "leaded")

	// Colour: never in a pipe (auto) nor with NO_COLOR; --color always
	// forces it.
	if strings.Contains(c.ok("changes"), "\x1b[") {
		t.Fatal("colour in a pipe")
	}
	t.Setenv(envNoColor, "1")
	if strings.Contains(c.ok("changes", "--color", "auto"), "\x1b[") {
		t.Fatal("colour with NO_COLOR")
	}
	col := c.ok("changes", "--color", "always", "--kind", "leased")
	if !strings.Contains(col, sgrCyan+"leased"+sgrReset) {
		t.Fatalf("--color always: no colour:\n%q", col)
	}
	c.fails(exitUsage, []string{"--color"}, "changes", "--color", "sometimes")
}

// TestChangeLineNotice checks a notice's line: marked, with the printer,
// the job and the command to run first.
func TestChangeLineNotice(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for reason, want := range map[string]string{
		"print finished; take the part off the bed, then signal retrieved": "p1 job-1 -> dfsmr retrieved job-1: print finished; take the part off the …",
		"print failed; clear the printer, then signal recovered":           "p1 job-1 -> dfsmr recovered job-1: print failed",
		"nozzle hot, then signal cooled":                                   "p1 job-1 -> dfsmr signal job-1 cooled: nozzle hot",
		"device reports job \"x\" but its job is \"job-1\": check it":      `p1 job-1: device reports job "x"`,
	} {
		ch := &pb.Change{Seq: 9, Time: timestamppb.New(now), Kind: pb.ChangeKind_CHANGE_KIND_DEVICE_NOTICE,
			Machine: "printer", Version: 1, Instance: "job-1", Device: "p1", Reason: reason, Actor: "device:p1"}
		l := lineStyle{now: now}.changeLine(ch)
		if !strings.Contains(l, "  ! notice        "+want) || utf8.RuneCountInString(l) > lineWidth {
			t.Errorf("notice line:\n%s\nwant it to contain %q", l, want)
		}
		colored := lineStyle{now: now, color: true}.changeLine(ch)
		if !strings.Contains(colored, sgrYellow+"! notice"+sgrReset) {
			t.Errorf("coloured notice line: %q", colored)
		}
	}
}

// TestChangeLineLongIDs checks that a lease of an instance with a long id
// still fits 120 columns with its worker: the expiry gives way to its
// countdown, and what still does not fit is cut at the end.
func TestChangeLineLongIDs(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ch := &pb.Change{Seq: 123456, Time: timestamppb.New(now), Kind: pb.ChangeKind_CHANGE_KIND_LEASED,
		Machine: "report", Version: 3, Instance: "r-1", ToNode: "downloadable",
		ToStatus: pb.InstanceStatus_INSTANCE_STATUS_LEASED, Attempt: 2, Token: 41,
		DueTime: timestamppb.New(now.Add(5 * time.Minute)), Worker: "host-17/4242", Actor: "127.0.0.1:40000"}
	l := lineStyle{now: now}.changeLine(ch)
	if utf8.RuneCountInString(l) > lineWidth || !strings.HasSuffix(l, "downloadable by host-17/4242 attempt 2 expires in 5m token=41") {
		t.Fatalf("long lease line (%d columns):\n%s", utf8.RuneCountInString(l), l)
	}
	ch.Instance = "r1765432100-acme-widgets-2026-01-01"
	if l := (lineStyle{now: now}).changeLine(ch); utf8.RuneCountInString(l) != lineWidth || !strings.HasSuffix(l, "downloadable by host-17/4242…") {
		t.Fatalf("longer lease line (%d columns):\n%s", utf8.RuneCountInString(l), l)
	}
	wide := lineStyle{now: now, wide: true}.changeLine(ch)
	if !strings.Contains(wide, "expires 03:09:05Z (in 5m)") {
		t.Fatalf("--wide lease line:\n%s", wide)
	}
}

// TestChangeLineWho checks who a line names: the worker a work call gave,
// with the authenticated principal beside it when it differs; never a bare
// address; nobody for a device's own round.
func TestChangeLineWho(t *testing.T) {
	for _, tc := range []struct{ actor, worker, device, want string }{
		{"127.0.0.1:5555", "w1", "", "w1"},
		{"ops", "w1", "", "w1 (ops)"},
		{"w1", "w1", "", "w1"},
		{"[::1]:40000", "", "", ""},
		{"ops", "", "", "ops"},
		{"dfsmr", "", "", "dfsmr"},
		{"device:p1", "", "p1", ""},
	} {
		if got := who(&pb.Change{Actor: tc.actor, Worker: tc.worker, Device: tc.device}); got != tc.want {
			t.Errorf("who(actor %q, worker %q) = %q, want %q", tc.actor, tc.worker, got, tc.want)
		}
	}
}

// TestChangesFollowTellsOutages follows a server that is not there yet,
// then comes up, goes away and comes back on the same file: stderr says
// each, and the resumed stream misses nothing.
func TestChangesFollowTellsOutages(t *testing.T) {
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := &lineWriter{line: make(chan string, 100)}
	errw := &lineWriter{line: make(chan string, 100)}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--addr", addr, "changes", "-f", "--machine", "report"}, strings.NewReader(""), out, errw)
	}()
	wantLine := func(w *lineWriter, re string) string {
		t.Helper()
		select {
		case l := <-w.line:
			if !regexp.MustCompile(re).MatchString(l) {
				t.Fatalf("got %q, want a line matching %s", l, re)
			}
			return l
		case code := <-done:
			t.Fatalf("changes -f ended with %d", code)
		case <-time.After(waitLimit):
			t.Fatalf("no line matching %s", re)
		}
		return ""
	}
	wantLine(errw, `^dfsmr: cannot connect to `+regexp.QuoteMeta(addr)+` \(.+\); retrying$`)

	start := func() *server.Server {
		s, err := server.New(t.Context(), server.Config{Addr: addr, DB: filepath.Join(dir, "dfsmr.db"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(t.Context(), nil); err != nil {
			t.Fatal(err)
		}
		return s
	}
	startInstance := func(id string) {
		t.Helper()
		cl, err := client.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if _, err := cl.Instances.StartInstance(t.Context(), &pb.StartInstanceRequest{Id: id, Machine: "report"}); err != nil {
			t.Fatal(err)
		}
	}
	s := start()
	wantLine(errw, `^dfsmr: connected to `+regexp.QuoteMeta(addr)+`; following from now$`)
	startInstance("a")
	first := wantLine(out, `started +report@1 a `)
	s.Stop(context.Background())
	wantLine(errw, `^dfsmr: lost the server at `+regexp.QuoteMeta(addr)+` \(.+\); reconnecting$`)

	s = start()
	defer s.Stop(context.Background())
	var seq int
	fmt.Sscanf(first, "%d", &seq)
	wantLine(errw, fmt.Sprintf(`^dfsmr: connected to %s again; resuming from seq %d$`, regexp.QuoteMeta(addr), seq+1))
	startInstance("b")
	wantLine(out, fmt.Sprintf(`^ +%d  .* started +report@1 b `, seq+1))
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("changes -f exited %d after interrupt", code)
	}
	select {
	case l := <-errw.line:
		t.Fatalf("unexpected stderr line %q", l)
	default:
	}
}

// TestEscapedOutput puts ESC sequences and bidi controls where the server
// takes them (param values, a machine description, a file name, a cancel
// reason) and checks that no table, change line or error line prints one
// raw.
func TestEscapedOutput(t *testing.T) {
	c := mustCLI(t)
	evil := "a\x1b[2J\x1b]0;pwned\x07\u202Eb"
	// YAML refuses control characters; a bidi override it takes.
	job := c.file("job\x1b[31m.yaml", strings.Replace(jobYAML, "A test job", "A test \u202Ejob", 1))
	outs := []string{c.ok("define", job), c.ok("machine", "job")}
	outs = append(outs, c.ok("start", "job", "--id", "j1", "--param", "note="+evil))
	outs = append(outs, c.ok("get", "j1", "--history"), c.ok("cancel", "j1", "--reason", "why\u202Enot"))
	outs = append(outs, c.ok("changes"), c.ok("get", "j1", "--history"))
	r := c.fails(exitFailed, []string{"INVALID_ARGUMENT"}, "start", "job", "--id", "x"+evil)
	outs = append(outs, r.err)
	r = c.fails(exitFailed, []string{"INVALID_ARGUMENT"}, "define", c.file("bad\x1b[0m.yaml", "id: b\x1b[1m\n"))
	outs = append(outs, r.err)
	for _, o := range outs {
		if strings.ContainsAny(o, "\x1b\x07\u202E") {
			t.Errorf("raw escape in output:\n%q", o)
		}
	}
	all := strings.Join(outs, "\n")
	contains(t, all, `a\x1b[2J\x1b]0;pwned\a\u202eb`, `job\x1b[31m.yaml`, `A test \u202ejob`, `why\u202enot`)

	// JSON output is escaped by its encoding.
	contains(t, c.ok("-o", "json", "get", "j1"), `\u001b[2J`)
}
