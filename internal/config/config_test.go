package config_test

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/internal/config"
	"github.com/spf13/pflag"
)

type tlsGroup struct {
	CertFile string `yaml:"cert_file" help:"certificate file"`
	Password string `yaml:"password" secret:"true"`
}

type testConfig struct {
	Addr    string        `yaml:"addr" help:"listen address"`
	Timeout time.Duration `yaml:"stop_timeout"`
	Workers int           `yaml:"workers"`
	Ratio   float64       `yaml:"ratio"`
	Verbose bool          `yaml:"verbose"`
	Peers   []string      `yaml:"peers"`
	TLS     tlsGroup      `yaml:"tls"`
	Ignored string        `yaml:"-"`
	private string
}

func defaults() testConfig {
	return testConfig{Addr: "default:1", Timeout: time.Second, Workers: 1, private: "p"}
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dfsmr.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func load(t *testing.T, args []string, env map[string]string, file string) (testConfig, error) {
	t.Helper()
	c := defaults()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	b := config.Bind(fs, &c, "DFSMR")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	err := b.Load(file, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	return c, err
}

// TestPrecedence sets each setting from a different mix of sources: the
// flag beats the environment, which beats the file, which beats the
// default; a source that says nothing leaves the lower one in place.
func TestPrecedence(t *testing.T) {
	file := writeFile(t, `
addr: file:1
stop_timeout: 5s
workers: 3
ratio: 0.5
peers: [a, b]
tls:
  cert_file: file.pem
`)
	env := map[string]string{
		"DFSMR_ADDR":          "env:1",
		"DFSMR_WORKERS":       "4",
		"DFSMR_TLS_CERT_FILE": "env.pem",
		"DFSMR_VERBOSE":       "true",
	}
	args := []string{"--addr", "flag:1", "--tls-password=s3cret", "--peers", "x, y"}
	got, err := load(t, args, env, file)
	if err != nil {
		t.Fatal(err)
	}
	want := testConfig{
		Addr:    "flag:1",           // flag > env > file > default
		Timeout: 5 * time.Second,    // file > default
		Workers: 4,                  // env > file
		Ratio:   0.5,                // file only
		Verbose: true,               // env only
		Peers:   []string{"x", "y"}, // flag > file
		TLS:     tlsGroup{CertFile: "env.pem", Password: "s3cret"},
		private: "p",
	}
	if got.Addr != want.Addr || got.Timeout != want.Timeout || got.Workers != want.Workers ||
		got.Ratio != want.Ratio || got.Verbose != want.Verbose || strings.Join(got.Peers, ",") != "x,y" ||
		got.TLS != want.TLS || got.private != "p" {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}

	none, err := load(t, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if d := defaults(); none.Addr != d.Addr || none.Timeout != d.Timeout || none.Workers != d.Workers {
		t.Fatalf("no sources: got %+v, want the defaults %+v", none, d)
	}
}

func TestBoolFlagWithoutValue(t *testing.T) {
	got, err := load(t, []string{"--verbose"}, map[string]string{"DFSMR_VERBOSE": "false"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Verbose {
		t.Fatal("--verbose did not beat DFSMR_VERBOSE=false")
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		file string
		want string
	}{
		{name: "unknown key", file: "addr: x\nworkerz: 3\n", want: "line 2: field workerz not found"},
		{name: "unknown nested key", file: "tls:\n  cert_file: a\n  key: b\n", want: "line 3: field key not found"},
		{name: "yaml-ignored field", file: "ignored: x\n", want: "line 1: field ignored not found"},
		{name: "bad file duration", file: "stop_timeout: soon\n", want: "line 1"},
		{name: "bad env", env: map[string]string{"DFSMR_WORKERS": "many"}, want: `environment DFSMR_WORKERS: "many" is not a valid int`},
		{name: "bad env duration", env: map[string]string{"DFSMR_STOP_TIMEOUT": "5"}, want: "environment DFSMR_STOP_TIMEOUT"},
		{name: "bad flag", args: []string{"--ratio", "half"}, want: `invalid argument "half" for "--ratio" flag: "half" is not a valid float64`},
		{name: "unknown flag", args: []string{"--nope"}, want: "unknown flag: --nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := ""
			if tc.file != "" {
				file = writeFile(t, tc.file)
			}
			_, err := load(t, tc.args, tc.env, file)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestEmptyFile(t *testing.T) {
	got, err := load(t, nil, nil, writeFile(t, "# nothing set\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Addr != defaults().Addr {
		t.Fatalf("addr %q, want the default", got.Addr)
	}
}

// TestRedactedRoundTrip prints a configuration and loads the printout back
// as a file: everything but the secret survives, and the secret is hidden.
func TestRedactedRoundTrip(t *testing.T) {
	c := testConfig{Addr: "h:1", Timeout: 90 * time.Second, Workers: 7, Ratio: 0.25, Verbose: true,
		Peers: []string{"a", "b"}, TLS: tlsGroup{CertFile: "c.pem", Password: "hunter2"}}
	b := config.Bind(pflag.NewFlagSet("x", pflag.ContinueOnError), &c, "DFSMR")
	out, err := b.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	if strings.Contains(text, "hunter2") || !strings.Contains(text, "password: "+config.Redaction) {
		t.Fatalf("secret not redacted:\n%s", text)
	}
	if !strings.Contains(text, "stop_timeout: 1m30s") {
		t.Fatalf("duration not written as read:\n%s", text)
	}
	back, err := load(t, nil, nil, writeFile(t, text))
	if err != nil {
		t.Fatalf("printout does not load: %v\n%s", err, text)
	}
	c.TLS.Password = config.Redaction
	if back.Addr != c.Addr || back.Timeout != c.Timeout || back.Workers != c.Workers || back.Ratio != c.Ratio ||
		back.Verbose != c.Verbose || strings.Join(back.Peers, ",") != "a,b" || back.TLS != c.TLS {
		t.Fatalf("round trip: got %+v, want %+v\n%s", back, c, text)
	}
}

func TestSettingsNamesEverySource(t *testing.T) {
	var c testConfig
	b := config.Bind(pflag.NewFlagSet("x", pflag.ContinueOnError), &c, "DFSMR")
	got := b.Settings()
	want := [4]string{"tls.cert_file", "--tls-cert-file", "DFSMR_TLS_CERT_FILE", "certificate file"}
	if len(got) != 8 || got[6] != want {
		t.Fatalf("settings %v, want 8 with %v seventh", got, want)
	}
}

func TestBindRejectsUnsupportedTypes(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Bind accepted a map setting")
		}
	}()
	var c struct {
		M map[string]string `yaml:"m"`
	}
	config.Bind(pflag.NewFlagSet("x", pflag.ContinueOnError), &c, "DFSMR")
}
