package machines

import (
	"errors"
	"fmt"
	"path"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
)

// mustCompile compiles src or fails the test.
func mustCompile(tb testing.TB, file, src string) *fsm.Machine {
	tb.Helper()
	m, err := Compile(file, []byte(src))
	if err != nil {
		tb.Fatalf("Compile(%s): %v", file, err)
	}
	return m
}

// bundledMachine compiles one bundled definition by file name.
func bundledMachine(tb testing.TB, file string) *fsm.Machine {
	tb.Helper()
	for _, s := range Bundled() {
		if s.File == file {
			return mustCompile(tb, s.File, string(s.Data))
		}
	}
	tb.Fatalf("no bundled %s", file)
	return nil
}

func TestBundled(t *testing.T) {
	sources := Bundled()
	var files []string
	for _, s := range sources {
		files = append(files, s.File)
	}
	want := []string{"crawler.yaml", "print_job.yaml", "printer.yaml", "report.yaml"}
	if !reflect.DeepEqual(files, want) {
		t.Fatalf("Bundled() files = %v, want %v", files, want)
	}
	for _, s := range sources {
		t.Run(s.File, func(t *testing.T) {
			m := mustCompile(t, s.File, string(s.Data))
			if id := strings.TrimSuffix(s.File, ".yaml"); m.ID != id {
				t.Errorf("ID = %q, want %q (the file name)", m.ID, id)
			}
			if m.Version != 0 {
				t.Errorf("Version = %d, want 0", m.Version)
			}
			if m.Description == "" {
				t.Error("bundled machines should have a description")
			}
			if len(m.Order) != len(m.Nodes) {
				t.Errorf("Order has %d names for %d nodes", len(m.Order), len(m.Nodes))
			}
			for _, name := range m.Order {
				n := m.Nodes[name]
				if n.Name != name || len(n.Order) != len(n.Transitions) {
					t.Errorf("node %q: name %q, %d ordered of %d transitions", name, n.Name, len(n.Order), len(n.Transitions))
				}
				if n.Final && (n.Timeout != (fsm.Timeout{}) || n.Retry != (fsm.Retry{}) || len(n.Transitions) != 0) {
					t.Errorf("final node %q: timeout %+v, retry %+v, %d transitions; want all zero", name, n.Timeout, n.Retry, len(n.Transitions))
				}
			}
			fp := Fingerprint(m)
			if again := Fingerprint(mustCompile(t, s.File, string(s.Data))); again != fp {
				t.Errorf("fingerprint changed between compilations: %s then %s", fp, again)
			}
			if len(fp) != 64 {
				t.Errorf("Fingerprint = %q, want 64 hex digits", fp)
			}
		})
	}
}

func TestBundledData(t *testing.T) {
	a, b := Bundled(), Bundled()
	a[0].Data[0] ^= 0xff
	if a[0].Data[0] == b[0].Data[0] {
		t.Fatal("Bundled shares its byte slices between calls")
	}
}

func TestCrawler(t *testing.T) {
	m := bundledMachine(t, "crawler.yaml")
	if m.Start != "crawl" || m.Kind != fsm.KindWorkflow || m.UpgradeStrategy != fsm.UpgradeContinue {
		t.Fatalf("start %q kind %v strategy %v", m.Start, m.Kind, m.UpgradeStrategy)
	}
	if got, want := m.Order, []string{"crawl", "wait", "success", "failed"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Order = %v, want %v", got, want)
	}
	crawl := m.Nodes["crawl"]
	if crawl.Timeout != (fsm.Timeout{Fixed: 30 * time.Second}) {
		t.Errorf("crawl timeout = %+v", crawl.Timeout)
	}
	wantRetry := fsm.Retry{MaxAttempts: 5, Backoff: fsm.BackoffExponential, Initial: time.Second, Max: time.Minute, Jitter: DefaultRetry().Jitter}
	if crawl.Retry != wantRetry {
		t.Errorf("crawl retry = %+v, want %+v", crawl.Retry, wantRetry)
	}
	if got, want := crawl.Order, []string{"ok", "error", "rate_limited", "gone"}; !reflect.DeepEqual(got, want) {
		t.Errorf("crawl transitions = %v, want %v", got, want)
	}
	if got, want := *crawl.Transitions["rate_limited"], (fsm.Transition{Name: "rate_limited", To: "wait", Delay: 10 * time.Second}); got != want {
		t.Errorf("rate_limited = %+v, want %+v", got, want)
	}
	if got := m.Nodes["wait"].Timeout.Fixed; got != 10*time.Second {
		t.Errorf("wait timeout = %v, want 10s", got)
	}
}

