package bolt_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
	"github.com/dfsmr/dfsmr/server/store/bolt"
	"github.com/dfsmr/dfsmr/server/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Exercise(t, func(t *testing.T, cfg storetest.Config) store.Store {
		return mustOpen(t, filepath.Join(cfg.Dir, "dfsmr.db"), bolt.Options{CommitHook: cfg.Hook})
	})
}

// TestConformanceNoBatching runs the suite with group commit off, so that
// every behaviour also holds for one operation per transaction.
func TestConformanceNoBatching(t *testing.T) {
	storetest.Exercise(t, func(t *testing.T, cfg storetest.Config) store.Store {
		return mustOpen(t, filepath.Join(cfg.Dir, "dfsmr.db"), bolt.Options{CommitHook: cfg.Hook, MaxBatch: 1})
	})
}

// mustOpen opens a store whose logs go to t.
func mustOpen(tb testing.TB, path string, opts bolt.Options) *bolt.Store {
	tb.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	s, err := bolt.Open(path, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func readyInstance(id string) fsm.Instance {
	return fsm.Instance{ID: id, Machine: "m", Version: 1, Node: "n", Status: fsm.StatusReady, Rev: 1}
}

func TestGroupCommitBatches(t *testing.T) {
	var observed, observedOps atomic.Uint64
	s := mustOpen(t, filepath.Join(t.TempDir(), "db"), bolt.Options{
		CommitObserver: func(ops int, took time.Duration) {
			observed.Add(1)
			observedOps.Add(uint64(ops))
		},
	})
	const workers, ops = 32, 20
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range ops {
				err := s.Update(context.Background(), func(tx store.Tx) error {
					if err := tx.PutInstance(readyInstance(fmt.Sprintf("w%d-%d", w, i))); err != nil {
						return err
					}
					_, err := tx.AppendChange(fsm.Change{Instance: fmt.Sprintf("w%d-%d", w, i)})
					return err
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	st := s.Stats()
	t.Logf("%d ops in %d commits (%.1f ops/commit)", st.Ops, st.Commits, float64(st.Ops)/float64(st.Commits))
	if st.Ops != workers*ops {
		t.Fatalf("ops = %d, want %d", st.Ops, workers*ops)
	}
	if st.Commits >= st.Ops/2 {
		t.Errorf("%d commits for %d concurrent ops: group commit is not batching", st.Commits, st.Ops)
	}
	if observed.Load() != st.Commits || observedOps.Load() != st.Ops {
		t.Errorf("observer saw %d commits of %d ops, want %d of %d", observed.Load(), observedOps.Load(), st.Commits, st.Ops)
	}
}

func TestLoneUpdateCommitsAlone(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "db"), bolt.Options{})
	for i := range 5 {
		if err := s.Update(context.Background(), func(tx store.Tx) error {
			return tx.PutInstance(readyInstance(fmt.Sprint(i)))
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Read-only and failing updates need no commit.
	_ = s.Update(context.Background(), func(tx store.Tx) error { return errors.New("no") })
	_ = s.Update(context.Background(), func(tx store.Tx) error { _, err := tx.Head(); return err })
	if st := s.Stats(); st.Commits != 5 || st.Ops != 6 {
		t.Fatalf("stats %+v, want 5 commits and 6 ops", st)
	}
}

func TestRejectsUnstorableNames(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "db"), bolt.Options{})
	for _, in := range []fsm.Instance{
		{ID: "", Machine: "m", Node: "n", Status: fsm.StatusReady},
		{ID: "a\x00b", Machine: "m", Node: "n", Status: fsm.StatusReady},
		{ID: "a", Machine: "m\x00", Node: "n", Status: fsm.StatusReady},
		{ID: "a", Machine: "m", Node: "", Status: fsm.StatusReady},
		{ID: "a", Machine: "m", Node: "n", Status: fsm.StatusUnspecified},
	} {
		if err := s.Update(context.Background(), func(tx store.Tx) error { return tx.PutInstance(in) }); err == nil {
			t.Errorf("PutInstance(%+q) succeeded", in.ID+"/"+in.Machine+"/"+in.Node)
		}
	}
	if err := s.Update(context.Background(), func(tx store.Tx) error {
		return tx.PutMachine(store.MachineRecord{ID: "m\x00", Version: 1})
	}); err == nil {
		t.Error("PutMachine with NUL succeeded")
	}
	if err := s.Update(context.Background(), func(tx store.Tx) error {
		return tx.PutMachine(store.MachineRecord{ID: "m", Version: 0})
	}); err == nil {
		t.Error("PutMachine version 0 succeeded")
	}
}

func TestLockedByAnotherOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	mustOpen(t, path, bolt.Options{})
	start := time.Now()
	_, err := bolt.Open(path, bolt.Options{Timeout: 50 * time.Millisecond})
	if !errors.Is(err, bolt.ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), "database is locked by another process") {
		t.Errorf("message %q", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestOptionsValidate(t *testing.T) {
	if _, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{MaxBatch: -1}); err == nil {
		t.Error("negative MaxBatch accepted")
	}
}

// TestAbandonedWhileQueued checks that a caller whose context ends while
// its update waits behind a long one returns at once, and that its update
// never runs.
func TestAbandonedWhileQueued(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "db"), bolt.Options{})
	inside, release := make(chan struct{}), make(chan struct{})
	go func() {
		_ = s.Update(context.Background(), func(tx store.Tx) error {
			close(inside)
			<-release
			return tx.PutInstance(readyInstance("blocker"))
		})
	}()
	<-inside
	ctx, cancel := context.WithCancel(context.Background())
	waiting := &doneSignal{Context: ctx, called: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		errc <- s.Update(waiting, func(tx store.Tx) error { return tx.PutInstance(readyInstance("abandoned")) })
	}()
	<-waiting.called // Update queued the request and waits for it
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned update returned %v", err)
	}
	close(release)
	_ = s.Update(context.Background(), func(tx store.Tx) error { return nil })
	_ = s.View(context.Background(), func(tx store.ReadTx) error {
		if _, err := tx.Instance("abandoned"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("abandoned update was applied: %v", err)
		}
		return nil
	})
}

// doneSignal reports the first call of Done: Update calls it only once its
// request is queued.
type doneSignal struct {
	context.Context
	once   sync.Once
	called chan struct{}
}

func (d *doneSignal) Done() <-chan struct{} {
	d.once.Do(func() { close(d.called) })
	return d.Context.Done()
}

// The kill-9 test: a child process acknowledges updates on stdout, the
// parent kills it at a random moment and checks that everything
// acknowledged survived.

const helperEnv = "DFSMR_BOLT_HELPER_DB"

// TestHelperProcess is the child of TestKill9. It does nothing in a normal
// run.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper process for TestKill9")
	}
	s, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	var wg sync.WaitGroup
	fmt.Println("READY")
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("p%d-w%d-%d", os.Getpid(), w, i)
				var seq uint64
				err := s.Update(context.Background(), func(tx store.Tx) error {
					if err := tx.PutInstance(readyInstance(id)); err != nil {
						return err
					}
					var err error
					seq, err = tx.AppendChange(fsm.Change{Instance: id, Kind: fsm.ChangeStarted})
					return err
				})
				if err != nil {
					fmt.Println("ERR", err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(out, "%d %s\n", seq, id)
				_ = out.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

func TestKill9(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	acked := map[uint64]string{}
	for cycle := range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v=false")
		cmd.Env = append(os.Environ(), helperEnv+"="+path)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(stdout)
		if !lines.Scan() || lines.Text() != "READY" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("cycle %d: child did not start: %q", cycle, lines.Text())
		}
		// Kill after a random number of acknowledgements, mid-stream.
		killAt := 50 + r.IntN(400)
		n := 0
		for lines.Scan() {
			f := strings.Fields(lines.Text())
			if len(f) != 2 || f[0] == "ERR" {
				t.Fatalf("child: %q", lines.Text())
			}
			seq, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			acked[seq] = f[1]
			if n++; n == killAt {
				_ = cmd.Process.Signal(syscall.SIGKILL)
			}
		}
		err = cmd.Wait()
		if n < killAt {
			t.Fatalf("cycle %d: child ended after %d acks: %v", cycle, n, err)
		}

		verifyAcked(t, path, acked, fmt.Sprintf("cycle %d: killed after %d acks", cycle, n))
	}
}

