package server

import (
	"time"

	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
)

// Retention defaults: a week of changelog is enough for a consumer that
// was down over a long weekend to resume, and a month of finished
// instances covers the usual "what happened to item X" of a monthly
// report. Both bound the database file under a steady load.
const (
	// DefaultChangelogRetention is the default of Config.ChangelogRetention.
	DefaultChangelogRetention = 7 * 24 * time.Hour
	// DefaultFinishedRetention is the default of Config.FinishedRetention.
	DefaultFinishedRetention = 30 * 24 * time.Hour
)

func (c Config) retentionDefaults() Config {
	if c.ChangelogRetention == 0 {
		c.ChangelogRetention = DefaultChangelogRetention
	}
	if c.FinishedRetention == 0 {
		c.FinishedRetention = DefaultFinishedRetention
	}
	return c
}

// retention is what the engine's sweeper deletes; a negative setting
// (keep for ever) is the engine's zero.
func (c Config) retention(onDeleted func(changes int, instances []fsm.Instance)) engine.Retention {
	return engine.Retention{
		Changes:      max(c.ChangelogRetention, 0),
		ChangesCount: c.ChangelogRetentionCount,
		Finished:     max(c.FinishedRetention, 0),
		OnDeleted:    onDeleted,
	}
}