func TestReport(t *testing.T) {
	m := bundledMachine(t, "report.yaml")
	wantRetry := fsm.Retry{MaxAttempts: 8, Backoff: fsm.BackoffExponential, Initial: time.Second, Max: 5 * time.Minute, Jitter: 0.2}
	for _, name := range []string{"downloadable", "uploadable"} {
		n := m.Nodes[name]
		if n.Retry != wantRetry {
			t.Errorf("%s retry = %+v, want %+v", name, n.Retry, wantRetry)
		}
		if got, want := n.Order, []string{"ok", "error", "throttled", "give_up"}; !reflect.DeepEqual(got, want) {
			t.Errorf("%s transitions = %v, want %v", name, got, want)
		}
		if got, want := *n.Transitions["throttled"], (fsm.Transition{Name: "throttled", To: name, Delay: 30 * time.Second}); got != want {
			t.Errorf("%s throttled = %+v, want %+v", name, got, want)
		}
	}
	if got := m.Nodes["downloadable"].Timeout; got != (fsm.Timeout{Fixed: 10 * time.Minute}) {
		t.Errorf("downloadable timeout = %+v", got)
	}
	// The percentile form compiles to a learned timeout with bounds and no
	// fixed part.
	want := fsm.Timeout{Percentile: 95, Min: 5 * time.Minute, Max: 10 * time.Minute}
	if got := m.Nodes["uploadable"].Timeout; got != want {
		t.Errorf("uploadable timeout = %+v, want %+v", got, want)
	}
}

func TestPrinter(t *testing.T) {
	m := bundledMachine(t, "printer.yaml")
	if m.Kind != fsm.KindDevice {
		t.Errorf("Kind = %v, want device", m.Kind)
	}
	want := map[string]map[string]string{
		"ready":             {"print": "printing", "fault": "error", "retire": "retired"},
		"printing":          {"finish": "waiting_retrieval", "fail": "error", "cancel": "waiting_retrieval", "lost": "ready"},
		"waiting_retrieval": {"done": "ready", "fault": "error", "cleared": "ready"},
		"error":             {"recover": "ready", "cleared": "ready"},
		"retired":           {},
	}
	checkEdges(t, m, want)
	for name, n := range m.Nodes {
		if !n.Timeout.Never() {
			t.Errorf("node %s timeout = %+v, want never (devices hold no leases)", name, n.Timeout)
		}
	}
	if !m.Nodes["retired"].Final {
		t.Error("retired is not final")
	}
	for name, n := range m.Nodes {
		want := name != "retired"
		if n.Blocking != want {
			t.Errorf("node %s blocking = %v, want %v", name, n.Blocking, want)
		}
		for tn, tr := range n.Transitions {
			if got, want := tr.Signal, tn == "cleared"; got != want {
				t.Errorf("%s.%s signal = %v, want %v (cleared is the printer's operator signal)", name, tn, got, want)
			}
		}
	}
}

