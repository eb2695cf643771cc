package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// settingRow is a row of the settings tables in docs/operations.md and
// docs/security.md: file key, flag, variable, default.
var settingRow = regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| `--[a-z-]+` \\| `DFSMR_[A-Z_]+` \\| ([^|]*) \\|")

// TestDocumentedDefaults checks that every default the guides give as one
// literal value (`10s`, `1000`) is the one --print-config prints.
func TestDocumentedDefaults(t *testing.T) {
	var out bytes.Buffer
	if _, _, err := loadConfig([]string{"--print-config"}, envOf(nil), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, name := range []string{"operations.md", "security.md"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "docs", name))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range settingRow.FindAllStringSubmatch(string(b), -1) {
			key, def := m[1], strings.TrimSpace(m[2])
			if !strings.HasPrefix(def, "`") || !strings.HasSuffix(def, "`") || strings.Count(def, "`") != 2 {
				continue // "none (off)" and the like: not a literal
			}
			checked++
			if want := key + ": " + strings.Trim(def, "`") + "\n"; !strings.Contains(out.String(), want) {
				t.Errorf("docs/%s: %s defaults to %s, but --print-config prints:\n%s", name, key, def, out.String())
			}
		}
	}
	if checked < 10 {
		t.Fatalf("checked only %d documented defaults: the table format changed?", checked)
	}
}

// TestDocumentedRefusal runs the command docs/security.md shows and checks
// that the guide quotes its output and exit status.
func TestDocumentedRefusal(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?m)^\\$ dfsmrd (.*)\n(dfsmrd: refusing .*)\n").FindStringSubmatch(string(b))
	if m == nil {
		t.Fatal("docs/security.md shows no refused start")
	}
	var stderr bytes.Buffer
	code := run(strings.Fields(m[1]), io.Discard, &stderr)
	if code != 2 || !strings.Contains(string(b), "exit status 2") {
		t.Errorf("exit status %d; the guide must say it", code)
	}
	if got := strings.TrimSpace(stderr.String()); got != m[2] {
		t.Errorf("dfsmrd %s printed\n%s\nthe guide says\n%s", m[1], got, m[2])
	}
}
