package bolt_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
	"github.com/dfsmr/dfsmr/server/store/bolt"
)

// secret is a param value that appears in one instance record only, so a
// test can find that record's bytes in the file.
const secret = "payload-0123456789-abcdef"

// mustFile writes a closed store file of n instances (one of them,
// "victim", holding secret), their changes and a machine, and returns its
// path.
func mustFile(tb testing.TB, n int) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "dfsmr.db")
	s := mustOpen(tb, path, bolt.Options{NoSync: true})
	put := func(fn func(tx store.Tx) error) {
		if err := s.Update(context.Background(), fn); err != nil {
			tb.Fatal(err)
		}
	}
	put(func(tx store.Tx) error {
		return tx.PutMachine(store.MachineRecord{ID: "m", Version: 1, Source: []byte("id: m"), Fingerprint: "f"})
	})
	for i := 0; i < n; i += 100 {
		put(func(tx store.Tx) error {
			for j := i; j < min(i+100, n); j++ {
				id := fmt.Sprintf("i%06d", j)
				if err := tx.PutInstance(readyInstance(id)); err != nil {
					return err
				}
				if _, err := tx.AppendChange(fsm.Change{Instance: id, Kind: fsm.ChangeStarted, Machine: "m"}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	put(func(tx store.Tx) error {
		in := readyInstance("victim")
		in.Params = map[string]string{"p": secret}
		return tx.PutInstance(in)
	})
	if err := s.Close(); err != nil {
		tb.Fatal(err)
	}
	return path
}

// flipIn flips one bit in every copy of needle in the file (stale copies
// sit in free pages; only the live one matters) and returns how many.
func flipIn(tb testing.TB, path string, needle []byte) int {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for i := 0; ; {
		j := bytes.Index(b[i:], needle)
		if j < 0 {
			break
		}
		b[i+j+len(needle)/2] ^= 0x04
		i += j + len(needle)
		n++
	}
	if n == 0 {
		tb.Fatalf("%q not in %s", needle, path)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	return n
}

// TestOpenRefusesDamagedFile damages a real file in the ways a disk, a
// full disk or an operator does, and checks that Open refuses it with an
// error naming the file and what is wrong, and never panics or faults.
func TestOpenRefusesDamagedFile(t *testing.T) {
	good := mustFile(t, 300)
	orig, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	ps := os.Getpagesize() // bbolt's default page size
	for _, tc := range []struct {
		name   string
		damage func(b []byte) []byte
		want   string
	}{
		{"truncated to half", func(b []byte) []byte { return b[:len(b)/2] }, "truncated"},
		{"empty", func(b []byte) []byte { return nil }, "empty (0 bytes)"},
		{"partial first page", func(b []byte) []byte { return b[:1000] }, "meta page"},
		{"first pages only", func(b []byte) []byte { return b[:2*ps+100] }, "truncated"},
		{"both meta pages flipped", func(b []byte) []byte {
			b[16+20] ^= 1
			b[ps+16+20] ^= 1
			return b
		}, "neither meta page is valid"},
		{"not a database", func(b []byte) []byte { return bytes.Repeat([]byte("x"), 3*ps) }, "not a dfsmr database"},
		{"root page id", func(b []byte) []byte {
			// The page after the metas is in use; point it at another id.
			for p := 2; p*ps < len(b); p++ {
				if b[p*ps+8] == 0x02 || b[p*ps+8] == 0x01 { // leaf or branch
					b[p*ps] ^= 0x40
				}
			}
			return b
		}, "holds page id"},
		{"element offsets", func(b []byte) []byte {
			for p := 2; p*ps < len(b); p++ {
				if b[p*ps+8] == 0x02 && b[p*ps+10] > 0 { // a leaf with elements
					b[p*ps+16+4+3] = 0x7f // pos of element 0, high byte
				}
			}
			return b
		}, "points outside the page"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "damaged.db")
			if err := os.WriteFile(path, tc.damage(bytes.Clone(orig)), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := bolt.Open(path, bolt.Options{})
			if err == nil {
				s.Close()
				t.Fatal("a damaged file opened")
			}
			msg := err.Error()
			if !errors.Is(err, store.ErrCorrupt) || strings.Count(msg, path) != 1 || !strings.Contains(msg, tc.want) {
				t.Fatalf("error %q: want ErrCorrupt naming %s once and saying %q", msg, path, tc.want)
			}
			if cerr := bolt.Check(path, &bytes.Buffer{}); !errors.Is(cerr, store.ErrCorrupt) {
				t.Errorf("Check: %v, want ErrCorrupt", cerr)
			}
			t.Log(msg)
		})
	}
}

// TestRandomBitFlips flips random bits anywhere in a real file: Open
// either refuses it or opens it, and then reading everything either
// succeeds or fails with an error; nothing panics or faults, and Check
// agrees that an unreadable file is damaged.
func TestRandomBitFlips(t *testing.T) {
	good := mustFile(t, 300)
	orig, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	seed := rand.Uint64()
	if env := os.Getenv("DFSMR_SEED"); env != "" {
		seed, _ = strconv.ParseUint(env, 10, 64)
	}
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 2))
	rounds := 300
	if testing.Short() {
		rounds = 50
	}
	dir := t.TempDir()
	var refused, failedReads, clean int
	kinds := map[string]int{}
	for i := range rounds {
		b := bytes.Clone(orig)
		for range 1 + r.IntN(3) {
			b[r.IntN(len(b))] ^= 1 << r.IntN(8)
		}
		path := filepath.Join(dir, fmt.Sprintf("flip%d.db", i))
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := bolt.Open(path, bolt.Options{NoSync: true, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("round %d: error %q does not name the file", i, err)
			}
			refused++
			continue
		}
		err = s.View(context.Background(), readAll)
		// A write reads and rewrites pages too; it may fail, not crash.
		werr := s.Update(context.Background(), func(tx store.Tx) error {
			if err := tx.PutInstance(readyInstance("written")); err != nil {
				return err
			}
			_, err := tx.AppendChange(fsm.Change{Instance: "written", Kind: fsm.ChangeStarted, Machine: "m"})
			return err
		})
		s.Close()
		kinds[fmt.Sprintf("read %v, write %v", kind(err), kind(werr))]++
		switch {
		case err != nil:
			failedReads++
		default:
			clean++
		}
	}
	t.Logf("%d rounds (DFSMR_SEED=%d replays them): %d refused at open, %d opened with a failing read, %d read clean; outcomes %v",
		rounds, seed, refused, failedReads, clean, kinds)
}

// kind sums up an error for the outcome counts of TestRandomBitFlips.
func kind(err error) string {
	var ce *store.CorruptError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &ce) && ce.Bucket != "":
		return "corrupt record"
	case errors.As(err, &ce):
		return "damaged page"
	case errors.Is(err, store.ErrCorrupt):
		return "undecodable"
	}
	return "other"
}

