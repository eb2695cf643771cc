//go:build unix

package client

import (
	"errors"
	"os"
	"syscall"
)

// isLocked reports whether another open file description holds a flock on
// path: the lock bbolt takes (shared for read-only, exclusive otherwise)
// on the database it opens. It tries a non-blocking exclusive lock and
// releases it at once.
func isLocked(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return false, syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
