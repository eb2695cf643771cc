package machines

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzCompile feeds arbitrary text to Compile. Whatever the input: no panic,
// errors within MaxErrors, and a machine that compiles is sound, renders,
// and fingerprints the same every time.
func FuzzCompile(f *testing.F) {
	for _, s := range Bundled() {
		f.Add(s.Data)
	}
	files, err := filepath.Glob(filepath.Join("testdata", "invalid", "*.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(reportRewritten))
	f.Add([]byte("id: a\nnodes: {a: {start: true, transitions: {ok: {to: b, delay: 1s, signal: true}}}, b: {final: true}}\n"))

	raw, err := os.ReadFile(SchemaFile)
	if err != nil {
		f.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("id: a\nbreaker: {window: 4, min_outcomes: 4, delay: +1.5m}\nnodes: {a: {start: true, timeout: -0s, transitions: {ok: b}}, b: {final: true}}\n"))

	f.Fuzz(func(t *testing.T, src []byte) {
		m, err := Compile("fuzz.yaml", src)
		if err != nil {
			if m != nil {
				t.Fatal("Compile returned both a machine and an error")
			}
			es := AsValidationErrors(err)
			if len(es) == 0 || len(es) > MaxErrors {
				t.Fatalf("%d validation errors in %v", len(es), err)
			}
			for _, e := range es {
				if e.Reason == "" || e.Line < 0 || e.Column < 0 {
					t.Fatalf("malformed error %+v", e)
				}
			}
			return
		}
		checkSound(t, m)
		// The schema never refuses what the compiler accepts: an editor
		// must not flag a valid definition.
		var doc any
		if err := yaml.Unmarshal(src, &doc); err != nil {
			t.Fatalf("compiles but does not decode: %v", err)
		}
		if err := validate(schema, schema, doc, ""); err != nil {
			t.Fatalf("compiles but the schema refuses it: %v", err)
		}
		fp := Fingerprint(m)
		if again := Fingerprint(m); again != fp {
			t.Fatalf("Fingerprint not stable: %s then %s", fp, again)
		}
		_ = DOT(m)
		_ = Mermaid(m)
		m2, err := Compile("fuzz.yaml", src)
		if err != nil {
			t.Fatalf("second Compile failed: %v", err)
		}
		if fp2 := Fingerprint(m2); fp2 != fp {
			t.Fatalf("two compilations differ: %s vs %s", fp, fp2)
		}
	})
}
