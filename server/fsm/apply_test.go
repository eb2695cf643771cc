package fsm

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// testMachine is the report machine in miniature: a start node with an error
// edge, a delayed self-transition, a signal, and two final nodes.
func testMachine() *Machine {
	retry := Retry{MaxAttempts: 3, Backoff: BackoffExponential, Initial: time.Second, Max: time.Minute}
	return &Machine{
		ID: "m", Version: 1, Kind: KindWorkflow, UpgradeStrategy: UpgradeContinue, Start: "a",
		Order: []string{"a", "b", "done", "failed"},
		Nodes: map[string]*Node{
			"a": {Name: "a", Timeout: Timeout{Fixed: 30 * time.Second}, Retry: retry,
				Order: []string{"ok", "error", "throttled", "give_up", "poke"},
				Transitions: map[string]*Transition{
					"ok":        {Name: "ok", To: "b"},
					"error":     {Name: "error", To: "a"},
					"throttled": {Name: "throttled", To: "a", Delay: 30 * time.Second},
					"give_up":   {Name: "give_up", To: "failed"},
					"poke":      {Name: "poke", To: "b", Signal: true},
				}},
			"b": {Name: "b", Retry: Retry{Backoff: BackoffFixed}, Order: []string{"ok", "later"},
				Transitions: map[string]*Transition{
					"ok":    {Name: "ok", To: "done"},
					"later": {Name: "later", To: "done", Delay: time.Minute},
				}},
			"done":   {Name: "done", Final: true},
			"failed": {Name: "failed", Final: true},
		},
	}
}

func mustStart(t *testing.T, m *Machine) Instance {
	t.Helper()
	in, _, err := Start(m, StartArgs{ID: "i1", Params: map[string]string{"k": "v"}, Priority: 5}, t0)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func mustApply(t *testing.T, m *Machine, in Instance, ev Event, now time.Time) (Instance, []Change) {
	t.Helper()
	out, ch, err := Apply(m, in, ev, now)
	if err != nil {
		t.Fatalf("Apply(%T): %v", ev, err)
	}
	return out, ch
}

func leased(t *testing.T, m *Machine) Instance {
	t.Helper()
	in, _ := mustApply(t, m, mustStart(t, m), Acquire{Worker: "w", For: 30 * time.Second}, t0)
	return in
}

func TestStart(t *testing.T) {
	m := testMachine()
	tests := []struct {
		name   string
		args   StartArgs
		status Status
		due    time.Time
		err    error
	}{
		{"now", StartArgs{ID: "x"}, StatusReady, t0, nil},
		{"past due", StartArgs{ID: "x", DueAt: t0.Add(-time.Hour)}, StatusReady, t0, nil},
		{"delayed", StartArgs{ID: "x", DueAt: t0.Add(time.Hour)}, StatusWaiting, t0.Add(time.Hour), nil},
		{"empty id", StartArgs{}, 0, time.Time{}, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, ch, err := Start(m, tt.args, t0)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if in.Status != tt.status || !in.DueAt.Equal(tt.due) || in.Node != "a" || in.Attempt != 1 || in.Rev != 1 {
				t.Fatalf("instance = %+v", in)
			}
			if len(ch) != 1 || ch[0].Kind != ChangeStarted || ch[0].ToNode != "a" || ch[0].ToStatus != tt.status {
				t.Fatalf("changes = %+v", ch)
			}
		})
	}
}

func TestStartFinalNode(t *testing.T) {
	m := &Machine{ID: "f", Start: "end", Nodes: map[string]*Node{"end": {Name: "end", Final: true}}}
	in, _, err := Start(m, StartArgs{ID: "x"}, t0)
	if err != nil || in.Status != StatusFinal {
		t.Fatalf("in=%+v err=%v", in, err)
	}
}

