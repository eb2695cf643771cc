//go:build linux || darwin

package server

import "syscall"

// raiseFileLimit raises the soft limit of open files (RLIMIT_NOFILE) to
// the hard limit, as far as the system allows, and returns the soft limit
// in force. Go's os package does the same at start on these systems; the
// server does it again so that the limit it checks and logs is the one in
// force, whatever started it.
func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		raised := lim
		raised.Cur = lim.Max
		// Refused above a system maximum (macOS): keep the soft limit.
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
			lim = raised
		}
	}
	return lim.Cur, nil
}
