// Package reportdemo is the report pipeline example: thousands of
// independent, idempotent items (a client's report for a day), each one
// instance of the bundled report machine (downloadable -> uploadable ->
// completed), run by a client.Worker against the reportapi simulator.
//
// The download step fetches a report over HTTP and transforms it (cost to
// euros, watch time to seconds); the upload step writes it atomically to a
// local directory that stands in for an object store. A failed request
// retries its own item with the node's backoff, and a 429 parks only its
// item for the Retry-After the API asked for, through the machine's
// throttled transition: one slow item never holds up the others.
//
// The same items also run through a plain serial loop that retries the
// whole item in place (Serial), for comparison.
package reportdemo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Item is one report to move: a client's report for a day.
type Item struct {
	Client string
	Day    string // YYYY-MM-DD
}

// Key is the item's object key in the upload directory.
func (it Item) Key() string { return it.Client + "/" + it.Day + ".csv" }

// Items returns n items: clients in turn, one day after another from
// first.
func Items(n int, clients []string, first time.Time) []Item {
	out := make([]Item, n)
	for i := range out {
		out[i] = Item{Client: clients[i%len(clients)], Day: first.AddDate(0, 0, i/len(clients)).Format(time.DateOnly)}
	}
	return out
}

// eurMicros is the fixed conversion table: micro-euros per unit of each
// currency. A real pipeline would read the day's rates; a fixed table
// keeps every run's output identical.
var eurMicros = map[string]int64{
	"EUR": 1_000_000,
	"USD": 920_000,
	"GBP": 1_170_000,
	"JPY": 6_100,
	"SEK": 87_000,
	"CAD": 680_000,
	"CHF": 1_040_000,
	"AUD": 610_000,
}

// TransformedHeader is the header of a transformed report.
var TransformedHeader = []string{"day", "client", "campaign", "impressions", "clicks", "cost_eur", "watch_seconds"}

// Transform converts a downloaded report (reportapi.Header columns):
// cost in its currency becomes cost_eur, rounded to the cent, and watch_ms
// becomes watch_seconds with three decimals. The other columns are kept.
// An unknown currency or a malformed number is an error naming the row.
func Transform(src []byte) ([]byte, error) {
	r := csv.NewReader(bytes.NewReader(src))
	r.FieldsPerRecord = 8
	rows, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("transform: %w", err)
	}
	if len(rows) == 0 || strings.Join(rows[0], ",") != "day,client,campaign,impressions,clicks,cost,currency,watch_ms" {
		return nil, errors.New("transform: unexpected header")
	}
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	_ = w.Write(TransformedHeader)
	for i, row := range rows[1:] {
		line := i + 2
		rate, ok := eurMicros[row[6]]
		if !ok {
			return nil, fmt.Errorf("transform: row %d: unknown currency %q", line, row[6])
		}
		cost, err := parseMicros(row[5])
		if err != nil {
			return nil, fmt.Errorf("transform: row %d: cost: %w", line, err)
		}
		ms, err := strconv.ParseInt(row[7], 10, 64)
		if err != nil || ms < 0 {
			return nil, fmt.Errorf("transform: row %d: watch_ms %q is not a count", line, row[7])
		}
		eurMicro := cost * rate / 1_000_000
		cents := (eurMicro + 5_000) / 10_000 // round half up
		_ = w.Write([]string{
			row[0], row[1], row[2], row[3], row[4],
			fmt.Sprintf("%d.%02d", cents/100, cents%100),
			fmt.Sprintf("%d.%03d", ms/1000, ms%1000),
		})
	}
	w.Flush()
	return buf.Bytes(), w.Error()
}