// TestApplyStatusMatrix applies every event to an instance in every status
// and checks which are accepted and with which error the rest are refused.
func TestApplyStatusMatrix(t *testing.T) {
	m := testMachine()
	ready := mustStart(t, m)
	lease := leased(t, m)
	waiting, _, err := Start(m, StartArgs{ID: "i1", DueAt: t0.Add(time.Minute)}, t0)
	if err != nil {
		t.Fatal(err)
	}
	final, _ := mustApply(t, m, ready, Cancel{Reason: "test"}, t0)
	tok := lease.Lease.Token
	later := t0.Add(time.Hour)

	states := map[string]Instance{"READY": ready, "LEASED": lease, "WAITING": waiting, "FINAL": final}
	events := map[string]Event{
		"acquire":    Acquire{Worker: "w2", For: time.Second},
		"report":     Report{Token: tok, Transition: "ok"},
		"heartbeat":  Heartbeat{Token: tok, For: time.Second},
		"relinquish": Relinquish{Token: tok},
		"signal":     Signal{Name: "poke"},
		"cancel":     Cancel{},
		"expire":     Expire{Token: tok},
		"wake":       Wake{},
	}
	want := map[string]map[string]error{
		"READY":   {"acquire": nil, "report": ErrStaleLease, "heartbeat": ErrStaleLease, "relinquish": ErrStaleLease, "signal": nil, "cancel": nil, "expire": ErrStaleLease, "wake": ErrNotDue},
		"LEASED":  {"acquire": ErrNotReady, "report": nil, "heartbeat": nil, "relinquish": nil, "signal": nil, "cancel": nil, "expire": nil, "wake": ErrNotDue},
		"WAITING": {"acquire": ErrNotReady, "report": ErrStaleLease, "heartbeat": ErrStaleLease, "relinquish": ErrStaleLease, "signal": nil, "cancel": nil, "expire": ErrStaleLease, "wake": nil},
		"FINAL":   {"acquire": ErrFinal, "report": ErrStaleLease, "heartbeat": ErrStaleLease, "relinquish": ErrStaleLease, "signal": ErrFinal, "cancel": ErrFinal, "expire": ErrStaleLease, "wake": ErrFinal},
	}
	for sname, in := range states {
		for ename, ev := range events {
			t.Run(sname+"/"+ename, func(t *testing.T) {
				before := in.Clone()
				out, ch, err := Apply(m, in, ev, later)
				wantErr := want[sname][ename]
				if !errors.Is(err, wantErr) || (wantErr == nil) != (err == nil) {
					t.Fatalf("err = %v, want %v", err, wantErr)
				}
				if err != nil {
					if len(ch) != 0 || out.ID != "" {
						t.Fatalf("refused event returned state: %+v %+v", out, ch)
					}
				} else {
					if len(ch) == 0 || out.Rev != in.Rev+uint64(len(ch)) || !out.UpdatedAt.Equal(later) {
						t.Fatalf("accepted event: rev %d -> %d, %d changes", in.Rev, out.Rev, len(ch))
					}
					for _, c := range ch {
						if c.Instance != in.ID || !c.At.Equal(later) || c.Machine != "m" {
							t.Fatalf("change = %+v", c)
						}
					}
				}
				if in.Params["k"] != before.Params["k"] || in.Status != before.Status {
					t.Fatal("Apply modified its input")
				}
			})
		}
	}
}

func TestAcquireTokens(t *testing.T) {
	m := testMachine()
	in := mustStart(t, m)
	var last uint64
	for i := range 5 {
		var ch []Change
		in, ch = mustApply(t, m, in, Acquire{Worker: "w", For: time.Second}, t0)
		if in.Lease.Token <= last || in.Token != in.Lease.Token || ch[0].Token != in.Token {
			t.Fatalf("round %d: token %d after %d", i, in.Lease.Token, last)
		}
		if !in.Lease.ExpiresAt.Equal(t0.Add(time.Second)) || !ch[0].DueAt.Equal(in.Lease.ExpiresAt) {
			t.Fatalf("expiry %v", in.Lease.ExpiresAt)
		}
		last = in.Lease.Token
		in, _ = mustApply(t, m, in, Relinquish{Token: last}, t0)
		if in.Status != StatusReady || in.Attempt != 1 {
			t.Fatalf("relinquish: %+v", in)
		}
	}
	in, _ = mustApply(t, m, in, Acquire{Worker: "w"}, t0)
	if !in.Lease.ExpiresAt.IsZero() {
		t.Fatal("zero duration lease must never expire")
	}
	if _, ok := in.DueTime(); ok {
		t.Fatal("never-expiring lease is due")
	}
}