// readAll reads every record through the store's API.
func readAll(tx store.ReadTx) error {
	var errs []error
	for after := ""; ; {
		page, err := tx.Instances(store.InstanceFilter{}, after, 100)
		if err != nil {
			errs = append(errs, err)
			break
		}
		if len(page) == 0 {
			break
		}
		after = page[len(page)-1].ID
	}
	if _, err := tx.Changes(1, 0); err != nil {
		errs = append(errs, err)
	}
	if _, err := tx.Machines("", 0); err != nil {
		errs = append(errs, err)
	}
	if _, err := tx.Ready(store.ReadyFilter{}, 0); err != nil {
		errs = append(errs, err)
	}
	if _, err := tx.Due(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), 0); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// TestCorruptRecord flips a bit inside one record's value: the file opens
// (the rest is sound), reading that record fails with a *store.CorruptError
// naming the file, bucket and key, every other read succeeds, the failure
// is reported to OnCorrupt, and Check lists it.
func TestCorruptRecord(t *testing.T) {
	path := mustFile(t, 300)
	flipIn(t, path, []byte(secret))
	var mu sync.Mutex
	var reported []string
	s := mustOpen(t, path, bolt.Options{OnCorrupt: func(err *store.CorruptError) {
		mu.Lock()
		reported = append(reported, string(err.Key))
		mu.Unlock()
	}})
	err := s.View(context.Background(), func(tx store.ReadTx) error {
		_, err := tx.Instance("victim")
		return err
	})
	var ce *store.CorruptError
	if !errors.As(err, &ce) || ce.Bucket != "instances" || string(ce.Key) != "victim" || ce.Path != path {
		t.Fatalf("reading the damaged record: %v, want a CorruptError for instances/victim in %s", err, path)
	}
	if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), `instances/"victim"`) {
		t.Errorf("message %q", err)
	}
	if err := s.View(context.Background(), func(tx store.ReadTx) error {
		for _, id := range []string{"i000000", "i000150", "i000299"} {
			if _, err := tx.Instance(id); err != nil {
				return err
			}
		}
		_, err := tx.Changes(1, 0)
		return err
	}); err != nil {
		t.Fatalf("reading sound records: %v", err)
	}
	// A write that must read the damaged record fails the same way; others
	// commit.
	err = s.Update(context.Background(), func(tx store.Tx) error {
		in := readyInstance("victim")
		in.Rev = 2
		return tx.PutInstance(in)
	})
	if !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("overwriting the damaged record: %v, want ErrCorrupt", err)
	}
	if err := s.Update(context.Background(), func(tx store.Tx) error { return tx.PutInstance(readyInstance("new")) }); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	// Once by the check at open, once per failed read and write.
	if len(reported) != 3 || reported[0] != "victim" {
		t.Errorf("OnCorrupt saw %q, want victim three times", reported)
	}
	mu.Unlock()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	err = bolt.Check(path, &out)
	t.Log(out.String())
	if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(out.String(), `instances/"victim"`) {
		t.Fatalf("Check: %v, output lacks the record", err)
	}
}