// parseMicros parses a non-negative decimal with at most six fraction
// digits into millionths.
func parseMicros(s string) (int64, error) {
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" || len(frac) > 6 {
		return 0, fmt.Errorf("%q is not a decimal", s)
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || w < 0 || w > 1<<40 {
		return 0, fmt.Errorf("%q is not a decimal", s)
	}
	f := int64(0)
	if frac != "" {
		f, err = strconv.ParseInt((frac + "000000")[:6], 10, 64)
		if err != nil || f < 0 {
			return 0, fmt.Errorf("%q is not a decimal", s)
		}
	}
	return w*1_000_000 + f, nil
}

// ThrottledError is the API's 429: come back after RetryAfter.
type ThrottledError struct{ RetryAfter time.Duration }

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("rate limited: retry after %v", e.RetryAfter)
}

// ConflictError is an upload of different content under a key that
// already holds something: a bug upstream (two reports for one key), never
// retried.
type ConflictError struct{ Key string }

func (e *ConflictError) Error() string {
	return fmt.Sprintf("upload %s: the key already holds different content", e.Key)
}

// Downloader fetches reports from the reporting API.
type Downloader struct {
	// BaseURL is the API's, e.g. reportapi.Server.URL().
	BaseURL string
	// HTTP is the client; nil: http.DefaultClient.
	HTTP *http.Client
}

// Download fetches it's report. A 429 is a *ThrottledError with the
// Retry-After delay (1s when the header is missing or malformed).
func (d *Downloader) Download(ctx context.Context, it Item) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.BaseURL+"/reports/"+it.Client+"/"+it.Day, nil)
	if err != nil {
		return nil, err
	}
	hc := d.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		after := time.Second
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs >= 0 {
			after = time.Duration(secs) * time.Second
		}
		return nil, &ThrottledError{RetryAfter: after}
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("GET %s: %s: %s", req.URL.Path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// Uploader writes objects to a directory, as an object store would take
// them: each object appears whole or not at all (written to a temporary
// file, synced, then linked into place), uploading the same content again
// is harmless, and different content for a key that exists is a
// *ConflictError.
type Uploader struct {
	// Dir is the bucket.
	Dir string

	uploads, repeats, conflicts atomic.Int64
}

// UploadStats count what an Uploader did.
type UploadStats struct {
	// Uploads wrote a new object.
	Uploads int64
	// Repeats found the same content already there.
	Repeats int64
	// Conflicts found different content there.
	Conflicts int64
}

// Stats returns the uploader's counters.
func (u *Uploader) Stats() UploadStats {
	return UploadStats{Uploads: u.uploads.Load(), Repeats: u.repeats.Load(), Conflicts: u.conflicts.Load()}
}

// Upload stores data under key.
func (u *Uploader) Upload(key string, data []byte) error {
	path := filepath.Join(u.Dir, filepath.FromSlash(key))
	if ok, err := u.same(key, path, data); ok || err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := writeSynced(filepath.Dir(path), ".upload-*", data)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	// Link, unlike rename, never replaces: of two concurrent uploads of a
	// key, one wins and the other compares.
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			_, err := u.same(key, path, data)
			return err
		}
		return err
	}
	u.uploads.Add(1)
	return nil
}

// same reports whether path already holds data; different content is a
// *ConflictError.
func (u *Uploader) same(key, path string, data []byte) (bool, error) {
	old, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	case bytes.Equal(old, data):
		u.repeats.Add(1)
		return true, nil
	}
	u.conflicts.Add(1)
	return false, &ConflictError{Key: key}
}

// digest is the hex SHA-256 of b.
func digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// writeAtomic writes data to path through a synced temporary file and a
// rename, so that a reader never sees half a file, even after a crash.
func writeAtomic(path string, data []byte) error {
	tmp, err := writeSynced(filepath.Dir(path), ".stage-*", data)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	return os.Rename(tmp, path)
}

// writeSynced writes data to a new temporary file in dir (named after
// pattern, as os.CreateTemp), synced and closed, and returns its name; the
// caller removes it.
func writeSynced(dir, pattern string, data []byte) (name string, err error) {
	tmp, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return tmp.Name(), nil
}