// TestPrinterReconcile checks the bundled reactive loop against the
// scenarios it encodes, compiled with the cross-machine checks on.
func TestPrinterReconcile(t *testing.T) {
	var src []byte
	for _, s := range Bundled() {
		if s.File == "printer.yaml" {
			src = s.Data
		}
	}
	m, err := CompileWith("printer.yaml", src, bundledResolver(t))
	if err != nil {
		t.Fatal(err)
	}
	tab := m.Reconcile
	if tab == nil || tab.Jobs != "print_job" {
		t.Fatalf("Reconcile = %+v, want a table over print_job", tab)
	}
	for _, want := range []fsm.Rule{
		{Device: "ready", Job: "queued", Command: "print", Transition: "dispatch"},
		{Device: "ready", Job: "printing", Command: "print", Forgotten: "failed",
			ForgottenNotice: "the printer carried out the print and forgot the job (a power cut?); it is not printed again; check the bed, then signal recovered"},
		{Device: "ready", Job: "retrieved", Transition: "acknowledged"},
		{Device: "ready", Job: "recovering", Transition: "reset"},
		{Device: "ready", Job: "awaiting_retrieval", Transition: "cleared"},
		{Device: "printing", Job: "canceling", Command: "cancel"},
		{Device: "waiting_retrieval", Job: "printing", Transition: "finished", Notice: "print finished; take the part off the bed, then signal retrieved"},
		{Device: "waiting_retrieval", Job: "retrieved", Command: "done"},
		{Device: "error", Job: "printing", Transition: "failed", Notice: "print failed; clear the printer, then signal recovered"},
		{Device: "error", Job: "recovering", Command: "recover"},
	} {
		if got, ok := tab.Lookup(want.Device, want.Job); !ok || got != want {
			t.Errorf("Lookup(%s, %s) = %+v, %v; want %+v", want.Device, want.Job, got, ok, want)
		}
	}
	for _, c := range []string{"print", "done", "recover", "cancel"} {
		if !tab.IsCommand(c) {
			t.Errorf("%s is not a command", c)
		}
	}
	if tab.IsCommand("finish") || tab.IsCommand("fault") || tab.IsCommand("lost") {
		t.Error("a transition the printer takes on its own counts as a command")
	}
	// Without a resolver the job side is not checked, and the table is the
	// same.
	plain := bundledMachine(t, "printer.yaml")
	if !reflect.DeepEqual(plain.Reconcile, tab) {
		t.Error("Compile and CompileWith give different tables")
	}
}

func TestPrintJob(t *testing.T) {
	m := bundledMachine(t, "print_job.yaml")
	want := map[string]map[string]string{
		"queued":             {"dispatch": "printing", "cancel": "canceled"},
		"printing":           {"finished": "awaiting_retrieval", "failed": "failed", "cancel": "canceling"},
		"canceling":          {"stopped": "canceled", "finished": "awaiting_retrieval", "failed": "failed"},
		"awaiting_retrieval": {"retrieved": "retrieved", "cleared": "done"},
		"retrieved":          {"acknowledged": "done"},
		"done":               {},
		"failed":             {"recovered": "recovering"},
		"recovering":         {"reset": "scrapped"},
		"scrapped":           {},
		"canceled":           {},
	}
	checkEdges(t, m, want)
	signals := map[string]bool{"queued.cancel": true, "printing.cancel": true, "awaiting_retrieval.retrieved": true, "failed.recovered": true}
	for name, n := range m.Nodes {
		if !n.Timeout.Never() {
			t.Errorf("node %s timeout = %+v, want never", name, n.Timeout)
		}
		for tn, tr := range n.Transitions {
			if got, want := tr.Signal, signals[name+"."+tn]; got != want {
				t.Errorf("%s.%s signal = %v, want %v", name, tn, got, want)
			}
		}
	}
	for _, name := range []string{"done", "scrapped", "canceled"} {
		if !m.Nodes[name].Final {
			t.Errorf("%s is not final", name)
		}
	}
}