// TestCheckSoundFile checks a sound file: no error, and a summary.
func TestCheckSoundFile(t *testing.T) {
	path := mustFile(t, 1000)
	var out bytes.Buffer
	if err := bolt.Check(path, &out); err != nil {
		t.Fatalf("Check: %v\n%s", err, out.String())
	}
	if s := out.String(); !strings.Contains(s, "OK: no problems found") || !strings.Contains(s, "instances") {
		t.Errorf("summary:\n%s", s)
	}
	t.Log(out.String())
}

// TestCheckFindsBadIndex deletes an instance's ready index entry behind
// the store's back: the file is sound and every record's checksum matches;
// only the cross-check of the indexes against the records sees it.
func TestCheckFindsBadIndex(t *testing.T) {
	path := mustFile(t, 10)
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		k, _ := tx.Bucket([]byte("ready")).Cursor().First()
		return tx.Bucket([]byte("ready")).Delete(k)
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = bolt.Check(path, &out)
	t.Log(out.String())
	if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(out.String(), "index ready: 1 entries missing") {
		t.Fatalf("Check: %v", err)
	}
}

// TestOneMetaPageDamaged flips a bit in one meta page: bbolt opens from the
// other (a torn meta write on power loss looks the same), so Open succeeds
// and logs it, and Check reports it.
func TestOneMetaPageDamaged(t *testing.T) {
	path := mustFile(t, 10)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[16+20] ^= 1 // meta page 0, inside the root bucket header
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := bolt.Check(path, &out); !errors.Is(err, store.ErrCorrupt) || !strings.Contains(out.String(), "meta page 0") {
		t.Errorf("Check: %v\n%s", err, out.String())
	}
	s := mustOpen(t, path, bolt.Options{})
	if err := s.View(context.Background(), readAll); err != nil {
		t.Fatal(err)
	}
}

