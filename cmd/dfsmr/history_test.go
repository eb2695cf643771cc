package main

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server"
)

// TestGetHistoryPagesThroughEverything runs a server whose history pages
// hold two changes: get --history still prints all seven changes, in
// order, and -o json prints one response per page.
func TestGetHistoryPagesThroughEverything(t *testing.T) {
	dir := t.TempDir()
	s, err := server.New(t.Context(), server.Config{
		Addr: "127.0.0.1:0", DB: filepath.Join(dir, "dfsmr.db"), MaxHistory: 2,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	c := &cli{t: t, addr: s.Addr(), dir: dir}
	c.ok("define", c.file("job.yaml", jobYAML))
	c.ok("start", "job", "--id", "j")
	for _, sig := range []string{"hold", "release", "hold", "release", "hold", "release"} {
		c.ok("signal", "j", sig)
	}

	out := c.ok("get", "j", "--history")
	hist := out[strings.Index(out, "HISTORY:"):]
	ls := lines(hist)[1:]
	if len(ls) != 7 || !strings.Contains(ls[0], "started") || !strings.Contains(ls[6], "(release)") {
		t.Fatalf("get --history printed %d changes:\n%s", len(ls), hist)
	}
	js := lines(c.ok("get", "j", "--history", "-o", "json"))
	if len(js) != 4 {
		t.Fatalf("get --history -o json printed %d pages, want 4", len(js))
	}
	n := 0
	for _, l := range js {
		n += len(decode(t, l, &pb.GetInstanceResponse{}).GetInstance().GetHistory())
	}
	if n != 7 {
		t.Fatalf("json pages hold %d changes, want 7", n)
	}
}
