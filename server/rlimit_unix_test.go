//go:build linux

package server

import (
	"syscall"
	"testing"
)

// TestRaiseFileLimit lowers the soft open file limit and checks that
// raiseFileLimit brings it back up to the hard limit.
func TestRaiseFileLimit(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) })
	lowered := lim
	lowered.Cur = min(lim.Max, 256) - 1
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lowered); err != nil {
		t.Fatal(err)
	}
	got, err := raiseFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	var now syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &now); err != nil {
		t.Fatal(err)
	}
	if now.Cur != now.Max || got != now.Cur {
		t.Fatalf("after raiseFileLimit: soft %d, hard %d, returned %d; want soft = hard", now.Cur, now.Max, got)
	}
}
