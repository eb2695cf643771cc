package engine

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
)

// DefaultLiveFlush is the default of Options.LiveFlush.
const DefaultLiveFlush = time.Second

// A device's report moves three fields of its record on every round: the
// report seq, the last-seen time and the progress. A round that decides
// nothing else (no command, no job moved, no change to append, no other
// field of the record) writes nothing: those three are kept here, in the
// engine that serves the device's stream, and written in batches (one
// transaction for up to liveFlushChunk devices that reported since the
// last flush), with
// the next round that decides something, and when the stream ends. Reads
// of devices (ListDevices) and every round see them: a round starts from
// the stored record with these fields laid over it, so a report's seq is
// checked against the last report, not the last write.
type liveDevices struct {
	mu sync.Mutex
	m  map[string]*liveDevice

	quiet, written atomic.Uint64
}

// liveDevice is the live part of one device's record, for its stream conn.
type liveDevice struct {
	conn      uint64
	reportSeq uint64
	lastSeen  time.Time
	progress  float64
	// node is the device's node as last written (a new node is always
	// written).
	node string
	// dirty is set when the fields are newer than the stored record.
	dirty bool
}

// set records the live fields of d's stream as of a round; dirty says
// whether the store lacks them (a round that wrote nothing).
func (l *liveDevices) set(d fsm.Device, dirty bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]*liveDevice{}
	}
	ld := l.m[d.ID]
	if ld == nil || ld.conn != d.Conn {
		if ld != nil && ld.conn > d.Conn {
			return // a newer stream took over
		}
		ld = &liveDevice{conn: d.Conn}
		l.m[d.ID] = ld
	} else if d.ReportSeq < ld.reportSeq {
		return // an older round finished last
	}
	ld.reportSeq, ld.lastSeen, ld.progress, ld.node = d.ReportSeq, d.LastSeen, d.Progress, d.Node
	ld.dirty = dirty
}

// overlay lays the live fields of d's stream over d, when they are newer
// than the stored ones.
func (l *liveDevices) overlay(d *fsm.Device) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ld := l.m[d.ID]
	if ld == nil || ld.conn != d.Conn || ld.reportSeq < d.ReportSeq {
		return
	}
	d.ReportSeq, d.LastSeen, d.Progress = ld.reportSeq, ld.lastSeen, ld.progress
}

// mustWrite reports whether rep surely decides something: it moves the
// device to another node than its stream's last round left it in, or
// carries a rejection. Such a round skips the try on a read transaction.
func (l *liveDevices) mustWrite(id string, conn uint64, rep *fsm.DeviceReport) bool {
	if rep == nil {
		return false
	}
	if rep.Rejection != nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	ld := l.m[id]
	return ld != nil && ld.conn == conn && ld.node != rep.Node
}

// drop forgets the live fields of id's stream conn once it ended.
func (l *liveDevices) drop(id string, conn uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ld := l.m[id]; ld != nil && ld.conn == conn {
		delete(l.m, id)
	}
}

// liveWrite is one device's live fields to write.
type liveWrite struct {
	id string
	liveDevice
}

// dirtyOnes returns the fields the store lacks.
func (l *liveDevices) dirtyOnes() []liveWrite {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []liveWrite
	for id, ld := range l.m {
		if ld.dirty {
			out = append(out, liveWrite{id: id, liveDevice: *ld})
		}
	}
	return out
}

// flushed marks ws as written, unless a later report moved them meanwhile.
func (l *liveDevices) flushed(ws []liveWrite) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range ws {
		if ld := l.m[w.id]; ld != nil && ld.conn == w.conn && ld.reportSeq == w.reportSeq {
			ld.dirty = false
		}
	}
}

// oldest returns the earliest last-seen time of the devices with a live
// stream; zero when there are none.
func (l *liveDevices) oldest() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var t time.Time
	for _, ld := range l.m {
		if t.IsZero() || ld.lastSeen.Before(t) {
			t = ld.lastSeen
		}
	}
	return t
}

// quietRound reports whether dec, decided on d, changes nothing the store
// must hold: no command, no job, no queue entry, no change, and a record
// that differs from d at most in its live fields.
func quietRound(d fsm.Device, dec fsm.ReconcileDecision) bool {
	if dec.Command != nil || dec.Dispatched || len(dec.Jobs) > 0 || len(dec.Changes) > 0 {
		return false
	}
	a, b := d, dec.Device
	a.ReportSeq, a.LastSeen, a.Progress = 0, time.Time{}, 0
	b.ReportSeq, b.LastSeen, b.Progress = 0, time.Time{}, 0
	if len(a.Capabilities) == 0 && len(b.Capabilities) == 0 {
		a.Capabilities, b.Capabilities = nil, nil
	}
	return reflect.DeepEqual(a, b)
}

// errNotQuiet stops a round tried on a read transaction: it must write.
var errNotQuiet = errors.New("the round writes")

// DeviceStats count the rounds of device streams since New.
type DeviceStats struct {
	// QuietRounds decided nothing and wrote nothing.
	QuietRounds uint64
	// WrittenRounds committed a decision (Connect included).
	WrittenRounds uint64
	// OldestLastSeen is the earliest last-seen time of the devices whose
	// stream this engine serves; zero when none.
	OldestLastSeen time.Time
}

// DeviceStats returns the counters of device rounds.
func (e *Engine) DeviceStats() DeviceStats {
	return DeviceStats{QuietRounds: e.live.quiet.Load(), WrittenRounds: e.live.written.Load(), OldestLastSeen: e.live.oldest()}
}

// FlushLive writes the live fields (report seq, last-seen time, progress)
// of every device whose quiet rounds left the store behind, in one
// transaction per liveFlushChunk devices. Lead runs it every Options.LiveFlush; it does nothing when
// no device reported since the last flush.
func (e *Engine) FlushLive(ctx context.Context) error {
	ws := e.live.dirtyOnes()
	for len(ws) > 0 {
		n := min(len(ws), liveFlushChunk)
		if err := e.flushLive1(ctx, ws[:n]); err != nil {
			return err
		}
		ws = ws[n:]
	}
	return nil
}

// liveFlushChunk bounds the devices one transaction of FlushLive writes,
// so that the commits of rounds waiting behind it stay short.
const liveFlushChunk = 128

// flushLive1 writes the live fields of ws in one transaction.
func (e *Engine) flushLive1(ctx context.Context, ws []liveWrite) error {
	err := e.st.Update(ctx, func(tx store.Tx) error {
		for _, w := range ws {
			d, err := tx.Device(w.id)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if d.Conn != w.conn || !d.Online || d.ReportSeq >= w.reportSeq {
				continue // the stream ended, or a round wrote newer fields
			}
			d.ReportSeq, d.LastSeen, d.Progress = w.reportSeq, w.lastSeen, w.progress
			if err := tx.PutDevice(d); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	e.live.flushed(ws)
	return nil
}

// flushLive runs FlushLive every interval until ctx ends. What a stream
// leaves unwritten when it ends, Disconnect writes.
func (e *Engine) flushLive(ctx context.Context, interval time.Duration) {
	t := e.clock.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		if err := e.FlushLive(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("device live fields not written", "err", err)
		}
		t.Reset(interval)
	}
}
