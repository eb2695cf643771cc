package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/dfsmr/dfsmr/server/changes"
	"github.com/dfsmr/dfsmr/server/fsm"
)

// pingEvery is how often an idle event stream sends a comment, so that
// proxies keep it open and a vanished browser is noticed.
const pingEvery = 20 * time.Second

// maxTail bounds the changes a new stream replays with tail=N.
const maxTail = 1000

// event is the JSON data of one changelog event.
type event struct {
	Seq        uint64 `json:"seq"`
	At         string `json:"at"`
	Kind       string `json:"kind"`
	Actor      string `json:"actor,omitempty"`
	Machine    string `json:"machine,omitempty"`
	Instance   string `json:"instance,omitempty"`
	Device     string `json:"device,omitempty"`
	From       string `json:"from,omitempty"`
	To         string `json:"to,omitempty"`
	Transition string `json:"transition,omitempty"`
	Status     string `json:"status,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

func toEvent(c *fsm.Change) event {
	e := event{Seq: c.Seq, At: c.At.UTC().Format(time.RFC3339Nano), Kind: c.Kind.String(), Actor: c.Actor,
		Machine: c.Machine, Instance: c.Instance, Device: c.Device, From: c.FromNode, To: c.ToNode,
		Transition: c.Transition, Reason: c.Reason}
	if c.ToStatus != fsm.StatusUnspecified {
		e.Status = c.ToStatus.String()
	}
	return e
}

// eventsQuery builds the /events query of a filter.
func eventsQuery(machine, kind, device string) string {
	return urlValues("machine", machine, "kind", kind, "device", device)
}

func urlq(s string) string { return url.QueryEscape(s) }

// errStreamEnded refuses a write after the stream's handler has returned.
var errStreamEnded = errors.New("web: event stream ended")

// events streams the changelog as Server-Sent Events. It starts after the
// Last-Event-ID header, or after the "after" parameter, or with the last
// "tail" changes, or from now; machine, instance, kind and device filter
// it. Every event carries its seq as its id, so that EventSource resumes
// where it stopped when it reconnects.
func (h *Handler) events(w http.ResponseWriter, r *http.Request, _ *viewer) {
	q := r.URL.Query()
	var from uint64
	after := r.Header.Get("Last-Event-ID")
	if after == "" {
		after = q.Get("after")
	}
	if after != "" {
		n, err := strconv.ParseUint(after, 10, 64)
		if err != nil {
			h.fail(w, r, nil, &fsm.InvalidError{Field: "after", Reason: "is not a sequence number"})
			return
		}
		from = n + 1
	} else if t := q.Get("tail"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			h.fail(w, r, nil, &fsm.InvalidError{Field: "tail", Reason: "is not a count"})
			return
		}
		head := h.o.Hub.Head()
		from = head + 1 - min(uint64(min(n, maxTail)), head)
	}
	kind, dev := q.Get("kind"), q.Get("device")
	filter := changes.Filter{Machine: q.Get("machine"), Instance: q.Get("instance")}

	h.streams.Add(1)
	defer h.streams.Done()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(h.closed, cancel)()

	rc := http.NewResponseController(w)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	// Writes come from the hub's sender goroutine and the pinger; mu
	// orders them, and ended refuses them once the handler returns (a
	// ResponseWriter must not be used after that).
	var mu sync.Mutex
	ended := false
	write := func(s string) error {
		mu.Lock()
		defer mu.Unlock()
		if ended {
			return errStreamEnded
		}
		if _, err := fmt.Fprint(w, s); err != nil {
			return err
		}
		return rc.Flush()
	}
	defer func() {
		if !mu.TryLock() {
			// A write is under way, perhaps stuck on a browser that
			// stopped reading: cut it short, then wait for it. Otherwise
			// the response ends cleanly.
			_ = rc.SetWriteDeadline(time.Now())
			mu.Lock()
		}
		ended = true
		mu.Unlock()
	}()
	if err := write(": dfsmr changelog\nretry: 1000\n\n"); err != nil {
		return
	}
	h.streams.Add(1)
	go func() {
		defer h.streams.Done()
		h.ping(ctx, write)
	}()

	sent := false
	send := func(c fsm.Change) error {
		sent = true
		if (kind != "" && c.Kind.String() != kind) || (dev != "" && c.Device != dev) {
			return nil
		}
		data, err := json.Marshal(toEvent(&c))
		if err != nil {
			return err
		}
		return write(fmt.Sprintf("id: %d\nevent: change\ndata: %s\n\n", c.Seq, data))
	}
	err := h.o.Hub.Stream(ctx, from, filter, send)
	var oor *changes.OutOfRangeError
	if after == "" && !sent && errors.As(err, &oor) && oor.Compacted() && from < oor.Oldest {
		// A tail reaching back past what retention kept: the tail is
		// what is left. (A resume point retention deleted is told below.)
		err = h.o.Hub.Stream(ctx, oor.Oldest, filter, send)
	}
	var lag *changes.LaggingError
	switch {
	case errors.As(err, &oor):
		// The browser asked for changes retention dropped: tell it, and
		// where the changelog stands, so it can start over.
		_ = write(fmt.Sprintf("event: out-of-range\ndata: {\"head\":%d}\n\n", oor.Head))
	case errors.As(err, &lag):
		// Ending the response makes EventSource reconnect with the
		// Last-Event-ID it saw, which is at or past ResumeFrom - 1.
		h.log.Info("web event stream lagging; the browser reconnects", logKeyResumeFrom, lag.ResumeFrom)
	}
}

// ping writes a comment every pingEvery until ctx ends.
func (h *Handler) ping(ctx context.Context, write func(string) error) {
	t := h.o.Clock.NewTimer(pingEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			if write(": ping\n\n") != nil {
				return
			}
			t.Reset(pingEvery)
		}
	}
}
