package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
)

// BackupInfo describes a snapshot Backup wrote.
type BackupInfo struct {
	// Size is the file's size in bytes.
	Size uint64
	// SHA256 is the file's SHA-256 digest, lowercase hex.
	SHA256 string
	// HeadSeq is the last changelog sequence number in the snapshot.
	HeadSeq uint64
}

// Errors of Backup and BackupFile about their target.
var (
	// ErrTargetLocked: the target is a bbolt file that a process holds
	// open (its lock is taken), such as the live database of a server:
	// renaming a snapshot over it would lose every write acknowledged
	// after the snapshot, and the server would go on writing to the
	// unlinked file.
	ErrTargetLocked = errors.New("the target is a database in use (locked)")
	// ErrTargetExists: the target exists and BackupOptions.Overwrite is
	// not set.
	ErrTargetExists = fmt.Errorf("the target exists (%w)", os.ErrExist)
)

// BackupOptions configures BackupFile.
type BackupOptions struct {
	// Overwrite lets BackupFile replace an existing file at the target;
	// false: an existing target is ErrTargetExists. A locked target is
	// refused either way (ErrTargetLocked).
	Overwrite bool
}

// Backup is BackupFile with Overwrite: it replaces a previous copy at
// path, but never a database in use.
func (c *Client) Backup(ctx context.Context, path string) (BackupInfo, error) {
	return c.BackupFile(ctx, path, BackupOptions{Overwrite: true})
}

// BackupFile writes a consistent online snapshot of the server's database
// to path (AdminService.Backup). It writes a temporary file in path's
// directory, checks the size and digest the server sent, syncs it and
// renames it over path, so path is either the previous file or the whole
// new snapshot, never a part. The copy is a database the server can start
// on.
//
// It refuses, before it asks the server for anything and again just before
// the rename, a path that holds a locked bbolt file (the lock bbolt takes
// on the file it opens, which a running server holds on its database):
// ErrTargetLocked. Without opts.Overwrite it refuses an existing path
// (ErrTargetExists), and the final step creates path without replacing
// whatever may have appeared there meanwhile.
func (c *Client) BackupFile(ctx context.Context, path string, opts BackupOptions) (info BackupInfo, err error) {
	if err := checkTarget(path, opts.Overwrite); err != nil {
		return info, err
	}
	stream, err := c.Admin.Backup(ctx, &pb.BackupRequest{})
	if err != nil {
		return info, err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return info, err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	sum := sha256.New()
	var written uint64
	var last *pb.BackupResponse
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return info, err
		}
		if last != nil {
			return info, errors.New("backup: data after the summary")
		}
		if r.GetSha256() != "" {
			last = r
			continue
		}
		sum.Write(r.GetChunk())
		if _, err := tmp.Write(r.GetChunk()); err != nil {
			return info, fmt.Errorf("backup: %w", err)
		}
		written += uint64(len(r.GetChunk()))
	}
	got := hex.EncodeToString(sum.Sum(nil))
	switch {
	case last == nil:
		return info, errors.New("backup: the stream ended without its summary")
	case last.GetSize() != written || last.GetSha256() != got:
		return info, fmt.Errorf("backup: received %d bytes with SHA-256 %s; the server sent %d bytes with %s",
			written, got, last.GetSize(), last.GetSha256())
	}
	if err := tmp.Sync(); err != nil {
		return info, fmt.Errorf("backup: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return info, fmt.Errorf("backup: %w", err)
	}
	if err := checkTarget(path, opts.Overwrite); err != nil {
		return info, err
	}
	if opts.Overwrite {
		err = os.Rename(tmp.Name(), path)
	} else if err = os.Link(tmp.Name(), path); err == nil {
		// A hard link creates path only if it does not exist yet.
		err = os.Remove(tmp.Name())
	} else if errors.Is(err, fs.ErrExist) {
		err = ErrTargetExists
	}
	if err != nil {
		return info, fmt.Errorf("backup %s: %w", path, err)
	}
	// The rename is durable once the directory is synced.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return BackupInfo{Size: written, SHA256: got, HeadSeq: last.GetHeadSeq()}, nil
}

// checkTarget refuses a locked target, and an existing one unless
// overwrite.
func checkTarget(path string, overwrite bool) error {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("backup: %s is not a regular file", path)
	}
	locked, err := isLocked(path)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if locked {
		return fmt.Errorf("backup %s: %w", path, ErrTargetLocked)
	}
	if !overwrite {
		return fmt.Errorf("backup %s: %w", path, ErrTargetExists)
	}
	return nil
}