// TestIOErrorOnCommit makes the commit fail as a full disk does: the
// error is a *store.IOError that says so, the write is not visible, reads
// go on, new writes are refused with the same error, and once the disk has
// room the write is applied (it was in the log) and writes work again.
func TestIOErrorOnCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	s := mustOpen(t, path, bolt.Options{})
	s.InjectCommitFault(func() error { return &os.PathError{Op: "write", Path: path, Err: syscall.ENOSPC} })
	err := s.Update(context.Background(), func(tx store.Tx) error { return tx.PutInstance(readyInstance("a")) })
	var ioe *store.IOError
	if !errors.As(err, &ioe) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("commit on a full disk: %v, want an IOError with ENOSPC", err)
	}
	want := "database " + path + ": commit: no space left on device; the write is in the log and is applied once that is resolved"
	if err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	err = s.Update(context.Background(), func(tx store.Tx) error { return tx.PutInstance(readyInstance("b")) })
	if want := "database " + path + ": commit: no space left on device; the write was not applied"; err == nil || err.Error() != want {
		t.Errorf("write while applying fails: %v, want %q", err, want)
	}
	if err := s.View(context.Background(), func(tx store.ReadTx) error {
		_, err := tx.Instance("a")
		return err
	}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the failed write is visible: %v", err)
	}
	s.InjectCommitFault(nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.View(context.Background(), func(tx store.ReadTx) error {
			_, err := tx.Instance("a")
			return err
		})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the write in the log was not applied once the disk had room: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := s.Update(context.Background(), func(tx store.Tx) error { return tx.PutInstance(readyInstance("b")) }); err != nil {
		t.Fatal(err)
	}
}

// TestFileReplaced renames another file over the open database (what
// writing a backup onto the live path does) and removes it: every later
// write fails with ErrFileReplaced, reads go on.
func TestFileReplaced(t *testing.T) {
	for _, how := range []string{"renamed over", "removed"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "db")
			s := mustOpen(t, path, bolt.Options{})
			if err := s.Update(context.Background(), func(tx store.Tx) error { return tx.PutInstance(readyInstance("before")) }); err != nil {
				t.Fatal(err)
			}
			switch how {
			case "renamed over":
				other := filepath.Join(dir, "other")
				f, err := os.Create(other)
				if err != nil {
					t.Fatal(err)
				}
				if _, _, err := s.Backup(context.Background(), f); err != nil {
					t.Fatal(err)
				}
				f.Close()
				if err := os.Rename(other, path); err != nil {
					t.Fatal(err)
				}
			case "removed":
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			}
			for range 2 {
				err := s.Update(context.Background(), func(tx store.Tx) error { return tx.PutInstance(readyInstance("after")) })
				if !errors.Is(err, store.ErrFileReplaced) || !strings.Contains(err.Error(), path) {
					t.Fatalf("write after the file was %s: %v, want ErrFileReplaced naming %s", how, err, path)
				}
			}
			if err := s.View(context.Background(), func(tx store.ReadTx) error {
				_, err := tx.Instance("before")
				return err
			}); err != nil {
				t.Fatalf("read after the file was %s: %v", how, err)
			}
		})
	}
}

// TestOpenErrorNamesPathOnce: an error from the file system names the
// file once.
func TestOpenErrorNamesPathOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing-dir", "db")
	_, err := bolt.Open(path, bolt.Options{})
	if err == nil || strings.Count(err.Error(), path) != 1 {
		t.Fatalf("error %q, want the path once", err)
	}
}

