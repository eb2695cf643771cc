package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
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

// Backup writes a consistent online snapshot of the server's database to
// path (AdminService.Backup). It writes a temporary file in path's
// directory, checks the size and digest the server sent, syncs it and
// renames it over path, so path is either the previous file or the whole
// new snapshot, never a part. The copy is a database the server can start
// on.
func (c *Client) Backup(ctx context.Context, path string) (info BackupInfo, err error) {
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
	if err := os.Rename(tmp.Name(), path); err != nil {
		return info, fmt.Errorf("backup: %w", err)
	}
	// The rename is durable once the directory is synced.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return BackupInfo{Size: written, SHA256: got, HeadSeq: last.GetHeadSeq()}, nil
}
