//go:build race

package server_test

// raceEnabled: the race detector slows the server about fivefold, so the
// load tests scale down to keep their timing meaningful.
const raceEnabled = true