// checkEdges compares a machine's nodes and transitions with want
// (node -> transition -> target).
func checkEdges(t *testing.T, m *fsm.Machine, want map[string]map[string]string) {
	t.Helper()
	got := make(map[string]map[string]string, len(m.Nodes))
	for name, n := range m.Nodes {
		got[name] = map[string]string{}
		for tn, tr := range n.Transitions {
			got[name][tn] = tr.To
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("edges = %v\nwant %v", got, want)
	}
}

func TestDefaults(t *testing.T) {
	m := mustCompile(t, "defaults.yaml", `
id: defaults
nodes:
  a:
    start: true
    transitions: {ok: b}
  b:
    retry: {}
    timeout: 0
    transitions: {ok: c}
  c:
    retry: {max_attempts: 3, jitter: 0}
    transitions: {ok: d}
  d:
    retry: {backoff: linear, max: 2m}
    timeout: 0s
    transitions: {ok: done, later: {to: d, delay: 0}}
  done: {final: true}
`)
	if m.Kind != fsm.KindWorkflow || m.UpgradeStrategy != fsm.UpgradeContinue {
		t.Errorf("kind %v, strategy %v; want workflow, continue", m.Kind, m.UpgradeStrategy)
	}
	def := DefaultRetry()
	partial := def
	partial.MaxAttempts, partial.Jitter = 3, 0
	linear := def
	linear.Backoff, linear.Max = fsm.BackoffLinear, 2*time.Minute
	tests := []struct {
		node    string
		timeout fsm.Timeout
		retry   fsm.Retry
	}{
		{"a", fsm.Timeout{Fixed: DefaultTimeout}, def},
		{"b", fsm.Timeout{}, def},
		{"c", fsm.Timeout{Fixed: time.Minute}, partial},
		{"d", fsm.Timeout{}, linear},
		{"done", fsm.Timeout{}, fsm.Retry{}},
	}
	for _, tt := range tests {
		n := m.Nodes[tt.node]
		if n.Timeout != tt.timeout {
			t.Errorf("%s: timeout = %+v, want %+v", tt.node, n.Timeout, tt.timeout)
		}
		if n.Retry != tt.retry {
			t.Errorf("%s: retry = %+v, want %+v", tt.node, n.Retry, tt.retry)
		}
	}
	if got := *m.Nodes["d"].Transitions["later"]; got != (fsm.Transition{Name: "later", To: "d"}) {
		t.Errorf("delay 0 compiled to %+v, want no delay", got)
	}
	if want := (fsm.Retry{MaxAttempts: 10, Backoff: fsm.BackoffExponential, Initial: time.Second, Max: 5 * time.Minute, Jitter: 0.1}); def != want {
		t.Errorf("DefaultRetry() = %+v, want the documented %+v", def, want)
	}
}

func TestValues(t *testing.T) {
	// Accepted spellings that are easy to get wrong in a hand-written walker.
	m := mustCompile(t, "values.yaml", `
id: values-1
kind: device
upgrade_strategy: abort
description: "quoted: text"
nodes:
  A-b_1:
    start: True
    timeout: {percentile: 99.5, min: 1s, max: 720h}
    retry: {max_attempts: 0, backoff: fixed, initial: 1s, max: 1s, jitter: 1}
    transitions:
      go: {to: Z, delay: 8784h, signal: false}
      sig: {to: A-b_1, signal: true}
  Z: {final: true, start: false}
`)
	n := m.Nodes["A-b_1"]
	if m.Kind != fsm.KindDevice || m.UpgradeStrategy != fsm.UpgradeAbort || m.Description != "quoted: text" {
		t.Errorf("machine = %+v", m)
	}
	if want := (fsm.Timeout{Percentile: 99.5, Min: time.Second, Max: MaxTimeout}); n.Timeout != want {
		t.Errorf("timeout = %+v, want %+v", n.Timeout, want)
	}
	if want := (fsm.Retry{Backoff: fsm.BackoffFixed, Initial: time.Second, Max: time.Second, Jitter: 1}); n.Retry != want {
		t.Errorf("retry = %+v, want %+v", n.Retry, want)
	}
	if got := n.Transitions["go"]; got.Delay != fsm.MaxDelay || got.Signal {
		t.Errorf("go = %+v", got)
	}
	if got := n.Transitions["sig"]; !got.Signal || got.Delay != 0 {
		t.Errorf("sig = %+v, want a signal without delay", got)
	}
}

func TestErrorsAs(t *testing.T) {
	_, err := Compile("two.yaml", []byte("id: Two\nkind: robot\nnodes: {a: {start: true, transitions: {ok: a}}}\n"))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("errors.As(%v, *ValidationError) = false", err)
	}
	if ve.Line != 1 || ve.Column != 5 || ve.Field != "id" {
		t.Errorf("first error = %+v, want id at 1:5", ve)
	}
	all := AsValidationErrors(err)
	if len(all) != 3 {
		t.Fatalf("AsValidationErrors = %v, want 3 errors", all)
	}
	if all[0] != ve {
		t.Errorf("AsValidationErrors()[0] = %v, want the first error", all[0])
	}

	_, err = Compile("one.yaml", []byte("id: one\nnodes: {a: {start: true, transitions: {ok: b}}, b: {final: true}}\nextra: 1\n"))
	if _, ok := err.(*ValidationError); !ok {
		t.Fatalf("one problem: got %T (%v), want *ValidationError", err, err)
	}
	if got := AsValidationErrors(err); len(got) != 1 {
		t.Errorf("AsValidationErrors = %v, want 1", got)
	}
	if got := AsValidationErrors(errors.New("other")); got != nil {
		t.Errorf("AsValidationErrors(other) = %v, want nil", got)
	}
	wrapped := fmt.Errorf("define: %w", err)
	if !errors.As(wrapped, &ve) || ve.Field != "extra" {
		t.Errorf("errors.As through a wrap = %v", ve)
	}
}

