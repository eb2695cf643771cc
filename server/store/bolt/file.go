package bolt

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"github.com/dfsmr/dfsmr/server/store"
)

// fileID identifies a file: its device and inode.
type fileID struct{ dev, ino uint64 }

func statID(path string) (fileID, error) {
	info, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, fmt.Errorf("database %s: no inode number on this system", path)
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, nil
}

// checkReplaced returns an error wrapping store.ErrFileReplaced once the path
// no longer names the file the store has open: something renamed another
// file over it (a restore or backup written onto the live path), moved it
// or deleted it. Writes to the open file would then vanish at the next
// start, so every later write is refused too; the first refusal is logged.
// It costs one stat(2), a microsecond or two next to a commit's fsyncs
// (BenchmarkCheckFile), so the writer calls it before and after every
// commit.
func (s *Store) checkReplaced() error {
	path := s.db.Path()
	if !s.replaced.Load() {
		id, err := statID(path)
		switch {
		case err == nil && id == s.file:
			return nil
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			// Not a sign of replacement (e.g. a transient EACCES on a
			// directory): the commit itself will say what is wrong.
			return nil
		}
		s.replaced.Store(true)
		s.log.Error("the database file was replaced or removed while open; refusing every write from now on, restart the server to open the file now at the path",
			"path", path)
	}
	return fmt.Errorf("database %s: %w; writes are refused (the server must be restarted to use the file now at that path)", path, store.ErrFileReplaced)
}
