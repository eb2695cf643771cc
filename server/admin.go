package server

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server/store"
	"google.golang.org/grpc"
)

// backupChunk is the size of the file chunks Backup sends.
const backupChunk = 256 << 10

// admin serves AdminService.
type admin struct {
	pb.UnimplementedAdminServiceServer
	store store.Backuper
}

// Backup copies a snapshot of the store into a temporary file next to it,
// then streams that file: the read transaction lasts only as long as the
// local copy, however slow the client.
func (a *admin) Backup(_ *pb.BackupRequest, stream grpc.ServerStreamingServer[pb.BackupResponse]) (err error) {
	ctx := stream.Context()
	f, err := os.CreateTemp(filepath.Dir(a.store.Path()), ".dfsmr-backup-*")
	if err != nil {
		return fmt.Errorf("backup: temporary file: %w", err)
	}
	defer func() {
		err = errors.Join(err, f.Close(), os.Remove(f.Name()))
	}()
	size, head, err := a.store.Backup(ctx, f)
	if err != nil {
		return fmt.Errorf("backup: snapshot: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	sum := sha256.New()
	buf := make([]byte, backupChunk)
	var sent uint64
	for {
		n, rerr := io.ReadFull(f, buf)
		if n > 0 {
			sum.Write(buf[:n])
			if err := stream.Send(&pb.BackupResponse{Chunk: buf[:n]}); err != nil {
				return err
			}
			sent += uint64(n)
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("backup: read the copy: %w", rerr)
		}
	}
	if sent != uint64(size) {
		return fmt.Errorf("backup: sent %d bytes of a %d-byte snapshot", sent, size)
	}
	return stream.Send(&pb.BackupResponse{Size: sent, Sha256: hex.EncodeToString(sum.Sum(nil)), HeadSeq: head})
}
