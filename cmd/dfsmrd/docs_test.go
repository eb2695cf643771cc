package main

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
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

// logMethods are the slog.Logger methods whose first argument is the
// message; the ...Context ones take a context first.
var logMethods = map[string]int{
	"Debug": 0, "Info": 0, "Warn": 0, "Error": 0,
	"DebugContext": 1, "InfoContext": 1, "WarnContext": 1, "ErrorContext": 1,
}

// TestEveryLogMessageDocumented finds every log call with a literal
// message in dfsmrd and the server packages and checks that
// docs/operations.md names the message.
func TestEveryLogMessageDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, root := range []string{".", filepath.Join("..", "..", "server")} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			// The simulator and the store's test suite are not the server.
			if d.IsDir() && (d.Name() == "sim" || d.Name() == "storetest" || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				i, ok := logMethods[sel.Sel.Name]
				if !ok || len(call.Args) <= i {
					return true
				}
				lit, ok := call.Args[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					return true
				}
				msg, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				found++
				if !strings.Contains(string(doc), "`"+msg+"`") {
					t.Errorf("%s logs %q; docs/operations.md does not list it", path, msg)
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if found < 20 {
		t.Fatalf("found only %d log messages", found)
	}
}