func TestReport(t *testing.T) {
	m := testMachine()
	tests := []struct {
		name       string
		ev         Report
		node       string
		status     Status
		attempt    int32
		due        time.Duration // after now; -1 = zero time
		kinds      []ChangeKind
		wantErr    error
		wantParams map[string]string
	}{
		{name: "to next node", ev: Report{Transition: "ok", Params: map[string]string{"x": "1"}}, node: "b", status: StatusReady, attempt: 1, due: 0,
			kinds: []ChangeKind{ChangeTransitioned}, wantParams: map[string]string{"k": "v", "x": "1"}},
		{name: "to final", ev: Report{Transition: "give_up"}, node: "failed", status: StatusFinal, attempt: 1, due: -1, kinds: []ChangeKind{ChangeTransitioned}},
		{name: "error edge backs off", ev: Report{Transition: "error"}, node: "a", status: StatusWaiting, attempt: 2, due: time.Second, kinds: []ChangeKind{ChangeTransitioned}},
		{name: "delayed self edge costs no attempt", ev: Report{Transition: "throttled"}, node: "a", status: StatusWaiting, attempt: 1, due: 30 * time.Second, kinds: []ChangeKind{ChangeTransitioned}},
		{name: "worker delay override", ev: Report{Transition: "throttled", Delay: 7 * time.Second, OverrideDelay: true}, node: "a", status: StatusWaiting, attempt: 1, due: 7 * time.Second, kinds: []ChangeKind{ChangeTransitioned}},
		{name: "override to zero", ev: Report{Transition: "ok", Delay: 0, OverrideDelay: true}, node: "b", status: StatusReady, attempt: 1, due: 0, kinds: []ChangeKind{ChangeTransitioned}},
		{name: "unknown transition", ev: Report{Transition: "nope"}, wantErr: ErrIllegalTransition},
		{name: "signal by a worker", ev: Report{Transition: "poke"}, wantErr: ErrIllegalTransition},
		{name: "negative delay", ev: Report{Transition: "ok", Delay: -1, OverrideDelay: true}, wantErr: ErrInvalid},
		{name: "delay too long", ev: Report{Transition: "ok", Delay: MaxDelay + 1, OverrideDelay: true}, wantErr: ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := leased(t, m)
			tt.ev.Token = in.Lease.Token
			now := t0.Add(time.Second)
			out, ch, err := Apply(m, in, tt.ev, now)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			wantDue := time.Time{}
			if tt.due >= 0 {
				wantDue = now.Add(tt.due)
			}
			if out.Node != tt.node || out.Status != tt.status || out.Attempt != tt.attempt || !out.DueAt.Equal(wantDue) {
				t.Fatalf("got node=%s status=%s attempt=%d due=%v; want %s %s %d %v", out.Node, out.Status, out.Attempt, out.DueAt, tt.node, tt.status, tt.attempt, wantDue)
			}
			if out.Lease != (Lease{}) {
				t.Fatalf("lease not cleared: %+v", out.Lease)
			}
			if len(ch) != len(tt.kinds) {
				t.Fatalf("changes = %+v", ch)
			}
			for i, k := range tt.kinds {
				if ch[i].Kind != k {
					t.Fatalf("change %d kind %s, want %s", i, ch[i].Kind, k)
				}
			}
			c := ch[0]
			if c.Transition != tt.ev.Transition || c.FromNode != "a" || c.ToNode != tt.node || c.FromStatus != StatusLeased || c.ToStatus != tt.status {
				t.Fatalf("change = %+v", c)
			}
			for k, v := range tt.wantParams {
				if out.Params[k] != v {
					t.Fatalf("params = %v, want %v", out.Params, tt.wantParams)
				}
			}
		})
	}
}

