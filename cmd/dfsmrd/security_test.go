package main

import (
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dfsmr/dfsmr/server"
)

func TestRefusesExposedPlaintextInOneLine(t *testing.T) {
	var out strings.Builder
	db := filepath.Join(t.TempDir(), "dfsmr.db")
	if code := run([]string{"--addr", "0.0.0.0:0", "--db", db}, &out); code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "refusing to listen on 0.0.0.0:0") || !strings.Contains(lines[0], "--insecure") {
		t.Fatalf("stderr:\n%s\nwant one line refusing and naming --insecure", out.String())
	}
}

func TestSecurityFlagsFromEnvironment(t *testing.T) {
	t.Setenv("DFSMR_RATE_LIMIT", "fast")
	var out strings.Builder
	if code := run([]string{"--db", filepath.Join(t.TempDir(), "dfsmr.db")}, &out); code != 2 || !strings.Contains(out.String(), "DFSMR_RATE_LIMIT") {
		t.Fatalf("exit %d, stderr %q; want 2 naming DFSMR_RATE_LIMIT", code, out.String())
	}
	// The variable applies, and the command line wins over it.
	t.Setenv("DFSMR_RATE_LIMIT", "5")
	t.Setenv("DFSMR_INSECURE", "true")
	for _, tc := range []struct {
		args []string
		want float64
	}{{nil, 5}, {[]string{"--rate-limit", "7"}, 7}} {
		fs := flag.NewFlagSet("dfsmrd", flag.ContinueOnError)
		var cfg server.Config
		securityFlags(fs, &cfg)
		if err := setFromEnv(fs); err != nil {
			t.Fatal(err)
		}
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if cfg.RateLimit != tc.want || !cfg.Insecure {
			t.Errorf("args %v: rate %g insecure %v; want %g and true", tc.args, cfg.RateLimit, cfg.Insecure, tc.want)
		}
	}
}