func TestMaxErrors(t *testing.T) {
	var b strings.Builder
	b.WriteString("id: many\nnodes:\n  a: {start: true, transitions: {ok: z}}\n  z: {final: true}\n")
	for i := range 2 * MaxErrors {
		fmt.Fprintf(&b, "  n%d: {bogus: 1}\n", i)
	}
	_, err := Compile("many.yaml", []byte(b.String()))
	es := AsValidationErrors(err)
	if len(es) != MaxErrors {
		t.Fatalf("got %d errors, want MaxErrors = %d", len(es), MaxErrors)
	}
	for i := 1; i < len(es); i++ {
		if es[i-1].Line > es[i].Line {
			t.Fatalf("errors not sorted by line: %v before %v", es[i-1], es[i])
		}
	}
	// The first problems are kept, not arbitrary ones.
	if es[0].Line != 5 {
		t.Errorf("first error %v, want line 5", es[0])
	}
}

func TestValidationErrorString(t *testing.T) {
	tests := []struct {
		e    ValidationError
		want string
	}{
		{ValidationError{"f.yaml", 3, 7, "nodes.a", "bad"}, "f.yaml:3:7: nodes.a: bad"},
		{ValidationError{"f.yaml", 3, 0, "", "bad"}, "f.yaml:3: bad"},
		{ValidationError{"f.yaml", 0, 0, "", "too big"}, "f.yaml: too big"},
		{ValidationError{"", 2, 1, "id", "required"}, "2:1: id: required"},
		{ValidationError{"", 0, 0, "", "bad"}, "bad"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%+v.Error() = %q, want %q", tt.e, got, tt.want)
		}
	}
	es := ValidationErrors{&tests[0].e, &tests[1].e}
	if got, want := es.Error(), "f.yaml:3:7: nodes.a: bad\nf.yaml:3: bad"; got != want {
		t.Errorf("ValidationErrors.Error() = %q, want %q", got, want)
	}
}

// TestNames checks the name rules at their edges.
func TestNames(t *testing.T) {
	long := strings.Repeat("n", MaxNameLen)
	src := func(id, node string) string {
		return fmt.Sprintf("id: %s\nnodes:\n  %s: {start: true, transitions: {ok: z}}\n  z: {final: true}\n", id, node)
	}
	for _, tt := range []struct {
		id, node string
		ok       bool
	}{
		{"a", "A", true},
		{long, long, true},
		{long + "n", "a", false},
		{"a", long + "n", false},
		{"a", "Z-9_z", true},
		{"a-b_c9", "a", true},
		{"Abc", "a", false},
		{"9a", "a", false},
		{"a", "_a", false},
		{"a", "'a b'", false},
		{"a", "dfsmr", true},
		{"dfsmr", "a", true},
		{"a", "'dfsmr.x'", false},
	} {
		_, err := Compile("names.yaml", []byte(src(tt.id, tt.node)))
		if (err == nil) != tt.ok {
			t.Errorf("id %q node %q: err = %v, want ok = %v", tt.id, tt.node, err, tt.ok)
		}
	}
}