func TestReportStaleToken(t *testing.T) {
	m := testMachine()
	in := leased(t, m)
	old := in.Lease.Token
	in, _ = mustApply(t, m, in, Relinquish{Token: old}, t0)
	in, _ = mustApply(t, m, in, Acquire{Worker: "w2", For: time.Second}, t0)
	_, _, err := Apply(m, in, Report{Token: old, Transition: "ok"}, t0)
	var stale *StaleLeaseError
	if !errors.As(err, &stale) || stale.Have != old || stale.Want != in.Lease.Token {
		t.Fatalf("err = %v", err)
	}
}

func TestReportIdempotentRequest(t *testing.T) {
	m := testMachine()
	in := leased(t, m)
	tok := in.Lease.Token
	ev := Report{Token: tok, Transition: "ok", RequestID: "r1"}
	after, ch := mustApply(t, m, in, ev, t0)
	if len(ch) != 1 || len(after.Applied) != 1 || after.Applied[0] != (Applied{RequestID: "r1", Token: tok}) {
		t.Fatalf("first report: %+v", after)
	}
	again, ch, err := Apply(m, after, ev, t0.Add(time.Second))
	if err != nil || ch != nil || again.Rev != after.Rev || again.Node != "b" {
		t.Fatalf("repeat: %+v %v %v", again, ch, err)
	}
	// The same token without the request id, or with another one, is stale.
	for _, id := range []string{"", "r2"} {
		if _, _, err := Apply(m, after, Report{Token: tok, Transition: "ok", RequestID: id}, t0); !errors.Is(err, ErrStaleLease) {
			t.Fatalf("request id %q: err = %v", id, err)
		}
	}
	// A repeat after the instance went final is still recognised.
	final, _ := mustApply(t, m, leased(t, m), Report{Token: 1, Transition: "give_up", RequestID: "r9"}, t0)
	if _, ch, err := Apply(m, final, Report{Token: 1, Transition: "give_up", RequestID: "r9"}, t0); err != nil || ch != nil {
		t.Fatalf("repeat on final: %v %v", ch, err)
	}
}

// TestReportRetryWindow: a Transition retried with its request id and
// token is answered without effect as long as it is among the instance's
// last MaxApplied applied requests, whatever happened to the instance
// since: leased again, moved on, or FINAL.
func TestReportRetryWindow(t *testing.T) {
	m := testMachine()
	// loop runs n error edges in node a under request ids r1..rn, each
	// after a new lease; node a retries up to 3 attempts, so the machine
	// gets a generous retry policy here.
	m.Nodes["a"].Retry = Retry{MaxAttempts: 100, Backoff: BackoffFixed}
	loop := func(t *testing.T, n int) (Instance, []Report) {
		in := mustStart(t, m)
		var sent []Report
		for i := range n {
			in, _ = mustApply(t, m, in, Acquire{Worker: "w", For: time.Second}, t0)
			r := Report{Token: in.Lease.Token, Transition: "error", RequestID: fmt.Sprintf("r%d", i+1)}
			in, _ = mustApply(t, m, in, r, t0)
			sent = append(sent, r)
		}
		return in, sent
	}
	tests := []struct {
		name   string
		n      int // reports applied
		retry  int // index of the report retried
		then   func(t *testing.T, in Instance) Instance
		repeat bool
	}{
		{name: "last, not leased since", n: 1, retry: 0, repeat: true},
		{name: "last, leased again since", n: 1, retry: 0, repeat: true,
			then: func(t *testing.T, in Instance) Instance {
				in, _ = mustApply(t, m, in, Acquire{Worker: "w", For: time.Second}, t0)
				return in
			}},
		{name: "oldest in the window", n: MaxApplied, retry: 0, repeat: true},
		{name: "pushed out of the window", n: MaxApplied + 1, retry: 0, repeat: false},
		{name: "newest of a full window", n: MaxApplied + 1, retry: MaxApplied, repeat: true},
		{name: "after going final", n: 3, retry: 1, repeat: true,
			then: func(t *testing.T, in Instance) Instance {
				in, _ = mustApply(t, m, in, Acquire{Worker: "w", For: time.Second}, t0)
				in, _ = mustApply(t, m, in, Report{Token: in.Lease.Token, Transition: "give_up"}, t0)
				return in
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, sent := loop(t, tt.n)
			if tt.then != nil {
				in = tt.then(t, in)
			}
			out, ch, err := Apply(m, in, sent[tt.retry], t0.Add(time.Minute))
			if !tt.repeat {
				if err == nil {
					t.Fatalf("retry out of the window applied: %v", ch)
				}
				return
			}
			if err != nil || ch != nil || out.Rev != in.Rev || out.Status != in.Status || out.Token != in.Token {
				t.Fatalf("repeat: ch %v err %v; got %+v want %+v", ch, err, out, in)
			}
			if len(out.Applied) > MaxApplied {
				t.Fatalf("%d applied kept", len(out.Applied))
			}
		})
	}
}

