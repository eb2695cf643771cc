package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
)

func TestRefusesExposedPlaintextInOneLine(t *testing.T) {
	var out strings.Builder
	db := filepath.Join(t.TempDir(), "dfsmr.db")
	if code := run([]string{"--addr", "0.0.0.0:0", "--db", db}, io.Discard, &out); code != 2 {
		t.Fatalf("exit %d, want 2; stderr:\n%s", code, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "refusing to listen on 0.0.0.0:0") || !strings.Contains(lines[0], "--insecure") {
		t.Fatalf("stderr:\n%s\nwant one line refusing and naming --insecure", out.String())
	}
}

func TestSecuritySettingsFromEnvironment(t *testing.T) {
	_, _, err := loadConfig(nil, envOf(map[string]string{"DFSMR_RATE_LIMIT": "fast"}), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "DFSMR_RATE_LIMIT") {
		t.Fatalf("err %v; want one naming DFSMR_RATE_LIMIT", err)
	}
	// The variable applies, and the command line wins over it.
	env := envOf(map[string]string{"DFSMR_RATE_LIMIT": "5", "DFSMR_INSECURE": "true"})
	for _, tc := range []struct {
		args []string
		want float64
	}{{nil, 5}, {[]string{"--rate-limit", "7"}, 7}} {
		cfg, _, err := loadConfig(tc.args, env, io.Discard, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.RateLimit != tc.want || !cfg.Insecure {
			t.Errorf("args %v: rate %g insecure %v; want %g and true", tc.args, cfg.RateLimit, cfg.Insecure, tc.want)
		}
	}
}
