package bolt

import (
	"path/filepath"
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
		if err := s.checkFile(); err != nil {
			b.Fatal(err)
		}
	}
}