// TestLeaseHolder: a lease taken by a principal is used by that principal
// only; without authentication (no holder) the token alone suffices.
func TestLeaseHolder(t *testing.T) {
	m := testMachine()
	start := mustStart(t, m)
	bound, _ := mustApply(t, m, start, Acquire{Worker: "w", Holder: "alice", For: time.Second}, t0)
	tok := bound.Lease.Token
	for _, ev := range []Event{
		Report{Token: tok, Holder: "bob", Transition: "ok"},
		Report{Token: tok, Transition: "ok"},
		Heartbeat{Token: tok, Holder: "bob", For: time.Second},
		Relinquish{Token: tok, Holder: "bob"},
	} {
		var nh *NotHolderError
		if _, _, err := Apply(m, bound, ev, t0); !errors.As(err, &nh) || !errors.Is(err, ErrNotHolder) {
			t.Errorf("%T from another principal: err = %v", ev, err)
		}
	}
	for _, ev := range []Event{
		Report{Token: tok, Holder: "alice", Transition: "ok"},
		Heartbeat{Token: tok, Holder: "alice", For: time.Second},
		Relinquish{Token: tok, Holder: "alice"},
	} {
		mustApply(t, m, bound, ev, t0)
	}
	// A retry of alice's applied Transition is hers too.
	done, _ := mustApply(t, m, bound, Report{Token: tok, Holder: "alice", Transition: "ok", RequestID: "q"}, t0)
	if _, _, err := Apply(m, done, Report{Token: tok, Holder: "bob", Transition: "ok", RequestID: "q"}, t0); !errors.Is(err, ErrNotHolder) {
		t.Errorf("retry by another principal: err = %v", err)
	}
	if _, ch, err := Apply(m, done, Report{Token: tok, Holder: "alice", Transition: "ok", RequestID: "q"}, t0); err != nil || ch != nil {
		t.Errorf("retry by the holder: %v %v", ch, err)
	}
	unbound, _ := mustApply(t, m, start, Acquire{Worker: "w", For: time.Second}, t0)
	mustApply(t, m, unbound, Report{Token: unbound.Lease.Token, Holder: "anyone", Transition: "ok"}, t0)
}