func TestLimitsAtTheEdge(t *testing.T) {
	// Exactly at each limit compiles.
	var b strings.Builder
	b.WriteString("id: edge\nnodes:\n")
	for i := range MaxNodes - 1 {
		fmt.Fprintf(&b, "  n%d:\n    start: %v\n    transitions: {ok: n%d}\n", i, i == 0, i+1)
	}
	fmt.Fprintf(&b, "  n%d: {final: true}\n", MaxNodes-1)
	m := mustCompile(t, "edge.yaml", b.String())
	if len(m.Order) != MaxNodes {
		t.Errorf("%d nodes, want %d", len(m.Order), MaxNodes)
	}
	// A big machine written out in full is not an alias bomb: tens of
	// thousands of YAML nodes, no aliases.
	b.Reset()
	b.WriteString("id: big\nnodes:\n")
	for i := range MaxNodes - 1 {
		fmt.Fprintf(&b, "  n%d:\n    start: %v\n    transitions:\n", i, i == 0)
		for j := range 40 {
			fmt.Fprintf(&b, "      t%d: n%d\n", j, (i+j+1)%MaxNodes)
		}
	}
	fmt.Fprintf(&b, "  n%d: {final: true}\n", MaxNodes-1)
	if b.Len() > MaxSourceBytes {
		t.Fatalf("test input is %d bytes, over MaxSourceBytes", b.Len())
	}
	m = mustCompile(t, "big.yaml", b.String())
	if got := len(m.Nodes["n0"].Order); got != 40 {
		t.Errorf("%d transitions, want 40", got)
	}
	m = mustCompile(t, "edge.yaml", manyTransitions(MaxTransitionsPerNode))
	if n := len(m.Nodes["a"].Order); n != MaxTransitionsPerNode {
		t.Errorf("%d transitions, want %d", n, MaxTransitionsPerNode)
	}
	desc := fmt.Sprintf("id: d\ndescription: %s\nnodes: {a: {start: true, transitions: {ok: b}}, b: {final: true}}\n", strings.Repeat("x", MaxDescriptionBytes))
	mustCompile(t, "edge.yaml", desc)
}

func manyTransitions(n int) string {
	var b strings.Builder
	b.WriteString("id: many\nnodes:\n  a:\n    start: true\n    transitions:\n")
	for i := range n {
		fmt.Fprintf(&b, "      t%d: z\n", i)
	}
	b.WriteString("  z: {final: true}\n")
	return b.String()
}

func TestTestdataNames(t *testing.T) {
	// Keep the table below honest: every invalid file has a case.
	files, err := testdataInvalid()
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]bool{}
	for _, tt := range invalidCases {
		cases[tt.file] = true
	}
	for _, f := range files {
		if !cases[path.Base(f)] {
			t.Errorf("%s has no case in invalidCases", f)
		}
	}
}

// checkSound asserts what every compiled machine guarantees its users.
func checkSound(t *testing.T, m *fsm.Machine) {
	t.Helper()
	if m.Version != 0 || len(m.Order) != len(m.Nodes) || len(m.Nodes) == 0 || len(m.Nodes) > MaxNodes {
		t.Fatalf("machine shape: version %d, %d ordered of %d nodes", m.Version, len(m.Order), len(m.Nodes))
	}
	if s := m.Nodes[m.Start]; s == nil || s.Final {
		t.Fatalf("start node %q missing or final", m.Start)
	}
	finals := 0
	for _, name := range m.Order {
		n := m.Nodes[name]
		if n == nil || n.Name != name || len(n.Order) != len(n.Transitions) || len(n.Order) > MaxTransitionsPerNode {
			t.Fatalf("node %q malformed: %+v", name, n)
		}
		if n.Final {
			finals++
			if n.Timeout != (fsm.Timeout{}) || n.Retry != (fsm.Retry{}) || len(n.Transitions) != 0 {
				t.Fatalf("final node %q has %+v", name, n)
			}
		}
		for _, tn := range n.Order {
			tr := n.Transitions[tn]
			if tr == nil || tr.Name != tn || m.Nodes[tr.To] == nil || tr.Delay < 0 || tr.Delay > fsm.MaxDelay {
				t.Fatalf("transition %s.%s malformed: %+v", name, tn, tr)
			}
		}
		if n.Timeout.Fixed < 0 || n.Timeout.Fixed > MaxTimeout || n.Timeout.Max > MaxTimeout {
			t.Fatalf("node %q timeout %+v", name, n.Timeout)
		}
		if !n.Final && (n.Retry.Initial <= 0 || n.Retry.Max < n.Retry.Initial || n.Retry.MaxAttempts < 0 || !(n.Retry.Jitter >= 0 && n.Retry.Jitter <= 1)) {
			t.Fatalf("node %q retry %+v", name, n.Retry)
		}
	}
	if finals == 0 {
		t.Fatal("no final node")
	}
}

