package store

import "time"

// QueueEntry is one job waiting in a device's queue (the device record is
// fsm.Device). Queues are ordered by priority (higher first), then At
// (older first), then job id.
type QueueEntry struct {
	Job      string
	Priority int32
	At       time.Time
}
