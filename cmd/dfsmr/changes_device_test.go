package main

import (
	"strings"
	"testing"
)

// TestChangesByDevice: --device keeps the changes of one printer and of
// its jobs.
func TestChangesByDevice(t *testing.T) {
	c := mustCLI(t)
	p1 := connectPrinter(t, c.addr, "p1", "lab")
	connectPrinter(t, c.addr, "p2", "other")
	c.ok("order", "--model", "benchy", "--quantity", "1", "--printer", "p1", "--id", "o")
	p1.pushed("print", "o-1")

	mine := c.ok("changes", "--device", "p1")
	contains(t, mine, "p1", "o-1", "(dispatch)")
	if strings.Contains(mine, "p2") {
		t.Fatalf("changes --device p1 shows p2:\n%s", mine)
	}
	other := c.ok("changes", "--device", "p2")
	contains(t, other, "p2")
	if strings.Contains(other, "o-1") || strings.Contains(other, "p1") {
		t.Fatalf("changes --device p2 shows p1's job:\n%s", other)
	}
	if out := c.ok("changes", "--device", "nobody"); strings.TrimSpace(out) != "" {
		t.Fatalf("changes --device nobody:\n%s", out)
	}
}
