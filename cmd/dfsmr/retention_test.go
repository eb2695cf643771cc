package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
)

// TestChangesDefaultsToOldestKept: once retention deleted the first
// changes, "dfsmr changes" without --from prints from the oldest change
// kept, and an explicit --from below it fails naming it.
func TestChangesDefaultsToOldestKept(t *testing.T) {
	dir := t.TempDir()
	s, err := server.New(t.Context(), server.Config{Addr: "127.0.0.1:0", DB: filepath.Join(dir, "dfsmr.db"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ChangelogRetentionCount: 5})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	c := &cli{t: t, addr: s.Addr(), dir: dir}
	c.ok("define", c.file("job.yaml", jobYAML))
	for i := range 10 {
		c.ok("start", "job", "--id", fmt.Sprintf("j%d", i))
	}
	if _, err := s.Engine().Sweep(t.Context()); err != nil {
		t.Fatal(err)
	}
	const head = 4 + 1 + 10 // bundled machines, job, starts

	var seqs []uint64
	for _, l := range lines(c.ok("changes", "-o", "json")) {
		seqs = append(seqs, decode(t, l, &pb.Change{}).GetSeq())
	}
	if len(seqs) != 5 || seqs[0] != head-4 || seqs[4] != head {
		t.Fatalf("changes printed seqs %v, want %d..%d", seqs, head-4, head)
	}
	c.fails(exitFailed, []string{"OUT_OF_RANGE", fmt.Sprintf("the oldest change kept is %d", head-4)}, "changes", "--from", "1")
}