// TestChangeWorker: the changes of work events carry the lease's worker
// name; other changes carry none.
func TestChangeWorker(t *testing.T) {
	m := testMachine()
	in, ch := mustApply(t, m, mustStart(t, m), Acquire{Worker: "w1", For: time.Second}, t0)
	if ch[0].Worker != "w1" {
		t.Fatalf("LEASED worker %q", ch[0].Worker)
	}
	hb, ch := mustApply(t, m, in, Heartbeat{Token: in.Lease.Token, For: time.Second}, t0)
	if ch[0].Worker != "w1" {
		t.Fatalf("HEARTBEAT worker %q", ch[0].Worker)
	}
	if _, ch := mustApply(t, m, hb, Relinquish{Token: in.Lease.Token}, t0); ch[0].Worker != "w1" {
		t.Fatalf("RELINQUISHED worker %q", ch[0].Worker)
	}
	_, ch = mustApply(t, m, in, Report{Token: in.Lease.Token, Transition: "error"}, t0)
	if ch[0].Kind != ChangeTransitioned || ch[0].Worker != "w1" {
		t.Fatalf("TRANSITIONED worker %q", ch[0].Worker)
	}
	// Three attempts: the third error ends in dfsmr.failed, a change of the
	// server's own without a worker.
	in, _ = mustApply(t, m, mustStart(t, m), Acquire{Worker: "w1", For: time.Second}, t0)
	in.Attempt = 3
	_, ch = mustApply(t, m, in, Report{Token: in.Lease.Token, Transition: "error"}, t0)
	if len(ch) != 2 || ch[1].Kind != ChangeFailed || ch[1].Worker != "" {
		t.Fatalf("changes %+v", ch)
	}
}

func TestRetryExhaustion(t *testing.T) {
	m := testMachine() // node a: max 3 attempts, exponential from 1s
	in := mustStart(t, m)
	now := t0
	wantDelays := []time.Duration{time.Second, 2 * time.Second}
	for i, d := range wantDelays {
		in, _ = mustApply(t, m, in, Acquire{Worker: "w", For: time.Second}, now)
		var ch []Change
		in, ch = mustApply(t, m, in, Report{Token: in.Lease.Token, Transition: "error", Params: map[string]string{"error": "boom"}}, now)
		if in.Status != StatusWaiting || in.Attempt != int32(i+2) || !in.DueAt.Equal(now.Add(d)) {
			t.Fatalf("retry %d: %+v", i, in)
		}
		if ch[0].Params["error"] != "boom" || in.Params["error"] != "boom" {
			t.Fatalf("error text not recorded: %+v", ch[0])
		}
		now = in.DueAt
		in, _ = mustApply(t, m, in, Wake{}, now)
	}
	in, _ = mustApply(t, m, in, Acquire{Worker: "w", For: time.Second}, now)
	in, ch := mustApply(t, m, in, Report{Token: in.Lease.Token, Transition: "error"}, now)
	if in.Node != NodeFailed || in.Status != StatusFinal {
		t.Fatalf("after max attempts: %+v", in)
	}
	if len(ch) != 2 || ch[0].Kind != ChangeTransitioned || ch[1].Kind != ChangeFailed || ch[1].ToNode != NodeFailed || ch[1].FromNode != "a" || ch[1].Reason == "" {
		t.Fatalf("changes = %+v", ch)
	}
}

func TestExpire(t *testing.T) {
	m := testMachine()
	in := leased(t, m)
	tok := in.Lease.Token
	if _, _, err := Apply(m, in, Expire{Token: tok}, in.Lease.ExpiresAt.Add(-1)); !errors.Is(err, ErrNotDue) {
		t.Fatalf("early expire: %v", err)
	}
	out, ch := mustApply(t, m, in, Expire{Token: tok}, in.Lease.ExpiresAt)
	if out.Status != StatusWaiting || out.Attempt != 2 || len(ch) != 1 || ch[0].Kind != ChangeTimedOut || ch[0].Transition != TransitionTimeout {
		t.Fatalf("expire: %+v %+v", out, ch)
	}
	if _, _, err := Apply(m, out, Report{Token: tok, Transition: "ok"}, in.Lease.ExpiresAt); !errors.Is(err, ErrStaleLease) {
		t.Fatalf("late report after timeout: %v", err)
	}
	// A heartbeat pushes the expiry out.
	hb, _ := mustApply(t, m, in, Heartbeat{Token: tok, For: time.Minute}, t0.Add(20*time.Second))
	if !hb.Lease.ExpiresAt.Equal(t0.Add(80 * time.Second)) {
		t.Fatalf("heartbeat expiry %v", hb.Lease.ExpiresAt)
	}
	if _, _, err := Apply(m, hb, Expire{Token: tok}, in.Lease.ExpiresAt); !errors.Is(err, ErrNotDue) {
		t.Fatalf("expire after heartbeat: %v", err)
	}
}