// verifyAcked opens the store at path and checks that its changelog runs
// without a gap, that every change names a stored instance, and that every
// change in acked (sequence number -> instance) is there.
func verifyAcked(t *testing.T, path string, acked map[uint64]string, what string) {
	t.Helper()
	s := mustOpen(t, path, bolt.Options{Timeout: 5 * time.Second})
	err := s.View(context.Background(), func(tx store.ReadTx) error {
		head, err := tx.Head()
		if err != nil {
			return err
		}
		cs, err := tx.Changes(1, 0)
		if err != nil {
			return err
		}
		if uint64(len(cs)) != head {
			return fmt.Errorf("head %d, %d changes", head, len(cs))
		}
		for i, c := range cs {
			if c.Seq != uint64(i+1) {
				return fmt.Errorf("gap: change %d has seq %d", i+1, c.Seq)
			}
			if _, err := tx.Instance(c.Instance); err != nil {
				return fmt.Errorf("change %d names %q: %w", c.Seq, c.Instance, err)
			}
		}
		for seq, id := range acked {
			if seq > head || cs[seq-1].Instance != id {
				return fmt.Errorf("acknowledged change %d of %s lost (head %d)", seq, id, head)
			}
		}
		t.Logf("%s; %d acknowledged in total, head %d", what, len(acked), head)
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkUpdate measures durable (fsync) updates of the engine's shape,
// read + put instance + append change, from a fixed number of concurrent
// writers. (b.RunParallel would start a multiple of GOMAXPROCS goroutines;
// the point here is the writer count.)
func BenchmarkUpdate(b *testing.B) {
	for _, writers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s := mustOpen(b, filepath.Join(b.TempDir(), "db"), bolt.Options{})
			var n atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range writers {
				wg.Go(func() {
					for {
						i := n.Add(1)
						if i > int64(b.N) {
							return
						}
						id := fmt.Sprintf("i%09d", i%10000)
						err := s.Update(context.Background(), func(tx store.Tx) error {
							in := readyInstance(id)
							if old, err := tx.Instance(id); err == nil {
								in.Rev = old.Rev + 1
							}
							if err := tx.PutInstance(in); err != nil {
								return err
							}
							_, err := tx.AppendChange(fsm.Change{Instance: id, Kind: fsm.ChangeStarted, Machine: "m"})
							return err
						})
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			st := s.Stats()
			b.ReportMetric(float64(st.Ops)/elapsed.Seconds(), "ops/s")
			b.ReportMetric(float64(st.Ops)/float64(max(st.Commits, 1)), "ops/commit")
		})
	}
}
