package cluster

import (
	"context"
	"io"
	"log"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// levelTrace is below slog's Debug: raft's trace lines show only when the
// handler's level is set that low.
const levelTrace = slog.LevelDebug - 4

// hcLogger routes hashicorp's hclog (raft, raft-wal) into our slog logger.
// Level changes through hclog are ignored: the slog handler decides.
type hcLogger struct {
	base    *slog.Logger // with the implied args, without the name
	l       *slog.Logger // base with the name
	name    string
	implied []any
}

func newHCLogger(l *slog.Logger) hclog.Logger { return &hcLogger{base: l, l: l} }

func (h *hcLogger) derive(base *slog.Logger, name string, implied []any) *hcLogger {
	l := base
	if name != "" {
		l = base.With("logger", name)
	}
	return &hcLogger{base: base, l: l, name: name, implied: implied}
}

func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return levelTrace
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

func (h *hcLogger) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Warn && routine[msg] {
		level = hclog.Info
	}
	h.l.Log(context.Background(), slogLevel(level), msg, args...)
}

// routine are raft's warnings that every start of a server gives: a
// server hears from no leader before the first election, and one alone
// elects itself that way.
var routine = map[string]bool{
	"heartbeat timeout reached, starting election": true,
}

func (h *hcLogger) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hcLogger) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hcLogger) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hcLogger) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hcLogger) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hcLogger) enabled(level hclog.Level) bool {
	return h.l.Enabled(context.Background(), slogLevel(level))
}

func (h *hcLogger) IsTrace() bool { return h.enabled(hclog.Trace) }
func (h *hcLogger) IsDebug() bool { return h.enabled(hclog.Debug) }
func (h *hcLogger) IsInfo() bool  { return h.enabled(hclog.Info) }
func (h *hcLogger) IsWarn() bool  { return h.enabled(hclog.Warn) }
func (h *hcLogger) IsError() bool { return h.enabled(hclog.Error) }

func (h *hcLogger) ImpliedArgs() []any { return h.implied }

func (h *hcLogger) With(args ...any) hclog.Logger {
	return h.derive(h.base.With(args...), h.name, append(h.implied[:len(h.implied):len(h.implied)], args...))
}

func (h *hcLogger) Name() string { return h.name }

func (h *hcLogger) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return h.ResetNamed(name)
}

// ResetNamed names the logger; the name becomes the attribute "logger".
func (h *hcLogger) ResetNamed(name string) hclog.Logger {
	return h.derive(h.base, name, h.implied)
}

func (h *hcLogger) SetLevel(hclog.Level) {}

func (h *hcLogger) GetLevel() hclog.Level {
	for _, level := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if h.enabled(level) {
			return level
		}
	}
	return hclog.Off
}

func (h *hcLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	level := slog.LevelInfo
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		level = slogLevel(opts.ForceLevel)
	}
	return slog.NewLogLogger(h.l.Handler(), level)
}

func (h *hcLogger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	return h.StandardLogger(opts).Writer()
}