// BenchmarkOpen measures Open and Close of a file of 100,000 instances
// (and their changes): the check before bbolt maps the file reads every
// page and every record's checksum.
func BenchmarkOpen(b *testing.B) {
	path := mustFile(b, 100_000)
	if info, err := os.Stat(path); err == nil {
		b.Logf("%s: %d MiB", path, info.Size()>>20)
	}
	for b.Loop() {
		s, err := bolt.Open(path, bolt.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheck measures Check of the same file.
func BenchmarkCheck(b *testing.B) {
	path := mustFile(b, 100_000)
	for b.Loop() {
		if err := bolt.Check(path, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// TestOpensFileWithoutChecksums opens testdata/unsealed.db, written by the
// version before records carried checksums (every record kind, indexes, a
// device queue): Check accepts it as it is, Open seals its records once,
// everything reads back as written, and Check then finds every record
// sealed.
func TestOpensFileWithoutChecksums(t *testing.T) {
	orig, err := os.ReadFile("testdata/unsealed.db")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dfsmr.db")
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := bolt.Check(path, &out); err != nil || !strings.Contains(out.String(), "no checksums yet") {
		t.Fatalf("Check of the old file: %v\n%s", err, out.String())
	}
	at := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	for round := range 2 { // sealed on the first open, as is on the second
		s := mustOpen(t, path, bolt.Options{})
		err := s.View(context.Background(), func(tx store.ReadTx) error {
			in, err := tx.Instance("ready")
			if err != nil {
				return err
			}
			if in.Status != fsm.StatusReady || in.Params["k"] != "v" || in.Priority != 3 || !in.DueAt.Equal(at) || in.Rev != 1 {
				return fmt.Errorf("instance ready = %+v", in)
			}
			ins, err := tx.Instances(store.InstanceFilter{Machine: "m"}, "", 0)
			if err != nil || len(ins) != 3 {
				return fmt.Errorf("instances of m: %d, %v", len(ins), err)
			}
			if ids, err := tx.Ready(store.ReadyFilter{Machine: "m", Node: "n"}, 0); err != nil || len(ids) != 1 || ids[0] != "ready" {
				return fmt.Errorf("ready %q, %v", ids, err)
			}
			cs, err := tx.Changes(1, 0)
			if err != nil || len(cs) != 3 || cs[2].Instance != "final" {
				return fmt.Errorf("changes %+v, %v", cs, err)
			}
			if m, err := tx.Machine("m", 0); err != nil || string(m.Source) != "id: m\n" || m.Fingerprint != "fp" {
				return fmt.Errorf("machine %+v, %v", m, err)
			}
			if ds, err := tx.DurationSamples("m", 1, "n"); err != nil || len(ds) != 1 || ds[0] != 3*time.Second {
				return fmt.Errorf("durations %v, %v", ds, err)
			}
			if _, err := tx.Breaker("m"); err != nil {
				return err
			}
			if d, err := tx.Device("p1"); err != nil || d.Pool != "pool" {
				return fmt.Errorf("device %+v, %v", d, err)
			}
			if e, ok, err := tx.QueueHead("p1"); err != nil || !ok || e.Job != "ready" {
				return fmt.Errorf("queue head %+v %v, %v", e, ok, err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		out.Reset()
		if err := bolt.Check(path, &out); err != nil || strings.Contains(out.String(), "no checksums yet") {
			t.Fatalf("round %d: Check after open: %v\n%s", round, err, out.String())
		}
	}
	// Now sealed: a flipped bit in a record is caught.
	flipIn(t, path, []byte("id: m\n"))
	if err := bolt.Check(path, &out); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("Check after a flip in the machine record: %v", err)
	}
}

// TestCheckRefusesLiveFile: Check does not read a file a running store
// holds; it says to check a backup.
func TestCheckRefusesLiveFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	mustOpen(t, path, bolt.Options{})
	err := bolt.Check(path, io.Discard)
	if !errors.Is(err, bolt.ErrLocked) || !strings.Contains(err.Error(), "check a backup") {
		t.Fatalf("Check of a live file: %v", err)
	}
}
