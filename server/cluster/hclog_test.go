package cluster

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHCLogger(t *testing.T) {
	var buf bytes.Buffer
	l := newHCLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	l.Info("not shown")
	l.Named("raft").Named("net").With("peer", "n2").Warn("shown", "k", 1)
	l.Error("error line")
	got := buf.String()
	for _, want := range []string{`level=WARN msg=shown peer=n2 logger=raft.net k=1`, `level=ERROR msg="error line"`} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "not shown") {
		t.Errorf("an info line passed a warn handler:\n%s", got)
	}
	if l.IsInfo() || !l.IsWarn() || l.GetLevel() != hclog.Warn {
		t.Errorf("IsInfo %v IsWarn %v GetLevel %v", l.IsInfo(), l.IsWarn(), l.GetLevel())
	}
	debug := newHCLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if !debug.IsDebug() || debug.IsTrace() {
		t.Errorf("a debug handler: IsDebug %v IsTrace %v", debug.IsDebug(), debug.IsTrace())
	}
	buf.Reset()
	debug.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Error}).Print("from the log package")
	if !strings.Contains(buf.String(), `level=ERROR msg="from the log package"`) {
		t.Errorf("standard logger wrote %q", buf.String())
	}
}
