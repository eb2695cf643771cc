package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"google.golang.org/grpc"
)

// child is a dfsmrd process whose log lines arrive on lines.
type child struct {
	cmd   *exec.Cmd
	addr  string
	lines chan string
}

func startLoggingChild(t *testing.T, args ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"--addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c := &child{cmd: cmd, lines: make(chan string, 1000)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	line := c.await(t, "msg=serving")
	m := servingRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no address in %q", line)
	}
	c.addr = m[1]
	return c
}

// await returns the first log line containing s.
func (c *child) await(t *testing.T, s string) string {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				t.Fatalf("dfsmrd exited before logging %q", s)
			}
			t.Log(l)
			if strings.Contains(l, s) {
				return l
			}
		case <-timeout:
			t.Fatalf("dfsmrd did not log %q within a minute", s)
		}
	}
}

// TestSecondSignalForcesStop stops dfsmrd (stop timeout one hour) while a
// client holds a changelog stream it does not read, so the stream's
// handler is stuck sending and the graceful stop cannot finish by itself:
// the second SIGTERM is what ends it ("stop forced"). The process exits 0,
// and the file holds every start it acknowledged.
func TestSecondSignalForcesStop(t *testing.T) {
	db := filepath.Join(t.TempDir(), "dfsmr.db")
	c := startLoggingChild(t, "--db", db, "--stop-timeout", "1h")
	// A fixed window (no BDP growth) makes the stuck stream small to fill.
	cl, err := client.Dial(c.addr, grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := t.Context()
	stuck, err := cl.Changes.Changes(ctx, &pb.ChangesRequest{FromSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stuck.Header(); err != nil {
		t.Fatal(err)
	}
	params := map[string]string{}
	for k := range 16 {
		params[fmt.Sprint("pad", k)] = strings.Repeat("p", 4<<10)
	}
	const n = 16 // 16 changes of 64 KiB each, far past the 64 KiB windows
	for i := range n {
		if _, err := cl.Instances.StartInstance(ctx, &pb.StartInstanceRequest{
			Id: fmt.Sprint("s-", i), Machine: "report", Params: params,
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	c.await(t, "msg=\"stopping: signal received")
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	c.await(t, "msg=\"stop forced\"")
	c.await(t, "msg=stopped")
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("dfsmrd after a forced stop: %v, want exit 0", err)
	}

	again := startLoggingChild(t, "--db", db)
	cl2, err := client.Dial(again.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	for i := range n {
		if _, err := cl2.Instances.GetInstance(context.Background(), &pb.GetInstanceRequest{Id: fmt.Sprint("s-", i)}); err != nil {
			t.Fatalf("acknowledged start s-%d lost across a forced stop: %v", i, err)
		}
	}
}
