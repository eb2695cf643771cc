package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/internal/config"
	"github.com/dfsmr/dfsmr/server"
	"github.com/spf13/pflag"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dfsmrd.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// TestConfigPrecedence fills server.Config from a file named by
// DFSMR_CONFIG, the environment and flags: flag > env > file > default.
func TestConfigPrecedence(t *testing.T) {
	file := writeConfig(t, "addr: 127.0.0.1:7001\ndb: file.db\nstop_timeout: 30s\nlog_format: json\n")
	env := envOf(map[string]string{"DFSMR_CONFIG": file, "DFSMR_DB": "env.db", "DFSMR_LOG_LEVEL": "warn"})
	cfg, done, err := loadConfig([]string{"--log-level", "debug"}, env, io.Discard, io.Discard)
	if err != nil || done {
		t.Fatalf("loadConfig: done %v, err %v", done, err)
	}
	if cfg.Addr != "127.0.0.1:7001" || cfg.DB != "env.db" || cfg.StopTimeout != 30*time.Second ||
		cfg.LogFormat != "json" || cfg.LogLevel != "debug" || cfg.MetricsAddr != "" {
		t.Fatalf("config %+v", cfg)
	}
}

func TestPrintConfig(t *testing.T) {
	var out bytes.Buffer
	_, done, err := loadConfig([]string{"--print-config", "--metrics-addr", ":9464", "--stop-timeout", "2m"}, envOf(nil), &out, io.Discard)
	if err != nil || !done {
		t.Fatalf("loadConfig: done %v, err %v", done, err)
	}
	for _, want := range []string{"addr: 127.0.0.1:5003\n", "stop_timeout: 2m0s\n", "metrics_addr: :9464\n", "log_level: info\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("printout lacks %q:\n%s", want, out.String())
		}
	}
	// The printout is itself a valid config file that yields the same.
	cfg, _, err := loadConfig([]string{"--config", writeConfig(t, out.String())}, envOf(nil), io.Discard, io.Discard)
	if err != nil || cfg.StopTimeout != 2*time.Minute || cfg.MetricsAddr != ":9464" {
		t.Fatalf("printout reloaded: %+v, %v", cfg, err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", writeConfig(t, "addr: x:1\nstop_timout: 1s\n")}, "line 2: field stop_timout not found"},
		{[]string{"--config", filepath.Join(t.TempDir(), "missing.yaml")}, "config file"},
		{[]string{"--stop-timeout", "-1s"}, "stop timeout must not be negative"},
		{[]string{"--log-format", "xml"}, `log format "xml"`},
		{[]string{"--pprof"}, "pprof needs a metrics address"},
		{[]string{"--metrics-addr", "9464"}, "metrics address"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	} {
		_, _, err := loadConfig(tc.args, envOf(nil), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want %q", tc.args, err, tc.want)
		}
	}
	var stderr bytes.Buffer
	if code := run([]string{"--log-level", "loud"}, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "log level") {
		t.Errorf("run with a bad level: exit %d, stderr %q", code, stderr.String())
	}
}

// TestEverySettingDocumented checks that the operator guide (or, for
// security settings, the security guide) has a table row naming each
// setting's file key, flag and environment variable.
func TestEverySettingDocumented(t *testing.T) {
	var docs string
	for _, name := range []string{"operations.md", "security.md"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "docs", name))
		if err != nil && !(name == "security.md" && os.IsNotExist(err)) {
			t.Fatal(err)
		}
		docs += string(b)
	}
	cfg := server.Config{}
	b := config.Bind(pflag.NewFlagSet("x", pflag.ContinueOnError), &cfg, envPrefix)
	for _, s := range b.Settings() {
		row := fmt.Sprintf("| `%s` | `%s` | `%s` |", s[0], s[1], s[2])
		if !strings.Contains(docs, row) {
			t.Errorf("docs/operations.md (or security.md) has no row starting %s", row)
		}
	}
}
