package version

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		name string
		info debug.BuildInfo
		want string
	}{
		{"tagged release", debug.BuildInfo{GoVersion: "go1.26.7", Main: debug.Module{Version: "v1.2.0"}},
			"dfsmrd v1.2.0 (go1.26.7)"},
		{"checkout with changes", debug.BuildInfo{GoVersion: "go1.26.7", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.modified", Value: "true"},
		}}, "dfsmrd (devel) (revision 0123abcd, modified, go1.26.7)"},
		{"clean checkout", debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261204-0123abcd"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.modified", Value: "false"},
		}}, "dfsmrd v0.0.0-20261204-0123abcd (revision 0123abcd)"},
		{"nothing recorded", debug.BuildInfo{}, "dfsmrd (devel)"},
	} {
		if got := format("dfsmrd", &tc.info); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestStringOfThisBinary reads the test binary's own build information,
// which has no module version but does have the Go version.
func TestStringOfThisBinary(t *testing.T) {
	got := String("x")
	if !strings.HasPrefix(got, "x ") || !strings.Contains(got, "go1.") {
		t.Fatalf("String = %q", got)
	}
}

// TestRevisionOfABuiltBinary builds a program with VCS stamping in a fresh
// git repository and checks that its version line names the commit.
func TestRevisionOfABuiltBinary(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Fatal("git is needed to stamp a revision:", err)
	}
	// The package is internal: the program gets a copy of it in a module
	// of its own, committed to a repository of its own.
	dir := t.TempDir()
	src, err := os.ReadFile("version.go")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/v\n\ngo 1.26\n")
	write("internal/version/version.go", string(src))
	write("main.go", "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/v/internal/version\"\n)\n\nfunc main() { fmt.Println(version.String(\"v\")) }\n")
	cmd := func(name string, args ...string) string {
		t.Helper()
		c := exec.Command(name, args...)
		c.Dir = dir
		c.Env = append(os.Environ(), "GOFLAGS=-buildvcs=true", "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	cmd(git, "init", "-q")
	cmd(git, "add", ".")
	cmd(git, "commit", "-q", "-m", "x")
	rev := cmd(git, "rev-parse", "HEAD")
	got := cmd("go", "run", ".")
	if !strings.Contains(got, "revision "+rev) || strings.Contains(got, "modified") {
		t.Fatalf("clean checkout: %q, want revision %s, not modified", got, rev)
	}
	write("extra.txt", "uncommitted\n")
	if got := cmd("go", "run", "."); !strings.Contains(got, "revision "+rev+", modified") {
		t.Fatalf("checkout with a new file: %q, want revision %s, modified", got, rev)
	}
}