// TestCompileBreaker compiles breaker blocks: omitted fields keep the
// defaults, off turns it off, no block is the default policy.
func TestCompileBreaker(t *testing.T) {
	const base = "id: b\nnodes: {a: {start: true, transitions: {ok: z}}, z: {final: true}}\n"
	def := fsm.DefaultBreakerPolicy()
	custom := def
	custom.Window, custom.MinOutcomes, custom.OpenShare, custom.CloseShare, custom.CloseStreak, custom.Delay = 10, 5, 0.9, 0.1, 2, time.Second
	partial := def
	partial.Delay = 0
	for _, tt := range []struct {
		block string
		want  fsm.BreakerPolicy
	}{
		{"", def},
		{"breaker: off\n", fsm.BreakerPolicy{Off: true}},
		{"breaker: {}\n", def},
		{"breaker: {delay: 0}\n", partial},
		{"breaker:\n  window: 10\n  min_outcomes: 5\n  open_share: 0.9\n  close_share: 0.1\n  close_streak: 2\n  delay: 1s\n", custom},
	} {
		if got := mustCompile(t, "breaker", base+tt.block).Breaker; got != tt.want {
			t.Errorf("%q: breaker %+v, want %+v", tt.block, got, tt.want)
		}
	}
}

// TestReportLeasesOutlastReading: the README walkthrough leases a report
// item with dfsmr ready and reports it with dfsmr transition by hand; the
// lease must survive a few minutes of reading in between, in either node
// (uploadable offers its min until it has learned from 20 uploads).
func TestReportLeasesOutlastReading(t *testing.T) {
	const reading = 5 * time.Minute
	m := bundledMachine(t, "report.yaml")
	if got := m.Nodes["downloadable"].Timeout.Fixed; got < reading {
		t.Errorf("downloadable lease %v, want at least %v", got, reading)
	}
	if got := m.Nodes["uploadable"].Timeout.Min; got < reading {
		t.Errorf("uploadable lease before learning %v, want at least %v", got, reading)
	}
}

// TestPrinterEveryPairHasARule: no printer is ever stuck without a word.
// For every node of the printer machine a printer can be in, and every node
// its job can be in (or none: no job, empty queue), the reconcile table has
// a rule that acts (a command or a job transition), or one that says what
// it waits for.
func TestPrinterEveryPairHasARule(t *testing.T) {
	resolve := bundledResolver(t)
	pm, ok := resolve("printer")
	if !ok {
		t.Fatal("no bundled printer machine")
	}
	jm, ok := resolve(pm.Reconcile.Jobs)
	if !ok {
		t.Fatalf("no job machine %q", pm.Reconcile.Jobs)
	}
	jobNodes := []string{fsm.NoJob}
	for _, name := range jm.Order {
		if !jm.Nodes[name].Final {
			jobNodes = append(jobNodes, name)
		}
	}
	pairs := 0
	for _, d := range pm.Order {
		if pm.Nodes[d].Final {
			continue
		}
		for _, j := range jobNodes {
			pairs++
			r, ok := pm.Reconcile.Lookup(d, j)
			switch {
			case !ok:
				t.Errorf("printer %s, job %s: no rule", d, j)
			case r.Command == "" && r.Transition == "" && r.Wait == "":
				t.Errorf("printer %s, job %s: the rule does nothing and says not why (give it a wait reason)", d, j)
			}
		}
	}
	if want := 4 * 8; pairs != want {
		t.Errorf("%d pairs, want %d: a node was added; check its rules", pairs, want)
	}
	// An operator who is told to signal the printer cleared can: the signal
	// is declared wherever a wait reason asks for it.
	for _, r := range pm.Reconcile.Rules {
		if strings.Contains(r.Wait, "signal the printer cleared") {
			if tr := pm.Nodes[r.Device].Transitions["cleared"]; tr == nil || !tr.Signal {
				t.Errorf("rule (%s, %s) waits for the printer signal cleared, which node %s does not declare", r.Device, r.Job, r.Device)
			}
		}
	}
}
