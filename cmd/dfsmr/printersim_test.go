package main

import (
	"bufio"
	"context"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
)

// TestPrinterSim runs two simulated printers and their operators until an
// order of four parts is printed, retrieved and cleared off the beds.
func TestPrinterSim(t *testing.T) {
	c := mustCLI(t)
	cl, err := client.Dial(c.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"--addr", c.addr, "printer-sim", "--count", "2", "--pool", "lab", "--print-time", "30ms",
			"--operator-delay", "10ms", "--seed", "7"}, strings.NewReader(""), pw, io.Discard)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	seen := map[string]int{}
	var out strings.Builder
	deadline := time.AfterFunc(time.Minute, cancel)
	defer deadline.Stop()
	for sc.Scan() {
		line := sc.Text()
		out.WriteString(line + "\n")
		for _, k := range []string{"connected", "printing", "finished", "operator-retrieved", "cleared"} {
			if strings.Contains(line, " "+k+" ") {
				seen[k]++
			}
		}
		if seen["connected"] == 2 && seen["printing"] == 0 && !strings.Contains(out.String(), "submitted") {
			if _, err := cl.Devices.SubmitOrder(t.Context(), &pb.SubmitOrderRequest{
				OrderId: "o", Model: "benchy", Quantity: 4, Pool: "lab"}); err != nil {
				t.Fatal(err)
			}
			out.WriteString("submitted\n")
		}
		if seen["cleared"] == 4 && seen["operator-retrieved"] == 4 {
			cancel()
		}
	}
	if got := <-code; got != exitOK {
		t.Fatalf("printer-sim exited %d:\n%s", got, out.String())
	}
	for _, k := range []string{"printing", "finished", "operator-retrieved", "cleared"} {
		if seen[k] != 4 {
			t.Fatalf("%d %q lines, want 4:\n%s", seen[k], k, out.String())
		}
	}
	contains(t, out.String(), "sim-printer-1", "sim-printer-2", "job=o-1", "job=o-4", "benchy")
	// Interrupted, it sums up what happened.
	ls := lines(out.String())
	if last := ls[len(ls)-1]; !regexp.MustCompile(`^printer-sim interrupted after \S+: 2 printers, 4 jobs, .*4 printing, 4 finished, 4 cleared.*, 4 operator-retrieved`).MatchString(last) {
		t.Fatalf("last line is no summary: %q", last)
	}
}

func TestPrinterSimUsage(t *testing.T) {
	c := mustCLI(t)
	c.fails(exitUsage, []string{"--count must be at least 1"}, "printer-sim", "--count", "0")
	c.fails(exitUsage, []string{"fail rate 2 is not in [0, 1]"}, "printer-sim", "--fail-rate", "2")
	c.fails(exitUsage, []string{"drop rate -1 is not in [0, 1]"}, "printer-sim", "--drop-rate", "-1")
	c.fails(exitUsage, []string{"forget rate 2 is not in [0, 1]"}, "printer-sim", "--forget-rate", "2")
	c.fails(exitUsage, []string{"--cancel-rate 2 is not in [0, 1]"}, "printer-sim", "--cancel-rate", "2")
}
