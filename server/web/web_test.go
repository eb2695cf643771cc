package web_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server"
	"github.com/dfsmr/dfsmr/server/auth"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
)

type tlogWriter struct{ tb testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// env is a real dfsmrd (bbolt in a temp dir, gRPC and the dashboard on
// loopback) and its tokens.
type env struct {
	srv    *server.Server
	base   string
	tokens map[string]string // principal name -> token
}

// principals of the tokens file mustServer writes when auth is on.
var principals = map[string]auth.Role{"olga": auth.RoleOperator, "rita": auth.RoleReader, "p1": auth.RoleDevice}

// mustServer starts a server with the dashboard on 127.0.0.1:0; with
// withAuth, a tokens file lists olga (operator) and rita (reader).
func mustServer(tb testing.TB, withAuth bool, edit func(*server.Config)) *env {
	tb.Helper()
	dir := tb.TempDir()
	cfg := server.Config{
		DB:       filepath.Join(dir, "dfsmr.db"),
		Addr:     "127.0.0.1:0",
		HTTPAddr: "127.0.0.1:0",
		Logger:   slog.New(slog.NewTextHandler(tlogWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	e := &env{tokens: map[string]string{}}
	if withAuth {
		var b strings.Builder
		b.WriteString("principals:\n")
		for name, role := range principals {
			tok := auth.NewToken()
			e.tokens[name] = tok
			fmt.Fprintf(&b, "  - name: %s\n    roles: [%s]\n    token_sha256: %s\n", name, role, auth.HashToken(tok))
		}
		cfg.Tokens = filepath.Join(dir, "tokens.yaml")
		if err := os.WriteFile(cfg.Tokens, []byte(b.String()), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	if edit != nil {
		edit(&cfg)
	}
	ctx := context.Background()
	s, err := server.New(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Start(ctx, nil); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Stop(context.Background()); err != nil {
			tb.Error(err)
		}
	})
	e.srv = s
	e.base = "http://" + s.HTTPAddr() + cfg.HTTPPrefix
	return e
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects, so tests see them.
type browser struct {
	tb   testing.TB
	base string
	c    *http.Client
}

func (e *env) browser(tb testing.TB) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{tb: tb, base: e.base, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

// login logs b in as name.
func (e *env) login(tb testing.TB, name string) *browser {
	b := e.browser(tb)
	code, _, loc := b.post("/login", url.Values{"token": {e.tokens[name]}})
	if code != http.StatusSeeOther || loc != e.srvPrefix()+"/" {
		tb.Fatalf("login as %s: %d to %q", name, code, loc)
	}
	return b
}

func (e *env) srvPrefix() string { return strings.TrimPrefix(e.base, "http://"+e.srv.HTTPAddr()) }

// get returns the status and body of path.
func (b *browser) get(path string) (int, string) {
	b.tb.Helper()
	resp, err := b.c.Get(b.base + path)
	if err != nil {
		b.tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// post posts a form; it returns the status, body and redirect location.
func (b *browser) post(path string, form url.Values) (int, string, string) {
	b.tb.Helper()
	resp, err := b.c.PostForm(b.base+path, form)
	if err != nil {
		b.tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header.Get("Location")
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// csrf reads the CSRF token from a page with a form.
func (b *browser) csrf(path string) string {
	b.tb.Helper()
	code, body := b.get(path)
	m := csrfRE.FindStringSubmatch(body)
	if code != http.StatusOK || m == nil {
		b.tb.Fatalf("GET %s: %d, no csrf field:\n%s", path, code, body)
	}
	return m[1]
}

func (e *env) start(tb testing.TB, machine, id string, params map[string]string) fsm.Instance {
	tb.Helper()
	in, _, err := e.srv.Engine().StartInstance(context.Background(), engine.StartArgs{ID: id, Machine: machine, Params: params, Actor: "test"})
	if err != nil {
		tb.Fatal(err)
	}
	return in
}

func (e *env) instance(tb testing.TB, id string) fsm.Instance {
	tb.Helper()
	in, err := e.srv.Engine().GetInstance(context.Background(), id)
	if err != nil {
		tb.Fatal(err)
	}
	return in
}

func mustContain(tb testing.TB, what, body string, want ...string) {
	tb.Helper()
	for _, w := range want {
		if !strings.Contains(body, w) {
			tb.Errorf("%s lacks %q:\n%s", what, w, body)
		}
	}
}

func TestPagesRenderWithoutAuth(t *testing.T) {
	e := mustServer(t, false, nil)
	e.start(t, "crawler", "c-1", map[string]string{"url": "https://example.org/a"})
	e.start(t, "crawler", "c-2", map[string]string{"url": "https://example.org/b"})
	b := e.browser(t)
	for path, want := range map[string][]string{
		"/machines":                       {"crawler", "print_job", `href="/instances?machine=crawler&amp;status=READY">2<`},
		"/machines/crawler":               {"<svg", ">crawl (start)<", "2 READY", ">rate_limited<", ">success (final)<"},
		"/instances":                      {"c-1", "c-2", "2 matching"},
		"/instances?machine=crawler&q=-2": {"c-2", "1 matching"},
		"/instances?param=url%3Dhttps://example.org/a": {"c-1", "1 matching"},
		"/instances/c-1": {"STARTED", "https://example.org/a", "Cancel…"},
		"/changes":       {`id="tail"`},
		"/leases":        {"No leases held."},
		"/printers":      {"No printers have connected yet."},
	} {
		code, body := b.get(path)
		if code != http.StatusOK {
			t.Errorf("GET %s: %d\n%s", path, code, body)
			continue
		}
		mustContain(t, path, body, want...)
	}
	if code, body := b.get("/instances/nope"); code != http.StatusNotFound || !strings.Contains(body, "NotFound") {
		t.Errorf("missing instance: %d\n%s", code, body)
	}
	if code, body := b.get("/instances?node=crawl"); code != http.StatusBadRequest || !strings.Contains(body, "node") {
		t.Errorf("node without machine: %d\n%s", code, body)
	}
}

func TestLoginNeededWithAuth(t *testing.T) {
	e := mustServer(t, true, nil)
	b := e.browser(t)
	resp, err := b.c.Get(b.base + "/instances")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/login?next=") {
		t.Fatalf("GET /instances without session: %d to %q", resp.StatusCode, loc)
	}
	if code, body, _ := b.post("/login", url.Values{"token": {"dfsmr_wrong"}}); code != http.StatusUnauthorized || !strings.Contains(body, "Unknown or revoked token") {
		t.Fatalf("bad token: %d\n%s", code, body)
	}
	req, _ := http.NewRequest("GET", b.base+"/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err = b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("events without session: %d", resp.StatusCode)
	}
	r := e.login(t, "rita")
	if code, body := r.get("/instances"); code != http.StatusOK || !strings.Contains(body, "rita") {
		t.Fatalf("after login: %d\n%s", code, body)
	}
}

// TestReaderSeesNoActionsAndCannotAct: the role map decides, and a forged
// POST (the reader's own CSRF token, or none) changes nothing.
func TestReaderSeesNoActionsAndCannotAct(t *testing.T) {
	e := mustServer(t, true, nil)
	e.start(t, "crawler", "c-1", nil)
	r := e.login(t, "rita")
	_, body := r.get("/instances/c-1")
	for _, action := range []string{"Cancel…", "/confirm", "Signal "} {
		if strings.Contains(body, action) {
			t.Errorf("reader's instance page offers %q", action)
		}
	}
	_, body = r.get("/instances?machine=crawler")
	if strings.Contains(body, "Cancel all matching") {
		t.Error("reader's list offers bulk cancel")
	}
	if code, _ := r.get("/confirm?action=cancel&id=c-1"); code != http.StatusForbidden {
		t.Errorf("reader's confirm page: %d, want 403", code)
	}
	csrf := r.csrf("/instances/c-1") // the logout form's
	if code, body, _ := r.post("/act", url.Values{"csrf": {csrf}, "action": {"cancel"}, "id": {"c-1"}}); code != http.StatusForbidden || !strings.Contains(body, "CancelInstance") {
		t.Errorf("reader's cancel: %d\n%s", code, body)
	}
	if in := e.instance(t, "c-1"); in.Status == fsm.StatusFinal {
		t.Fatal("a reader cancelled an instance")
	}
}

func TestForgedPostRefused(t *testing.T) {
	e := mustServer(t, true, nil)
	e.start(t, "crawler", "c-1", nil)
	o := e.login(t, "olga")
	for name, form := range map[string]url.Values{
		"no token":    {"action": {"cancel"}, "id": {"c-1"}},
		"wrong token": {"csrf": {strings.Repeat("0", 64)}, "action": {"cancel"}, "id": {"c-1"}},
	} {
		if code, _, _ := o.post("/act", form); code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, code)
		}
	}
	// Another principal's token does not work either.
	r := e.login(t, "rita")
	if code, _, _ := o.post("/act", url.Values{"csrf": {r.csrf("/instances/c-1")}, "action": {"cancel"}, "id": {"c-1"}}); code != http.StatusForbidden {
		t.Errorf("another session's token: %d, want 403", code)
	}
	if in := e.instance(t, "c-1"); in.Status == fsm.StatusFinal {
		t.Fatal("a forged POST cancelled an instance")
	}
	// Without a session at all.
	anon := e.browser(t)
	if code, _, _ := anon.post("/act", url.Values{"action": {"cancel"}, "id": {"c-1"}}); code != http.StatusUnauthorized {
		t.Errorf("no session: %d, want 401", code)
	}
}

func TestOperatorCancelsAndSignals(t *testing.T) {
	e := mustServer(t, true, nil)
	e.start(t, "crawler", "c-1", nil)
	o := e.login(t, "olga")
	_, body := o.get("/instances/c-1")
	mustContain(t, "operator's instance page", body, "Cancel…")
	csrf := o.csrf("/confirm?action=cancel&id=c-1")
	code, body, loc := o.post("/act", url.Values{"csrf": {csrf}, "action": {"cancel"}, "id": {"c-1"}, "reason": {"test run over"}})
	if code != http.StatusSeeOther || loc != "/instances/c-1" {
		t.Fatalf("cancel: %d to %q\n%s", code, loc, body)
	}
	in := e.instance(t, "c-1")
	if in.Node != fsm.NodeAborted {
		t.Fatalf("after cancel: node %s", in.Node)
	}
	_, body = o.get("/instances/c-1")
	mustContain(t, "timeline", body, "CANCELED", "by olga", "test run over")
	// An illegal action is a page with the server's status, not a crash.
	if code, body, _ := o.post("/act", url.Values{"csrf": {csrf}, "action": {"signal"}, "id": {"c-1"}, "signal": {"nope"}}); code != http.StatusConflict {
		t.Errorf("signal on a final instance: %d\n%s", code, body)
	}
}

func TestReadOnlyRefusesEveryAction(t *testing.T) {
	e := mustServer(t, true, func(c *server.Config) { c.HTTPReadOnly = true })
	e.start(t, "crawler", "c-1", nil)
	o := e.login(t, "olga")
	_, body := o.get("/instances/c-1")
	if strings.Contains(body, "Cancel…") {
		t.Error("read-only page offers cancel")
	}
	mustContain(t, "read-only page", body, "read-only")
	csrf := o.csrf("/instances/c-1")
	if code, body, _ := o.post("/act", url.Values{"csrf": {csrf}, "action": {"cancel"}, "id": {"c-1"}}); code != http.StatusForbidden || !strings.Contains(body, "read-only") {
		t.Errorf("read-only cancel: %d\n%s", code, body)
	}
	if in := e.instance(t, "c-1"); in.Status == fsm.StatusFinal {
		t.Fatal("read-only dashboard cancelled an instance")
	}
}

var countRE = regexp.MustCompile(`<strong id="count">(\d+)</strong>`)

// TestBulkCancelCancelsExactlyTheCounted: the confirmation shows the count
// and carries it; when the set changed meanwhile nothing is done and the
// count is shown again.
func TestBulkCancelCancelsExactlyTheCounted(t *testing.T) {
	e := mustServer(t, true, nil)
	for i := range 5 {
		e.start(t, "crawler", fmt.Sprintf("c-%d", i), nil)
	}
	e.start(t, "report", "r-1", nil) // another machine: not matched
	o := e.login(t, "olga")
	confirm := "/confirm?action=cancel-many&machine=crawler&status=READY"
	_, body := o.get(confirm)
	m := countRE.FindStringSubmatch(body)
	if m == nil || m[1] != "5" {
		t.Fatalf("confirmation count: %v\n%s", m, body)
	}
	csrf := csrfRE.FindStringSubmatch(body)[1]
	e.start(t, "crawler", "c-late", nil)
	form := url.Values{"csrf": {csrf}, "action": {"cancel-many"}, "machine": {"crawler"}, "status": {"READY"}, "expected": {"5"}, "back": {"/instances?machine=crawler"}}
	code, _, loc := o.post("/act", form)
	if code != http.StatusSeeOther || !strings.Contains(loc, "changed=1") {
		t.Fatalf("stale count: %d to %q", code, loc)
	}
	if in := e.instance(t, "c-0"); in.Status == fsm.StatusFinal {
		t.Fatal("a stale count cancelled instances")
	}
	_, body = o.get(strings.TrimPrefix(loc, e.srvPrefix()))
	mustContain(t, "second confirmation", body, `<strong id="count">6</strong>`, "changed before you confirmed")
	form.Set("expected", "6")
	form.Del("back") // back to the filtered list
	if code, body, loc := o.post("/act", form); code != http.StatusSeeOther || loc != "/instances?machine=crawler&status=READY" {
		t.Fatalf("bulk cancel: %d to %q\n%s", code, loc, body)
	}
	for _, id := range []string{"c-0", "c-1", "c-2", "c-3", "c-4", "c-late"} {
		if in := e.instance(t, id); in.Node != fsm.NodeAborted {
			t.Errorf("%s: node %s, want cancelled", id, in.Node)
		}
	}
	if in := e.instance(t, "r-1"); in.Status == fsm.StatusFinal {
		t.Error("bulk cancel of crawler cancelled a report")
	}
}

func TestPathPrefix(t *testing.T) {
	e := mustServer(t, false, func(c *server.Config) { c.HTTPPrefix = "/dfsmr" })
	e.start(t, "crawler", "c-1", nil)
	b := e.browser(t)
	code, body := b.get("/instances")
	if code != http.StatusOK {
		t.Fatalf("GET /dfsmr/instances: %d", code)
	}
	mustContain(t, "prefixed page", body, `href="/dfsmr/instances/c-1"`, `src="/dfsmr/assets/app.js"`, `data-events="/dfsmr/events?`)
	if code, _ := b.get("/assets/app.css"); code != http.StatusOK {
		t.Errorf("asset under prefix: %d", code)
	}
	resp, err := http.Get("http://" + e.srv.HTTPAddr() + "/instances")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unprefixed path: %d, want 404", resp.StatusCode)
	}
}

// sseEvent is one parsed Server-Sent Event.
type sseEvent struct{ id, event, data string }

// readEvents reads events from an SSE body until n "change" events came.
// Pass the same reader to every call on one stream: it keeps what it read
// ahead.
func readEvents(tb testing.TB, r *bufio.Reader, n int) []sseEvent {
	tb.Helper()
	var out []sseEvent
	var cur sseEvent
	for len(out) < n {
		line, err := r.ReadString('\n')
		if err != nil {
			tb.Fatalf("stream ended after %d events, want %d: %v", len(out), n, err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if cur.event == "change" {
				out = append(out, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "id: "):
			cur.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			cur.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			cur.data = line[6:]
		}
	}
	return out
}

func (b *browser) stream(ctx context.Context, path, lastID string) *http.Response {
	b.tb.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", b.base+path, nil)
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.tb.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b.tb.Fatalf("GET %s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp
}

// TestEventsResumeWithoutGap: ids are seqs, Last-Event-ID wins over after,
// and a stream resumed from the last id it saw continues with the next
// change, live or from the store.
func TestEventsResumeWithoutGap(t *testing.T) {
	e := mustServer(t, false, nil)
	for i := range 3 {
		e.start(t, "crawler", fmt.Sprintf("c-%d", i), nil)
	}
	b := e.browser(t)
	b.get("/instances") // the anonymous session cookie
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := b.stream(ctx, "/events?machine=crawler&kind=STARTED&tail=10", "")
	evs := readEvents(t, bufio.NewReader(resp.Body), 3)
	resp.Body.Close()
	for i, ev := range evs {
		if !strings.Contains(ev.data, fmt.Sprintf(`"instance":"c-%d"`, i)) || !strings.Contains(ev.data, `"kind":"STARTED"`) {
			t.Errorf("event %d: %+v", i, ev)
		}
	}
	last := evs[1].id
	// More changes while disconnected, then resume after the second.
	e.start(t, "crawler", "c-3", nil)
	resp = b.stream(ctx, "/events?machine=crawler&kind=STARTED&after=0", last)
	defer resp.Body.Close()
	evs2 := readEvents(t, bufio.NewReader(resp.Body), 2)
	if evs2[0].id != evs[2].id || !strings.Contains(evs2[1].data, `"instance":"c-3"`) {
		t.Fatalf("resumed after %s: %+v", last, evs2)
	}
	// Live, filtered by kind.
	resp2 := b.stream(ctx, "/events?kind=CANCELED", "")
	defer resp2.Body.Close()
	if _, err := e.srv.Engine().CancelInstance(ctx, "c-0", "", "test"); err != nil {
		t.Fatal(err)
	}
	ev := readEvents(t, bufio.NewReader(resp2.Body), 1)[0]
	if !strings.Contains(ev.data, `"kind":"CANCELED"`) || !strings.Contains(ev.data, `"instance":"c-0"`) {
		t.Fatalf("kind filter: %+v", ev)
	}
}

func TestEventsBadResumePoint(t *testing.T) {
	e := mustServer(t, false, nil)
	b := e.browser(t)
	b.get("/instances")
	if code, body := b.get("/events?after=x"); code != http.StatusBadRequest || !strings.Contains(body, "after") {
		t.Errorf("after=x: %d\n%s", code, body)
	}
}

func mustURL(tb testing.TB, s string) *url.URL {
	tb.Helper()
	u, err := url.Parse(s)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

// flaky fails for good at its first error: its instances reach
// dfsmr.failed, which the dashboard retries.
const flaky = `id: flaky
nodes:
  work:
    start: true
    timeout: 30s
    retry: {max_attempts: 1, backoff: fixed, initial: 1s}
    transitions:
      ok: done
      error: work
  done: {final: true}
`

// fail starts instance id of flaky and fails it into dfsmr.failed.
func (e *env) fail(tb testing.TB, id string) {
	tb.Helper()
	ctx := context.Background()
	eng := e.srv.Engine()
	e.start(tb, "flaky", id, nil)
	in, ok, err := eng.Ready(ctx, engine.ReadyArgs{Machine: "flaky", Worker: "w"})
	if err != nil || !ok || in.ID != id {
		tb.Fatalf("lease %s: %v %v %v", id, in.ID, ok, err)
	}
	if in, err = eng.Transition(ctx, engine.TransitionArgs{ID: id, Token: in.Lease.Token, Transition: "error"}); err != nil || in.Node != fsm.NodeFailed {
		tb.Fatalf("fail %s: %s %v", id, in.Node, err)
	}
}

func TestRetryFailedInstances(t *testing.T) {
	e := mustServer(t, true, nil)
	if _, _, err := e.srv.Engine().DefineMachine(context.Background(), "flaky.yaml", []byte(flaky), "test"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"f-1", "f-2", "f-3"} {
		e.fail(t, id)
	}
	o := e.login(t, "olga")
	_, body := o.get("/instances/f-1")
	mustContain(t, "failed instance", body, "Retry…")
	csrf := o.csrf("/confirm?action=retry&id=f-1")
	if code, body, _ := o.post("/act", url.Values{"csrf": {csrf}, "action": {"retry"}, "id": {"f-1"}}); code != http.StatusSeeOther {
		t.Fatalf("retry: %d\n%s", code, body)
	}
	if in := e.instance(t, "f-1"); in.Node != "work" || in.Status != fsm.StatusReady {
		t.Fatalf("f-1 after retry: %s %s", in.Node, in.Status)
	}
	// Retrying a running instance is refused with the server's status.
	if code, _, _ := o.post("/act", url.Values{"csrf": {csrf}, "action": {"retry"}, "id": {"f-1"}}); code != http.StatusConflict {
		t.Errorf("retry of a running instance: %d, want 409", code)
	}
	_, body = o.get("/confirm?action=retry-many&machine=flaky&node=dfsmr.failed")
	if m := countRE.FindStringSubmatch(body); m == nil || m[1] != "2" {
		t.Fatalf("retry-many count: %v\n%s", m, body)
	}
	form := url.Values{"csrf": {csrf}, "action": {"retry-many"}, "machine": {"flaky"}, "node": {"dfsmr.failed"}, "expected": {"2"}}
	if code, body, _ := o.post("/act", form); code != http.StatusSeeOther {
		t.Fatalf("retry-many: %d\n%s", code, body)
	}
	for _, id := range []string{"f-2", "f-3"} {
		if in := e.instance(t, id); in.Node != "work" {
			t.Errorf("%s after retry-many: %s", id, in.Node)
		}
	}
}

func TestDashboardBeyondLoopbackNeedsTLSAndAuth(t *testing.T) {
	_, err := server.New(context.Background(), server.Config{DB: filepath.Join(t.TempDir(), "d.db"), Addr: "127.0.0.1:0", HTTPAddr: "0.0.0.0:0"})
	if err == nil || !strings.Contains(err.Error(), "refusing to listen on 0.0.0.0:0") {
		t.Fatalf("dashboard on every interface without TLS and tokens: %v", err)
	}
	for _, c := range []server.Config{{HTTPReadOnly: true}, {HTTPAddr: "127.0.0.1:0", HTTPPrefix: "dfsmr/"}} {
		c.DB, c.Addr = filepath.Join(t.TempDir(), "d.db"), "127.0.0.1:0"
		if _, err := server.New(context.Background(), c); err == nil {
			t.Errorf("%+v: accepted", c)
		}
	}
}
