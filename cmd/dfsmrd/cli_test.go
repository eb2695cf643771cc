package main

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/store/bolt"
)

// TestHelpOnStdout: --help is asked for, so it goes to stdout and exits 0.
func TestHelpOnStdout(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--help"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	for _, want := range []string{"Usage:\n  dfsmrd [flags]", "--addr string", "--stop-timeout duration", "--print-config", "--version"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, stdout.String())
		}
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr %q, want nothing", stderr.String())
	}
}

// TestUsageErrorsSaidOnce: a wrong command line is one line and a hint,
// on stderr, exit 2; a flag with one dash names the flag that was meant.
func TestUsageErrorsSaidOnce(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--nope"}, "dfsmrd: unknown flag: --nope\nRun 'dfsmrd --help' for usage.\n"},
		{[]string{"-addr", "x:1"}, "dfsmrd: unknown shorthand flag: 'a' in -addr (flags take two dashes: --addr)\nRun 'dfsmrd --help' for usage.\n"},
		{[]string{"--stop-timeout", "soon"}, "dfsmrd: invalid argument \"soon\" for \"--stop-timeout\" flag: \"soon\" is not a valid time.Duration: time: invalid duration \"soon\"\nRun 'dfsmrd --help' for usage.\n"},
		{[]string{"extra"}, "dfsmrd: unexpected argument \"extra\"\nRun 'dfsmrd --help' for usage.\n"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, &stdout, &stderr)
		if code != exitUsage || stderr.String() != tc.want || stdout.Len() != 0 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and stderr %q", tc.args, code, stdout.String(), stderr.String(), tc.want)
		}
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--version"}, &stdout, &stderr); code != exitOK || stderr.Len() != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	if out := stdout.String(); !strings.HasPrefix(out, "dfsmrd ") || !strings.Contains(out, "go1.") || strings.Count(out, "\n") != 1 {
		t.Fatalf("--version printed %q, want one line naming dfsmrd and its Go version", out)
	}
}

// TestBusyPortLeavesDatabaseAlone: dfsmrd listens before it opens the
// database, so a second one started on a busy port neither creates nor
// locks a database file.
func TestBusyPortLeavesDatabaseAlone(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	db := filepath.Join(t.TempDir(), "x.db")
	var stderr bytes.Buffer
	if code := run([]string{"--addr", busy.Addr().String(), "--db", db}, &bytes.Buffer{}, &stderr); code != exitFailed {
		t.Fatalf("exit %d, want %d; stderr %q", code, exitFailed, stderr.String())
	}
	if !strings.Contains(stderr.String(), "listen failed") || !strings.Contains(stderr.String(), "address already in use") {
		t.Errorf("stderr %q does not say the port is busy", stderr.String())
	}
	if _, err := os.Stat(db); !os.IsNotExist(err) {
		t.Fatalf("stat %s after the failed start: %v; want it not to exist", db, err)
	}
}

// TestLogsAbsoluteDatabasePath: a relative --db is logged as the absolute
// path of the file it names.
func TestLogsAbsoluteDatabasePath(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "--addr", "127.0.0.1:0", "--db", "rel.db")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), childEnv+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	serving := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "msg=serving") {
				serving <- sc.Text()
			}
		}
		close(serving)
	}()
	select {
	case line := <-serving:
		if want := "db=" + filepath.Join(dir, "rel.db"); !strings.Contains(line, want) {
			t.Fatalf("serving line %q lacks %q", line, want)
		}
	case <-time.After(time.Minute):
		t.Fatal("dfsmrd did not log serving in a minute")
	}
}

// TestCheckCommand: dfsmrd check FILE exits 0 with a summary for a sound
// file, 1 naming the damage for a truncated one, 2 without a file.
func TestCheckCommand(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dfsmr.db")
	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"check", path}, &stdout, &stderr); code != exitOK || !strings.Contains(stdout.String(), "OK: no problems found") {
		t.Fatalf("check of a sound file: exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b[:len(b)/2+100], 0o600); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"check", path}, &stdout, &stderr); code != exitFailed || !strings.Contains(stderr.String(), "truncated") || !strings.Contains(stderr.String(), path) {
		t.Fatalf("check of a truncated file: exit %d, stdout %q, stderr %q; want exit 1 naming the file and the truncation", code, stdout.String(), stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"check"}, &stdout, &stderr); code != exitUsage {
		t.Fatalf("check without a file: exit %d, stderr %q", code, stderr.String())
	}
}
