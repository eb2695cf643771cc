package engine_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/machines"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
	"github.com/dfsmr/dfsmr/server/store/bolt"
)

const upV1 = `id: up
upgrade_strategy: continue
nodes:
  a:
    start: true
    timeout: 1m
    transitions: {ok: b, give_up: done}
  b:
    transitions: {ok: done}
  done: {final: true}
`

// upV2 keeps node a, drops node b, and takes its strategy from the test.
const upV2 = `id: up
upgrade_strategy: %s
nodes:
  a:
    start: true
    timeout: 1m
    transitions: {finish: done}
  done: {final: true}
`

// openEngine opens (or reopens) the store at path with an engine on it.
func openEngine(t *testing.T, path string) (*engine.Engine, store.Store) {
	t.Helper()
	var e *engine.Engine
	st, err := bolt.Open(path, bolt.Options{CommitHook: func(c []fsm.Change) { e.OnCommit(c) }})
	if err != nil {
		t.Fatal(err)
	}
	e = engine.New(st, engine.Options{})
	t.Cleanup(func() { st.Close() })
	return e, st
}

// upInstances starts instances of up@1 in every status: ready and waiting
// in a, leased in a (its token is returned), ready in b, and final.
func upInstances(t *testing.T, e *engine.Engine) (token uint64) {
	t.Helper()
	ctx := context.Background()
	start := func(id string, delay time.Duration) {
		t.Helper()
		if _, _, err := e.StartInstance(ctx, engine.StartArgs{ID: id, Machine: "up", Delay: delay}); err != nil {
			t.Fatal(err)
		}
	}
	lease := func(id string) fsm.Instance {
		t.Helper()
		in, ok, err := e.Ready(ctx, engine.ReadyArgs{Worker: "w", Machine: "up"})
		if err != nil || !ok || in.ID != id {
			t.Fatalf("Ready = %+v %v %v, want %s", in, ok, err, id)
		}
		return in
	}
	start("leased", 0)
	token = lease("leased").Lease.Token
	start("in-b", 0)
	inB := lease("in-b")
	if _, err := e.Transition(ctx, engine.TransitionArgs{ID: "in-b", Token: inB.Lease.Token, Transition: "ok"}); err != nil {
		t.Fatal(err)
	}
	start("ready", 0)
	start("waiting", time.Hour)
	start("final", 0)
	if _, err := e.CancelInstance(ctx, "final", "test", "t"); err != nil {
		t.Fatal(err)
	}
	return token
}

type wantInstance struct {
	version uint32
	node    string
	status  fsm.Status
	last    fsm.ChangeKind
}

func checkInstances(t *testing.T, e *engine.Engine, want map[string]wantInstance) {
	t.Helper()
	for id, w := range want {
		in, hist, err := history(context.Background(), e, id)
		if err != nil {
			t.Fatal(err)
		}
		last := hist[len(hist)-1]
		if in.Version != w.version || in.Node != w.node || in.Status != w.status || last.Kind != w.last {
			t.Errorf("%s: %s@%d in %s %s, last change %s; want @%d in %s %s, %s",
				id, in.Machine, in.Version, in.Node, in.Status, last.Kind, w.version, w.node, w.status, w.last)
		}
		if last.Kind == fsm.ChangeUpgraded || last.Kind == fsm.ChangeAborted {
			if last.Actor != engine.SystemActor || last.Version != w.version || !strings.Contains(last.Reason, "version 2") {
				t.Errorf("%s: change %+v", id, last)
			}
		}
	}
}

