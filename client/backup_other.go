//go:build !unix

package client

// isLocked cannot tell on this platform: bbolt's lock there is not a
// flock. Backup relies on Overwrite alone.
func isLocked(string) (bool, error) { return false, nil }
