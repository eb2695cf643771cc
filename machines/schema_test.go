package machines

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/dfsmr/dfsmr/server/fsm"
)

// TestSchemaInSync regenerates the JSON Schema from the compiler's tables
// and compares it with the committed file (go test -update rewrites it).
func TestSchemaInSync(t *testing.T) {
	got, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(SchemaFile, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(SchemaFile)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is out of date with the compiler: run go test ./machines -run TestSchemaInSync -update", SchemaFile)
	}
}

// TestSchemaCoversKeys: a key the compiler accepts but the schema does not
// know (or the reverse) stops Schema.
func TestSchemaCoversKeys(t *testing.T) {
	keyDocs["breaker.unknown"] = "a key no compiler list has"
	_, err := Schema()
	delete(keyDocs, "breaker.unknown")
	if err == nil || !strings.Contains(err.Error(), "breaker.unknown") {
		t.Fatalf("Schema with a stray key: %v", err)
	}
	saved := keyDocs["retry.jitter"]
	delete(keyDocs, "retry.jitter")
	_, err = Schema()
	keyDocs["retry.jitter"] = saved
	if err == nil || !strings.Contains(err.Error(), "retry.jitter") {
		t.Fatalf("Schema with an undocumented key: %v", err)
	}
}

// TestBundledSchemaLine: every bundled definition names the schema for
// yaml-language-server.
func TestBundledSchemaLine(t *testing.T) {
	for _, src := range Bundled() {
		if first, _, _ := strings.Cut(string(src.Data), "\n"); first != "# yaml-language-server: $schema=./"+SchemaFile {
			t.Errorf("%s starts with %q, want the yaml-language-server schema line", src.File, first)
		}
	}
}

