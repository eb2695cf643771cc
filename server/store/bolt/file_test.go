package bolt

import (
	"path/filepath"
	"runtime/debug"
	"testing"
)

// BenchmarkCheckFile measures the check the writer makes before and after
// every commit: one stat(2) of the path.
func BenchmarkCheckFile(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "db"), Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for b.Loop() {
		if err := s.checkReplaced(); err != nil {
			b.Fatal(err)
		}
	}
}

//go:noinline
func panicsHere(kind string) {
	if kind == "value" {
		panic("a value")
	}
	var m map[string]int
	m["x"] = 1 // a runtime error, raised through runtime frames
}

// TestRaisedBy checks the test that tells a panic bbolt raised from one
// raised elsewhere, on real stacks: the innermost frame below the panic,
// runtime frames aside, decides.
func TestRaisedBy(t *testing.T) {
	for _, kind := range []string{"value", "runtime error"} {
		var here, elsewhere bool
		func() {
			defer func() {
				_ = recover()
				stack := debug.Stack()
				here = raisedBy(stack, "github.com/dfsmr/dfsmr/server/store/bolt.panicsHere")
				elsewhere = raisedBy(stack, "go.etcd.io/bbolt.")
			}()
			panicsHere(kind)
		}()
		if !here || elsewhere {
			t.Errorf("%s: raised here %v, by bbolt %v", kind, here, elsewhere)
		}
	}
}