func TestDefineMachineUpgrades(t *testing.T) {
	ready, waiting, leased := fsm.StatusReady, fsm.StatusWaiting, fsm.StatusLeased
	final := fsm.StatusFinal
	tests := []struct {
		strategy string
		want     map[string]wantInstance
	}{
		{"continue", map[string]wantInstance{
			"ready":   {1, "a", ready, fsm.ChangeStarted},
			"waiting": {1, "a", waiting, fsm.ChangeStarted},
			"leased":  {1, "a", leased, fsm.ChangeLeased},
			"in-b":    {1, "b", ready, fsm.ChangeTransitioned},
			"final":   {1, fsm.NodeAborted, final, fsm.ChangeCanceled},
		}},
		{"upgrade", map[string]wantInstance{
			"ready":   {2, "a", ready, fsm.ChangeUpgraded},
			"waiting": {2, "a", waiting, fsm.ChangeUpgraded},
			"leased":  {2, "a", leased, fsm.ChangeUpgraded},
			"in-b":    {1, fsm.NodeAborted, final, fsm.ChangeAborted},
			"final":   {1, fsm.NodeAborted, final, fsm.ChangeCanceled},
		}},
		{"abort", map[string]wantInstance{
			"ready":   {1, fsm.NodeAborted, final, fsm.ChangeAborted},
			"waiting": {1, fsm.NodeAborted, final, fsm.ChangeAborted},
			"leased":  {1, fsm.NodeAborted, final, fsm.ChangeAborted},
			"in-b":    {1, fsm.NodeAborted, final, fsm.ChangeAborted},
			"final":   {1, fsm.NodeAborted, final, fsm.ChangeCanceled},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.strategy, func(t *testing.T) {
			ctx := context.Background()
			e, _ := openEngine(t, filepath.Join(t.TempDir(), "dfsmr.db"))
			if _, _, err := e.DefineMachine(ctx, "up.yaml", []byte(upV1), "t"); err != nil {
				t.Fatal(err)
			}
			token := upInstances(t, e)
			info, created, err := e.DefineMachine(ctx, "up.yaml", []byte(fmt.Sprintf(upV2, tt.strategy)), "t")
			if err != nil || !created || info.Record.Version != 2 {
				t.Fatalf("define v2: %+v %v %v", info.Record, created, err)
			}
			checkInstances(t, e, tt.want)

			// The worker that held the lease reports under its instance's
			// version now: v2 has no "ok" in a, v1 does; after an abort
			// its token is stale.
			report := func(tr string) error {
				_, err := e.Transition(ctx, engine.TransitionArgs{ID: "leased", Token: token, Transition: tr})
				return err
			}
			switch tt.strategy {
			case "upgrade":
				if err := report("ok"); !errors.Is(err, fsm.ErrIllegalTransition) {
					t.Fatalf("removed transition after upgrade: %v", err)
				}
				if err := report("finish"); err != nil {
					t.Fatalf("new transition after upgrade: %v", err)
				}
			case "abort":
				if err := report("ok"); !errors.Is(err, fsm.ErrStaleLease) {
					t.Fatalf("report after abort: %v", err)
				}
			case "continue":
				if err := report("ok"); err != nil {
					t.Fatalf("report on v1: %v", err)
				}
			}
		})
	}
}

// TestStartResumesUpgrade: a version stored without its sweep having run
// (a crash right after the define) has its instances moved at the next
// Lead, in more than one batch; a second Lead finds nothing to do.
func TestStartResumesUpgrade(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dfsmr.db")
	e, st := openEngine(t, path)
	if _, _, err := e.DefineMachine(ctx, "up.yaml", []byte(upV1), "t"); err != nil {
		t.Fatal(err)
	}
	upInstances(t, e)
	const many = 300 // more than one batch
	for i := range many {
		if _, _, err := e.StartInstance(ctx, engine.StartArgs{ID: fmt.Sprintf("bulk-%03d", i), Machine: "up"}); err != nil {
			t.Fatal(err)
		}
	}
	src := []byte(fmt.Sprintf(upV2, "upgrade"))
	m, err := machines.Compile("up.yaml", src)
	if err != nil {
		t.Fatal(err)
	}
	err = st.Update(ctx, func(tx store.Tx) error {
		return tx.PutMachine(store.MachineRecord{ID: "up", Version: 2, Source: src, Fingerprint: machines.Fingerprint(m), DefinedAt: time.Now()})
	})
	if err != nil {
		t.Fatal(err)
	}
	checkInstances(t, e, map[string]wantInstance{"ready": {1, "a", fsm.StatusReady, fsm.ChangeStarted}})

	for range 2 {
		if err := e.Lead(ctx); err != nil {
			t.Fatal(err)
		}
		if err := e.Follow(ctx); err != nil {
			t.Fatal(err)
		}
		checkInstances(t, e, map[string]wantInstance{
			"ready":    {2, "a", fsm.StatusReady, fsm.ChangeUpgraded},
			"waiting":  {2, "a", fsm.StatusWaiting, fsm.ChangeUpgraded},
			"leased":   {2, "a", fsm.StatusLeased, fsm.ChangeUpgraded},
			"in-b":     {1, fsm.NodeAborted, fsm.StatusFinal, fsm.ChangeAborted},
			"final":    {1, fsm.NodeAborted, fsm.StatusFinal, fsm.ChangeCanceled},
			"bulk-000": {2, "a", fsm.StatusReady, fsm.ChangeUpgraded},
			"bulk-299": {2, "a", fsm.StatusReady, fsm.ChangeUpgraded},
		})
		// Reopen, as after a restart.
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		e, st = openEngine(t, path)
	}
	var upgraded int
	err = st.View(ctx, func(tx store.ReadTx) error {
		changes, err := tx.Changes(0, 0)
		for _, c := range changes {
			if c.Kind == fsm.ChangeUpgraded {
				upgraded++
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if upgraded != many+3 {
		t.Fatalf("%d UPGRADED changes, want %d", upgraded, many+3)
	}
}