// TestSchemaValidates checks definitions against the committed schema with
// validate below: the bundled ones and the valid test definitions pass,
// definitions with shape errors the compiler reports fail.
func TestSchemaValidates(t *testing.T) {
	raw, err := os.ReadFile(SchemaFile)
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	check := func(name string, src []byte) error {
		var doc any
		if err := yaml.Unmarshal(src, &doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return validate(schema, schema, doc, "")
	}
	valid := map[string]string{
		"rewritten report": reportRewritten,
		"breaker off":      "id: b\nbreaker: off\nnodes: {a: {start: true, transitions: {ok: z}}, z: {final: true}}\n",
		"breaker block":    "id: b\nbreaker: {window: 10, min_outcomes: 5, open_share: 0.8, close_share: 0.1, close_streak: 2, delay: 1s}\nnodes: {a: {start: true, transitions: {ok: z}}, z: {final: true}}\n",
	}
	for _, src := range Bundled() {
		valid[src.File] = string(src.Data)
	}
	for name, src := range valid {
		if _, err := CompileWith(name, []byte(src), bundledResolver(t)); err != nil {
			t.Fatalf("%s does not compile: %v", name, err)
		}
		if err := check(name, []byte(src)); err != nil {
			t.Errorf("%s: schema refuses what the compiler accepts: %v", name, err)
		}
	}
	// Invalid test files whose problem is one of shape, which the schema
	// can see (the others are about the graph or other machines).
	for _, file := range []string{
		"bad_breaker.yaml", "bad_breaker_scalar.yaml", "bad_duration.yaml", "bad_enum.yaml", "bad_names.yaml",
		"bad_timeout.yaml", "empty_nodes.yaml", "missing_required.yaml", "negative_duration.yaml",
		"not_a_mapping.yaml", "reserved_name.yaml", "unknown_field.yaml", "wrong_type.yaml",
	} {
		src, err := os.ReadFile(filepath.Join("testdata", "invalid", file))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Compile(file, src); err == nil {
			t.Fatalf("%s compiles", file)
		}
		if err := check(file, src); err == nil {
			t.Errorf("%s: schema accepts what the compiler refuses", file)
		} else {
			t.Logf("%s: %v", file, err)
		}
	}
}

// validate is the part of JSON Schema draft-07 that the machine schema
// uses: type, enum, const, pattern, length and number bounds, object
// properties, required, additionalProperties, propertyNames, property
// counts, array items and counts, oneOf, allOf and local $ref.
func validate(root, s map[string]any, v any, path string) error {
	if r, ok := s["$ref"].(string); ok {
		def := root
		for _, part := range strings.Split(strings.TrimPrefix(r, "#/"), "/") {
			def = def[part].(map[string]any)
		}
		return validate(root, def, v, path)
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...))
	}
	if all, ok := s["allOf"].([]any); ok {
		for _, sub := range all {
			if err := validate(root, sub.(map[string]any), v, path); err != nil {
				return err
			}
		}
	}
	if one, ok := s["oneOf"].([]any); ok {
		matched := 0
		var errs []string
		for _, sub := range one {
			if err := validate(root, sub.(map[string]any), v, path); err == nil {
				matched++
			} else {
				errs = append(errs, err.Error())
			}
		}
		if matched != 1 {
			return fail("matches %d of oneOf, want 1 (%s)", matched, strings.Join(errs, "; "))
		}
	}
	if c, ok := s["const"]; ok && !equal(c, v) {
		return fail("%v is not %v", v, c)
	}
	if enum, ok := s["enum"].([]any); ok {
		found := false
		for _, e := range enum {
			found = found || equal(e, v)
		}
		if !found {
			return fail("%v is not one of %v", v, enum)
		}
	}
	if typ, ok := s["type"].(string); ok {
		if got := typeOf(v); got != typ && (typ != "number" || got != "integer") {
			return fail("is %s, want %s", got, typ)
		}
	}
	switch x := v.(type) {
	case string:
		if p, ok := s["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(x) {
			return fail("%q does not match %s", x, p)
		}
		if n, ok := s["maxLength"].(float64); ok && float64(len([]rune(x))) > n {
			return fail("longer than %v", n)
		}
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		required, _ := s["required"].([]any)
		for _, r := range required {
			if _, ok := x[r.(string)]; !ok {
				return fail("%s is required", r)
			}
		}
		if n, ok := s["minProperties"].(float64); ok && float64(len(x)) < n {
			return fail("fewer than %v properties", n)
		}
		if n, ok := s["maxProperties"].(float64); ok && float64(len(x)) > n {
			return fail("more than %v properties", n)
		}
		for k, val := range x {
			if pn, ok := s["propertyNames"].(map[string]any); ok {
				if err := validate(root, pn, k, path+"."+k); err != nil {
					return err
				}
			}
			if ps, ok := props[k].(map[string]any); ok {
				if err := validate(root, ps, val, path+"."+k); err != nil {
					return err
				}
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case bool:
				if !ap {
					return fail("unknown property %q", k)
				}
			case map[string]any:
				if err := validate(root, ap, val, path+"."+k); err != nil {
					return err
				}
			}
		}
	case []any:
		if n, ok := s["minItems"].(float64); ok && float64(len(x)) < n {
			return fail("fewer than %v items", n)
		}
		if n, ok := s["maxItems"].(float64); ok && float64(len(x)) > n {
			return fail("more than %v items", n)
		}
		if items, ok := s["items"].(map[string]any); ok {
			for i, it := range x {
				if err := validate(root, items, it, fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
		}
	default:
		f, isNum := number(v)
		if !isNum {
			break
		}
		if n, ok := s["minimum"].(float64); ok && f < n {
			return fail("%v is below %v", f, n)
		}
		if n, ok := s["maximum"].(float64); ok && f > n {
			return fail("%v is above %v", f, n)
		}
		if n, ok := s["exclusiveMinimum"].(float64); ok && f <= n {
			return fail("%v is not above %v", f, n)
		}
		if n, ok := s["exclusiveMaximum"].(float64); ok && f >= n {
			return fail("%v is not below %v", f, n)
		}
	}
	return nil
}

// number reads a YAML or JSON number as a float64.
func number(v any) (float64, bool) {
	switch x := v.(type) {
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

func typeOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	}
	if f, ok := number(v); ok {
		if f == math.Trunc(f) {
			if _, isFloat := v.(float64); !isFloat {
				return "integer"
			}
		}
		return "number"
	}
	return fmt.Sprintf("%T", v)
}

func equal(a, b any) bool {
	fa, aNum := number(a)
	fb, bNum := number(b)
	if aNum || bNum {
		return aNum && bNum && fa == fb
	}
	return a == b
}

// TestReadmeReference: the README's example definition compiles and the
// schema accepts it, and its breaker table states the compiler's defaults
// and limits.
func TestReadmeReference(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(raw), "\n## Machine definitions\n")
	section, _, _ = strings.Cut(section, "\n## ")
	_, example, _ := strings.Cut(section, "```yaml\n")
	example, _, _ = strings.Cut(example, "```")
	if _, err := Compile("README.md", []byte(example)); err != nil {
		t.Fatalf("the README's example: %v", err)
	}
	schemaRaw, err := os.ReadFile(SchemaFile)
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(schemaRaw, &schema); err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal([]byte(example), &doc); err != nil {
		t.Fatal(err)
	}
	if err := validate(schema, schema, doc, ""); err != nil {
		t.Errorf("the README's example against the schema: %v", err)
	}

	p := fsm.DefaultBreakerPolicy()
	rows := map[string][2]string{
		"window":       {fmt.Sprint(p.Window), fmt.Sprintf("1..%d", fsm.MaxBreakerWindow)},
		"min_outcomes": {fmt.Sprint(p.MinOutcomes), "1..`window`"},
		"open_share":   {fmt.Sprint(p.OpenShare), "(0, 1]"},
		"close_share":  {fmt.Sprint(p.CloseShare), "0..`open_share`"},
		"close_streak": {fmt.Sprint(p.CloseStreak), fmt.Sprintf("1..%d", fsm.MaxBreakerCloseStreak)},
		"delay":        {FormatDuration(p.Delay), "0.." + FormatDuration(fsm.MaxDelay)},
	}
	for key, want := range rows {
		row := fmt.Sprintf("| `%s` | %s | %s |", key, want[0], want[1])
		if !strings.Contains(section, row) {
			t.Errorf("README breaker table: no row starting %q", row)
		}
	}
	for _, k := range breakerKeys {
		if _, ok := rows[k]; !ok {
			t.Errorf("breaker key %s not checked against the README", k)
		}
	}
}
