package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/internal/clock"
	"github.com/dfsmr/dfsmr/internal/printersim"
	"github.com/dfsmr/dfsmr/server"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/metrics"
	"github.com/dfsmr/dfsmr/server/store/bolt"
)

const meteredYAML = `
id: metered
nodes:
  work:
    start: true
    timeout: 10s
    retry: {backoff: fixed, initial: 1s, jitter: 0}
    transitions: {ok: done, error: work}
  done: {final: true}
`

// scrape is one GET of the metrics endpoint, parsed.
type scrape map[string]*dto.MetricFamily

func mustScrape(t *testing.T, env *testEnv) scrape {
	t.Helper()
	resp, err := http.Get("http://" + env.srv.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value returns the sample of family name whose labels include labels
// ("k=v" pairs); histograms give their count. ok is false when absent.
func (s scrape) value(name string, labels ...string) (float64, bool) {
	fam := s[name]
	if fam == nil {
		return 0, false
	}
next:
	for _, m := range fam.GetMetric() {
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func (s scrape) must(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, ok := s.value(name, labels...)
	if !ok {
		t.Fatalf("metric %s%v missing", name, labels)
	}
	return v
}

// awaitMetric scrapes until the metric has value want: for gauges that
// another goroutine (the scheduler, a blocked call) updates.
func awaitMetric(t *testing.T, env *testEnv, want float64, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ := mustScrape(t, env).value(name, labels...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v, want %v", name, labels, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMetricsUnderLoad scrapes the metrics endpoint over HTTP before and
// after a short load over real gRPC: starts, leases, successes, errors
// (retries) and lease timeouts, with a changelog follower and a long poll
// connected. Every metric the operator guide lists is there and moved as
// the load says it must.
func TestMetricsUnderLoad(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	env := mustServer(t, server.Config{MetricsAddr: "127.0.0.1:0", Pprof: true, Clock: clk})
	ctx := t.Context()
	if _, err := env.machines.DefineMachine(ctx, &pb.DefineMachineRequest{Source: meteredYAML}); err != nil {
		t.Fatal(err)
	}
	before := mustScrape(t, env)
	for _, name := range []string{"dfsmr_leases_outstanding", "dfsmr_retries_total", "dfsmr_breaker_open",
		"dfsmr_scheduler_queue_depth", "dfsmr_changelog_head_seq", "dfsmr_changelog_subscribers",
		"dfsmr_changelog_subscriber_max_lag", "dfsmr_changelog_subscribers_lagged_total", "dfsmr_devices_online",
		"dfsmr_ready_long_polls", "dfsmr_store_commit_batch_size", "dfsmr_store_commit_seconds", "dfsmr_grpc_panics_total",
		"grpc_server_handled_total", "grpc_server_handling_seconds", "go_goroutines"} {
		if before[name] == nil {
			t.Errorf("metric %s missing before the load", name)
		}
	}

	// A follower of the changelog and a long poll for work that never comes.
	follow, err := env.changes.Changes(ctx, &pb.ChangesRequest{Machine: "metered"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := follow.Header(); err != nil { // registered
		t.Fatal(err)
	}
	pollDone := make(chan error, 1)
	go func() {
		_, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "idle", Machine: "report", Wait: durationpb.New(5 * time.Minute)})
		pollDone <- err
	}()
	// Three printers on their Connect streams, each past its first round.
	c := client.New(env.conn)
	for i := range 3 {
		dev, err := c.ConnectDevice(ctx, &pb.DeviceRegistration{DeviceId: fmt.Sprintf("printer-%d", i)}, client.DeviceState{Node: "ready"})
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		if _, err := dev.Recv(); err != nil {
			t.Fatal(err)
		}
	}

	const n = 30 // 10 succeed, 10 fail once, 10 stay leased and time out
	for i := range n {
		if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: fmt.Sprintf("m-%02d", i), Machine: "metered"}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		r, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "metered"})
		if err != nil || r.GetLease() == nil {
			t.Fatalf("Ready %d: %v %v", i, r, err)
		}
		transition := []string{"ok", "error", ""}[i%3]
		if transition == "" {
			continue
		}
		if _, err := env.work.Transition(ctx, &pb.TransitionRequest{Id: r.GetInstance().GetId(), Token: r.GetLease().GetToken(), Transition: transition}); err != nil {
			t.Fatal(err)
		}
	}
	awaitMetric(t, env, 1, "dfsmr_ready_long_polls")
	awaitMetric(t, env, 20, "dfsmr_scheduler_queue_depth") // 10 retries WAITING, 10 leases
	middle := mustScrape(t, env)
	if got := middle.must(t, "dfsmr_leases_outstanding"); got != 10 {
		t.Errorf("leases outstanding %v, want 10", got)
	}

	// The leases expire: 10 timeouts; the 10 retries wake.
	clk.Advance(10 * time.Second)
	var timeouts, wakes int
	var lastSeq uint64
	for timeouts < 10 || wakes < 10 {
		r, err := follow.Recv()
		if err != nil {
			t.Fatal(err)
		}
		switch r.GetChange().GetKind() {
		case pb.ChangeKind_CHANGE_KIND_TIMED_OUT:
			timeouts++
		case pb.ChangeKind_CHANGE_KIND_WOKEN:
			wakes++
		}
		lastSeq = r.GetChange().GetSeq()
	}
	awaitMetric(t, env, 10, "dfsmr_scheduler_queue_depth") // the timed-out ones wait out their backoff
	after := mustScrape(t, env)

	delta := func(name string, labels ...string) float64 {
		t.Helper()
		b, _ := before.value(name, labels...)
		return after.must(t, name, labels...) - b
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"grpc_server_handled_total", []string{"grpc_method=StartInstance", "grpc_code=" + codes.OK.String()}, n},
		{"grpc_server_handled_total", []string{"grpc_method=Transition", "grpc_code=" + codes.OK.String()}, 20},
		{"grpc_server_handled_total", []string{"grpc_method=Ready", "grpc_code=" + codes.OK.String()}, n},
		{"grpc_server_started_total", []string{"grpc_method=Changes"}, 1},
		{"dfsmr_changes_total", []string{"kind=STARTED"}, n},
		{"dfsmr_changes_total", []string{"kind=TIMED_OUT"}, 10},
		{"dfsmr_retries_total", nil, 20},
		{"dfsmr_leases_outstanding", nil, 0},
		{"dfsmr_instances", []string{"machine=metered", "node=done", "status=FINAL"}, 10},
		{"dfsmr_instances", []string{"machine=metered", "node=work", "status=READY"}, 10},
		{"dfsmr_instances", []string{"machine=metered", "node=work", "status=WAITING"}, 10},
		{"dfsmr_devices_online", nil, 3},
		{"dfsmr_changelog_subscribers", nil, 1},
	} {
		if got := delta(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v went up by %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := after.must(t, "dfsmr_changelog_head_seq"); got != float64(lastSeq) {
		t.Errorf("changelog head %v, want %d (the follower's last change)", got, lastSeq)
	}
	if commits := delta("dfsmr_store_commit_batch_size"); commits <= 0 || delta("dfsmr_store_commit_seconds") != commits {
		t.Errorf("commit histograms: %v batch sizes, %v durations observed", commits, delta("dfsmr_store_commit_seconds"))
	}
	after.must(t, "dfsmr_changelog_subscriber_max_lag")

	// The breaker gauge says what the API says.
	m, err := env.machines.GetMachine(ctx, &pb.GetMachineRequest{Id: "metered"})
	if err != nil {
		t.Fatal(err)
	}
	wantOpen := 0.0
	if m.GetBreaker().GetState() == pb.BreakerState_BREAKER_STATE_OPEN {
		wantOpen = 1
	}
	if got := after.must(t, "dfsmr_breaker_open", "machine=metered"); got != wantOpen {
		t.Errorf("breaker_open %v, API state %s", got, m.GetBreaker().GetState())
	}

	// The counts kept from the commit hook agree with a listing.
	list, err := env.instances.ListInstances(ctx, &pb.ListInstancesRequest{Machine: "metered", PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	listed := map[[3]string]int64{}
	for _, in := range list.GetInstances() {
		listed[[3]string{"metered", in.GetNode(), fsm.Status(in.GetStatus()).String()}]++
	}
	for k, v := range env.srv.Metrics().Instances() {
		if k[0] == "metered" && listed[k] != v {
			t.Errorf("metrics count %v = %d, listing has %d", k, v, listed[k])
		}
		delete(listed, k)
	}
	if len(listed) > 0 {
		t.Errorf("listed but not counted: %v", listed)
	}

	resp, err := http.Get("http://" + env.srv.MetricsAddr() + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine") {
		t.Errorf("pprof index: %s", resp.Status)
	}
	env.stop(t)
	if err := <-pollDone; err == nil {
		t.Error("the long poll outlived the server")
	}
}

// TestMetricsCountsSurviveRestart starts a server on a file with
// instances in it: the counts come from the store, not from zero.
func TestMetricsCountsSurviveRestart(t *testing.T) {
	env := mustServer(t, server.Config{})
	ctx := t.Context()
	for i := range 5 {
		if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: fmt.Sprint("r-", i), Machine: "report"}); err != nil {
			t.Fatal(err)
		}
	}
	if env.srv.MetricsAddr() != "" || env.srv.Metrics() != nil {
		t.Fatal("metrics on without MetricsAddr")
	}
	env.stop(t)
	again := mustServer(t, server.Config{DB: env.db, MetricsAddr: "127.0.0.1:0"})
	if got := mustScrape(t, again).must(t, "dfsmr_instances", "machine=report", "node=downloadable", "status=READY"); got != 5 {
		t.Fatalf("after restart: %v READY report instances, want 5", got)
	}
	resp, err := http.Get("http://" + again.srv.MetricsAddr() + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("pprof without --pprof: %s, want 404", resp.Status)
	}
}

// TestMetricsAddrInUse fails Start with a clear error when the metrics
// port is taken, and the server still stops cleanly.
func TestMetricsAddrInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	s, err := server.New(t.Context(), server.Config{
		Addr: "127.0.0.1:0", DB: filepath.Join(t.TempDir(), "dfsmr.db"), MetricsAddr: taken.Addr().String(),
		Logger: slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context(), nil); err == nil || !strings.Contains(err.Error(), "metrics") {
		t.Fatalf("Start with the metrics port taken: %v", err)
	}
	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestMetricsInstancesPrinterFarm runs a printer farm (simulated printers
// on Connect streams, an order of jobs, an operator who takes the parts
// off) against a real server, then compares every dfsmr_instances series
// with a fresh count of the store. Device changes name the job they are
// about but move no instance: they must not be counted as instances.
func TestMetricsInstancesPrinterFarm(t *testing.T) {
	env := mustServer(t, server.Config{MetricsAddr: "127.0.0.1:0"})
	c := client.New(env.conn)
	const printers, jobs = 3, 9
	ch := make(chan printersim.Event, 4096)
	on := func(ev printersim.Event) { ch <- ev }
	fleet := printersim.NewFleet("p", printers, printersim.Profile{PrintTime: 20 * time.Millisecond, PrintJitter: -1}, 1)
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 2)
	go func() { done <- fleet.Run(ctx, printersim.Link{Client: c, Pool: "farm", OnEvent: on}, nil) }()
	op := &printersim.Operator{Client: c, FromSeq: 1, OnEvent: on}
	go func() { done <- op.Run(ctx) }()

	// Every printer registered in the pool before the order is placed.
	timeout := time.After(time.Minute)
	for connected := 0; connected < printers; {
		select {
		case ev := <-ch:
			if ev.Kind == printersim.EventConnected {
				connected++
			}
		case <-timeout:
			t.Fatalf("after a minute %d of %d printers connected", connected, printers)
		}
	}
	if _, err := c.Devices.SubmitOrder(t.Context(), &pb.SubmitOrderRequest{OrderId: "o", Model: "benchy", Quantity: jobs, Pool: "farm"}); err != nil {
		t.Fatal(err)
	}
	// Every job printed, retrieved by the operator, and cleared off its bed.
	var cleared, retrieved int
	for cleared < jobs || retrieved < jobs {
		select {
		case ev := <-ch:
			switch ev.Kind {
			case printersim.EventCleared:
				cleared++
			case printersim.EventRetrieved:
				retrieved++
			}
		case <-timeout:
			t.Fatalf("after a minute %d of %d jobs cleared, %d retrieved", cleared, jobs, retrieved)
		}
	}
	stop()
	for range 2 {
		if err := <-done; err != nil && err != context.Canceled {
			t.Fatal(err)
		}
	}

	scraped := map[[3]string]int64{}
	for _, m := range mustScrape(t, env)["dfsmr_instances"].GetMetric() {
		var k [3]string
		for _, lp := range m.GetLabel() {
			switch lp.GetName() {
			case "machine":
				k[0] = lp.GetValue()
			case "node":
				k[1] = lp.GetValue()
			case "status":
				k[2] = lp.GetValue()
			}
		}
		scraped[k] = int64(m.GetGauge().GetValue())
	}
	kept := env.srv.Metrics().Instances()
	env.stop(t)

	st, err := bolt.Open(env.db, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fresh := metrics.New(metrics.Sources{})
	if err := fresh.Load(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	want := fresh.Instances()
	if got := want[[3]string{"print_job", "done", "FINAL"}]; got != jobs {
		t.Errorf("the store has %d print jobs done, want %d (all: %v)", got, jobs, want)
	}
	if !maps.Equal(scraped, want) {
		t.Errorf("dfsmr_instances series %v, fresh count of the store %v", scraped, want)
	}
	if !maps.Equal(kept, want) {
		t.Errorf("counts kept from commits %v, fresh count of the store %v", kept, want)
	}
}

// exercisedMetrics starts a server with metrics and exercises it until
// every metric it registers has a series (vector metrics export nothing
// before their first label values): a machine with a retry, a lease, a
// Changes stream and a device. It returns the metric names a query can
// use, histograms with their _bucket, _sum and _count series.
func exercisedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	env := mustServer(t, server.Config{MetricsAddr: "127.0.0.1:0"})
	ctx := t.Context()
	if _, err := env.machines.DefineMachine(ctx, &pb.DefineMachineRequest{Source: meteredYAML}); err != nil {
		t.Fatal(err)
	}
	follow, err := env.changes.Changes(ctx, &pb.ChangesRequest{Machine: "metered"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := follow.Header(); err != nil {
		t.Fatal(err)
	}
	dev, err := client.New(env.conn).ConnectDevice(ctx, &pb.DeviceRegistration{DeviceId: "printer-1"}, client.DeviceState{Node: "ready"})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if _, err := dev.Recv(); err != nil {
		t.Fatal(err)
	}
	if _, err := env.instances.StartInstance(ctx, &pb.StartInstanceRequest{Id: "m-1", Machine: "metered"}); err != nil {
		t.Fatal(err)
	}
	r, err := env.work.Ready(ctx, &pb.ReadyRequest{Worker: "w", Machine: "metered"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.work.Transition(ctx, &pb.TransitionRequest{Id: "m-1", Token: r.GetLease().GetToken(), Transition: "error"}); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for name, fam := range mustScrape(t, env) {
		names[name] = true
		switch fam.GetType() {
		case dto.MetricType_HISTOGRAM:
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			names[name+"_sum"], names[name+"_count"] = true, true
		}
	}
	return names
}

var (
	promQLStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promQLBraces   = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promQLGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promQLVars     = regexp.MustCompile(`\$\w+`)
	promQLLabelArg = regexp.MustCompile(`,\s*\w+\)\s*$`)
	promQLIdent    = regexp.MustCompile(`(?:^|[^a-zA-Z0-9_:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)`)
	// promQLWords are the functions, aggregations and keywords the
	// dashboards and rules use; any other identifier is a metric.
	promQLWords = map[string]bool{
		"sum": true, "max": true, "min": true, "avg": true, "count": true, "topk": true, "bottomk": true,
		"rate": true, "irate": true, "increase": true, "delta": true, "histogram_quantile": true,
		"label_values": true, "and": true, "or": true, "unless": true, "bool": true, "offset": true,
	}
)

// promQLMetrics returns the metric names an expression reads.
func promQLMetrics(expr string) []string {
	e := promQLStrings.ReplaceAllString(expr, `""`)
	e = promQLBraces.ReplaceAllString(e, " ")
	e = promQLGrouping.ReplaceAllString(e, " ")
	e = promQLVars.ReplaceAllString(e, " ")
	var out []string
	for _, m := range promQLIdent.FindAllStringSubmatch(e, -1) {
		if !promQLWords[m[1]] {
			out = append(out, m[1])
		}
	}
	return out
}

// TestDashboardsUseRegisteredMetrics parses the Grafana dashboard and the
// Prometheus alert rules under docs/ and checks that every metric their
// expressions read is one the server registers; the rules file must be in
// the groups/rules format with the keys Prometheus requires.
func TestDashboardsUseRegisteredMetrics(t *testing.T) {
	registered := exercisedMetrics(t)
	check := func(where, expr string) {
		t.Helper()
		metrics := promQLMetrics(expr)
		if len(metrics) == 0 {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, m := range metrics {
			if !registered[m] {
				t.Errorf("%s: %q reads %s, which the server does not register", where, expr, m)
			}
		}
	}

	raw, err := os.ReadFile("../docs/grafana/dfsmr-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Name       string
				Type       string
				Definition string
			}
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	exprs := 0
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			check("panel "+p.Title, tg.Expr)
			exprs++
		}
	}
	for _, v := range dash.Templating.List {
		if v.Type == "query" {
			// label_values(metric, label): the label is no metric.
			check("variable "+v.Name, promQLLabelArg.ReplaceAllString(v.Definition, ")"))
		}
	}

	raw, err = os.ReadFile("../docs/prometheus/dfsmr-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string
			Rules []map[string]any
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("alert rules: %v", err)
	}
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("rule group %q: needs a name and rules", g.Name)
		}
		for _, r := range g.Rules {
			name, _ := r["alert"].(string)
			expr, _ := r["expr"].(string)
			if name == "" || expr == "" {
				t.Errorf("rule %v: needs alert and expr", r)
				continue
			}
			for k := range r {
				if !slices.Contains([]string{"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, k) {
					t.Errorf("rule %s: unknown key %q", name, k)
				}
			}
			if f, ok := r["for"].(string); ok {
				if _, err := model.ParseDuration(f); err != nil {
					t.Errorf("rule %s: for: %v", name, err)
				}
			}
			if ann, _ := r["annotations"].(map[string]any); ann["summary"] == nil {
				t.Errorf("rule %s: no summary annotation", name)
			}
			alerts[name] = true
			check("alert "+name, expr)
		}
	}
	// What the operator guide promises an alert for.
	for _, want := range []string{"DfsmrLeasesPastExpiry", "DfsmrLeaseHeldLong", "DfsmrBreakerOpen",
		"DfsmrChangelogSubscriberLagging", "DfsmrInstancesFailing"} {
		if !alerts[want] {
			t.Errorf("alert %s missing", want)
		}
	}
	t.Logf("%d dashboard queries and %d alerts checked against %d metric names", exprs, len(alerts), len(registered))
}

// TestOperationsListsRegisteredMetrics: the metric table of
// docs/operations.md lists exactly the dfsmr_ metrics the server
// registers, and every other metric it names exists.
func TestOperationsListsRegisteredMetrics(t *testing.T) {
	registered := exercisedMetrics(t)
	raw, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(raw), "\n## Metrics\n")
	section, _, _ = strings.Cut(section, "\n## ")
	documented := map[string]bool{}
	for line := range strings.Lines(section) {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cell := strings.Split(line, "|")[1]
		for _, name := range strings.Split(cell, ",") {
			documented[strings.Trim(strings.TrimSpace(name), "`")] = true
		}
	}
	// The example expressions.
	_, rest, _ := strings.Cut(section, "```promql\n")
	block, _, _ := strings.Cut(rest, "```")
	for line := range strings.Lines(block) {
		expr, _, _ := strings.Cut(line, "#")
		for _, m := range promQLMetrics(expr) {
			if !registered[m] {
				t.Errorf("operations.md: %q reads %s, which the server does not register", strings.TrimSpace(expr), m)
			}
		}
	}
	for name := range documented {
		if !registered[name] {
			t.Errorf("operations.md lists %s, which the server does not register", name)
		}
	}
	for name := range registered {
		if strings.HasPrefix(name, metrics.Namespace+"_") && !documented[name] && !documented[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")] {
			t.Errorf("the server registers %s, which operations.md does not list", name)
		}
	}
}

// TestPromQLMetrics: the extraction the documentation tests rely on finds
// the metrics of an expression and nothing else.
func TestPromQLMetrics(t *testing.T) {
	for expr, want := range map[string][]string{
		`histogram_quantile(0.99, sum by (grpc_method, le) (rate(grpc_server_handling_seconds_bucket{grpc_type="unary"}[$__rate_interval])))`: {"grpc_server_handling_seconds_bucket"},
		`rate(a_sum[5m]) / rate(a_count[5m])`:                                           {"a_sum", "a_count"},
		`process_resident_memory_bytes / 1e6`:                                           {"process_resident_memory_bytes"},
		`max by (machine) (dfsmr_breaker_open) == 1`:                                    {"dfsmr_breaker_open"},
		`sum(rate(dfsmr_changes_total{kind="FAILED", machine=~"$machine"}[10m])) > 0.1`: {"dfsmr_changes_total"},
		`dfsmr_typo_total > 0`:                                                          {"dfsmr_typo_total"},
	} {
		if got := promQLMetrics(expr); !slices.Equal(got, want) {
			t.Errorf("promQLMetrics(%q) = %v, want %v", expr, got, want)
		}
	}
}
