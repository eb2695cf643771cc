// Package reportapi is a simulator of a third-party reporting API, for
// tests and demos of report pipelines: an HTTP server on loopback that
// serves one CSV report per client and day, with a configurable latency,
// a share of failed requests (HTTP 500) and a rate limit (HTTP 429 with
// Retry-After).
//
// Reports are made from real rows (testdata/reports.csv, embedded): the
// report of a client and day holds that client's campaigns with the day
// filled in and metrics scaled by a factor derived from the day, so every
// report is different and the same request always returns the same
// bytes: downloading twice is harmless, as with a real API.
package reportapi

import (
	"bytes"
	_ "embed"
	"encoding/csv"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

//go:embed testdata/reports.csv
var sample []byte

// Header is the header row of every report.
var Header = []string{"day", "client", "campaign", "impressions", "clicks", "cost", "currency", "watch_ms"}

// Options configure a Server. The zero value serves every request at once
// and never fails.
type Options struct {
	// Latency is added to every request (a network and a busy API).
	Latency time.Duration
	// FailureRate is the share of requests, from 0 to 1, answered with
	// HTTP 500 (after the latency).
	FailureRate float64
	// ThrottleRate is the share of requests, from 0 to 1, answered with
	// HTTP 429 and a Retry-After of one second whatever the request rate,
	// as by a provider's quota shared with other clients.
	ThrottleRate float64
	// RateLimit is the most requests per second served before the API
	// answers HTTP 429 Too Many Requests; 0 means no limit. Requests are
	// admitted by a token bucket of Burst tokens refilled at RateLimit per
	// second.
	RateLimit float64
	// Burst is the token bucket's size; default max(1, RateLimit).
	Burst int
	// Seed seeds the failure draws, so that a run can be repeated.
	Seed uint64
}

// Stats count what the server answered.
type Stats struct {
	Requests  uint64 // every request
	OK        uint64 // 200
	Failed    uint64 // 500, injected
	Throttled uint64 // 429
	NotFound  uint64 // unknown client or bad day
}

// Server is a running fake reporting API.
type Server struct {
	opts Options
	srv  *http.Server
	lis  net.Listener
	done chan struct{}

	mu     sync.Mutex
	rand   *rand.Rand
	tokens float64
	last   time.Time

	requests, ok, failed, throttled, notFound atomic.Uint64
}

// Clients returns the clients the API has reports for, sorted.
func Clients() []string {
	var out []string
	for _, r := range sampleRows() {
		if !slices.Contains(out, r[1]) {
			out = append(out, r[1])
		}
	}
	slices.Sort(out)
	return out
}

func sampleRows() [][]string {
	rows, err := csv.NewReader(bytes.NewReader(sample)).ReadAll()
	if err != nil {
		panic(fmt.Sprintf("reportapi: embedded sample: %v", err)) // a broken build, not input
	}
	return rows[1:]
}

// Start serves the API on a loopback port until Close.
func Start(opts Options) (*Server, error) {
	if opts.FailureRate < 0 || opts.FailureRate > 1 || opts.ThrottleRate < 0 || opts.ThrottleRate > 1 {
		return nil, errors.New("reportapi: FailureRate and ThrottleRate must be between 0 and 1")
	}
	if opts.RateLimit < 0 || opts.Latency < 0 || opts.Burst < 0 {
		return nil, errors.New("reportapi: RateLimit, Burst and Latency must not be negative")
	}
	if opts.Burst == 0 {
		opts.Burst = max(1, int(opts.RateLimit))
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts: opts, lis: lis, done: make(chan struct{}),
		rand:   rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)),
		tokens: float64(opts.Burst), last: time.Now(),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /reports/{client}/{day}", s.report)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(lis)
	}()
	return s, nil
}

// URL is the API's base URL, e.g. "http://127.0.0.1:40123".
func (s *Server) URL() string { return "http://" + s.lis.Addr().String() }

// Close stops the server and waits for it.
func (s *Server) Close() error {
	err := s.srv.Close()
	<-s.done
	return err
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Requests: s.requests.Load(), OK: s.ok.Load(), Failed: s.failed.Load(),
		Throttled: s.throttled.Load(), NotFound: s.notFound.Load(),
	}
}

// admit takes a token from the bucket; when none is left it returns how
// long until one is. It also draws the injected throttling and failure.
func (s *Server) admit(now time.Time) (ok bool, retryAfter time.Duration, fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rand.Float64() < s.opts.ThrottleRate {
		return false, time.Second, false
	}
	if s.opts.RateLimit > 0 {
		s.tokens = min(float64(s.opts.Burst), s.tokens+now.Sub(s.last).Seconds()*s.opts.RateLimit)
		s.last = now
		if s.tokens < 1 {
			return false, time.Duration((1 - s.tokens) / s.opts.RateLimit * float64(time.Second)), false
		}
		s.tokens--
	}
	return true, 0, s.rand.Float64() < s.opts.FailureRate
}

func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if s.opts.Latency > 0 {
		select {
		case <-time.After(s.opts.Latency):
		case <-r.Context().Done():
			return
		}
	}
	ok, retryAfter, fail := s.admit(time.Now())
	switch {
	case !ok:
		s.throttled.Add(1)
		// Retry-After is in whole seconds (RFC 9110), rounded up.
		secs := int((retryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(max(1, secs)))
		http.Error(w, "rate limit exceeded", http.StatusTooManyRequests)
		return
	case fail:
		s.failed.Add(1)
		http.Error(w, "internal error (injected)", http.StatusInternalServerError)
		return
	}
	body, err := Report(r.PathValue("client"), r.PathValue("day"))
	if err != nil {
		s.notFound.Add(1)
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	s.ok.Add(1)
	w.Header().Set("Content-Type", "text/csv")
	_, _ = w.Write(body)
}

// Report returns the report of client for day (YYYY-MM-DD): what the API
// serves with status 200.
func Report(client, day string) ([]byte, error) {
	if _, err := time.Parse(time.DateOnly, day); err != nil {
		return nil, fmt.Errorf("day %q: want YYYY-MM-DD", day)
	}
	h := fnv.New64a()
	h.Write([]byte(client + "/" + day))
	// A factor from 0.50 to 1.49, in hundredths, from the day and client.
	factor := int64(50 + h.Sum64()%100)
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	_ = cw.Write(Header)
	n := 0
	for _, row := range sampleRows() {
		if row[1] != client {
			continue
		}
		out := slices.Clone(row)
		out[0] = day
		for _, i := range []int{3, 4, 7} { // counts scale
			v, _ := strconv.ParseInt(row[i], 10, 64)
			out[i] = strconv.FormatInt(v*factor/100, 10)
		}
		out[5] = scaleDecimal(row[5], factor)
		_ = cw.Write(out)
		n++
	}
	cw.Flush()
	if n == 0 {
		return nil, fmt.Errorf("no such client %q", client)
	}
	return buf.Bytes(), nil
}

// scaleDecimal multiplies a decimal with up to two fraction digits by
// factor/100, keeping its number of fraction digits.
func scaleDecimal(s string, factor int64) string {
	whole, frac, hasFrac := strings.Cut(s, ".")
	digits := len(frac)
	v, _ := strconv.ParseInt(whole+frac, 10, 64)
	v = v * factor / 100
	if !hasFrac {
		return strconv.FormatInt(v, 10)
	}
	p := int64(1)
	for range digits {
		p *= 10
	}
	return fmt.Sprintf("%d.%0*d", v/p, digits, v%p)
}
