package client

// SetTestHookResolved installs f as Follow's "from now resolved" hook and
// returns a function that removes it.
func SetTestHookResolved(f func(from uint64)) (restore func()) {
	testHookResolved = f
	return func() { testHookResolved = nil }
}