func TestSignalRevokesLease(t *testing.T) {
	m := testMachine()
	in := leased(t, m)
	out, ch := mustApply(t, m, in, Signal{Name: "poke", Params: map[string]string{"by": "op"}}, t0)
	if out.Node != "b" || out.Status != StatusReady || out.Lease != (Lease{}) || ch[0].Kind != ChangeSignaled || out.Params["by"] != "op" {
		t.Fatalf("signal: %+v %+v", out, ch)
	}
	if _, _, err := Apply(m, out, Report{Token: in.Lease.Token, Transition: "ok"}, t0); !errors.Is(err, ErrStaleLease) {
		t.Fatalf("report after signal: %v", err)
	}
	if _, _, err := Apply(m, in, Signal{Name: "ok"}, t0); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("non-signal by signal: %v", err)
	}
}

func TestCancel(t *testing.T) {
	m := testMachine()
	out, ch := mustApply(t, m, leased(t, m), Cancel{Reason: "no longer needed"}, t0)
	if out.Node != NodeAborted || out.Status != StatusFinal || ch[0].Reason != "no longer needed" || ch[0].Kind != ChangeCanceled {
		t.Fatalf("cancel: %+v %+v", out, ch)
	}
}

func TestRetryDelay(t *testing.T) {
	tests := []struct {
		name    string
		r       Retry
		attempt int32
		u       float64
		want    time.Duration
	}{
		{"first attempt", Retry{Backoff: BackoffFixed, Initial: time.Second}, 1, 0.5, 0},
		{"fixed", Retry{Backoff: BackoffFixed, Initial: time.Second}, 5, 0.5, time.Second},
		{"linear", Retry{Backoff: BackoffLinear, Initial: time.Second}, 4, 0.5, 3 * time.Second},
		{"exponential", Retry{Backoff: BackoffExponential, Initial: time.Second}, 4, 0.5, 4 * time.Second},
		{"capped", Retry{Backoff: BackoffExponential, Initial: time.Second, Max: 3 * time.Second}, 4, 0.5, 3 * time.Second},
		{"huge attempt capped", Retry{Backoff: BackoffExponential, Initial: time.Second, Max: time.Hour}, 5000, 0.5, time.Hour},
		{"jitter low", Retry{Backoff: BackoffFixed, Initial: time.Second, Jitter: 0.5}, 2, 0, 500 * time.Millisecond},
		{"jitter mid", Retry{Backoff: BackoffFixed, Initial: time.Second, Jitter: 0.5}, 2, 0.5, time.Second},
		{"jitter high", Retry{Backoff: BackoffFixed, Initial: time.Second, Jitter: 0.5}, 2, 1, 1500 * time.Millisecond},
		{"no initial", Retry{Backoff: BackoffFixed}, 3, 0.5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.Delay(tt.attempt, tt.u); got != tt.want {
				t.Fatalf("Delay = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestInvariantPanics(t *testing.T) {
	m := testMachine()
	in := mustStart(t, m)
	in.Version = 99 // an instance applied to the wrong machine version is a bug
	defer func() {
		if _, ok := recover().(*InvariantError); !ok {
			t.Fatal("no invariant panic")
		}
	}()
	Apply(m, in, Wake{}, t0)
}
