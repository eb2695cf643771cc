package machines

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// golden compares got with testdata/golden/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	file := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", file, got, want)
	}
}

func TestGraphGolden(t *testing.T) {
	for _, file := range []string{"report.yaml", "print_job.yaml"} {
		m := bundledMachine(t, file)
		base := strings.TrimSuffix(file, ".yaml")
		golden(t, base+".dot", DOT(m))
		golden(t, base+".mmd", Mermaid(m))
		if DOT(m) != DOT(bundledMachine(t, file)) || Mermaid(m) != Mermaid(bundledMachine(t, file)) {
			t.Errorf("%s: graph output is not deterministic", file)
		}
	}
}

func TestGraphOddNames(t *testing.T) {
	// Valid names that Mermaid would misread get an alias; names only a
	// hand-built machine can have are still escaped.
	m := mustCompile(t, "odd.yaml", `
id: odd-names
nodes:
  state:
    start: true
    transitions: {to-end: a-b, n1: n1}
  a-b:
    transitions: {ok: end}
  n1:
    transitions: {ok: end}
  end: {final: true}
`)
	got := Mermaid(m)
	for _, want := range []string{
		"\tstate \"state\" as n0\n",
		"\tstate \"a-b\" as n1_\n",
		"\tstate \"end\" as n3\n",
		"\t[*] --> n0\n",
		"\tn0 --> n1_: to-end\n",
		"\tn0 --> n1: n1\n",
		"\tn3 --> [*]\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Mermaid output lacks %q:\n%s", want, got)
		}
	}

	hand := &fsm.Machine{
		ID:    `say "hi"\`,
		Start: `a"b`,
		Nodes: map[string]*fsm.Node{
			`a"b`: {Name: `a"b`, Transitions: map[string]*fsm.Transition{
				"x\ny": {Name: "x\ny", To: "elsewhere", Delay: 90 * time.Minute, Signal: true},
			}},
			"z": {Name: "z", Final: true},
		},
	}
	dot := DOT(hand)
	for _, want := range []string{
		`digraph "say \"hi\"\\" {`,
		`"a\"b" [style=bold];`,
		`"z" [shape=doublecircle];`,
		`"a\"b" -> "elsewhere" [label="x\ny (1h30m)", style=dashed];`,
	} {
		if !strings.Contains(dot, want) {
			t.Errorf("DOT output lacks %q:\n%s", want, dot)
		}
	}
	mmd := Mermaid(hand)
	for _, want := range []string{
		"\tstate \"a'b\" as n0\n",
		"\tn0 --> x_elsewhere: x y (1h30m, signal)\n",
		"\tz --> [*]\n",
	} {
		if !strings.Contains(mmd, want) {
			t.Errorf("Mermaid output lacks %q:\n%s", want, mmd)
		}
	}
	// Nothing to draw is not a reason to panic.
	_ = DOT(nil) + Mermaid(nil) + DOT(&fsm.Machine{}) + Mermaid(&fsm.Machine{})
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		30 * time.Second:                     "30s",
		time.Minute:                          "1m",
		90 * time.Second:                     "1m30s",
		time.Hour:                            "1h",
		time.Hour + time.Second:              "1h0m1s",
		1500 * time.Millisecond:              "1.5s",
		2*time.Hour + 30*time.Minute:         "2h30m",
		fsm.MaxDelay:                         "8784h",
		MaxTimeout:                           "720h",
		5*time.Minute + 500*time.Millisecond: "5m0.5s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
