package client_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dfsmr/dfsmr/client"
	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"go.etcd.io/bbolt"
	"google.golang.org/grpc"
)

// lyingAdmin is an AdminService that streams data and then a summary that
// may not match it, as a server with a broken disk or a corrupting proxy
// would.
type lyingAdmin struct {
	pb.UnimplementedAdminServiceServer
	data    []byte
	size    uint64 // in the summary
	digest  string // in the summary; empty: no summary at all
	trailer bool   // send a chunk after the summary
}

func (a *lyingAdmin) Backup(_ *pb.BackupRequest, s grpc.ServerStreamingServer[pb.BackupResponse]) error {
	if err := s.Send(&pb.BackupResponse{Chunk: a.data}); err != nil {
		return err
	}
	if a.digest == "" {
		return nil
	}
	if err := s.Send(&pb.BackupResponse{Size: a.size, Sha256: a.digest, HeadSeq: 7}); err != nil {
		return err
	}
	if a.trailer {
		return s.Send(&pb.BackupResponse{Chunk: []byte("more")})
	}
	return nil
}

func serveAdmin(t *testing.T, a *lyingAdmin) *client.Client {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterAdminServiceServer(srv, a)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return mustClient(t, lis.Addr().String())
}

// TestBackupRefusesBadCopies checks that Backup keeps the previous file and
// leaves no temporary file when what arrived does not match the server's
// summary, or the summary is missing or followed by more data; and that a
// matching stream replaces the file.
func TestBackupRefusesBadCopies(t *testing.T) {
	data := []byte("a snapshot of the database")
	sum := sha256.Sum256(data)
	good := hex.EncodeToString(sum[:])
	for _, tc := range []struct {
		name  string
		admin lyingAdmin
		want  string
	}{
		{"wrong digest", lyingAdmin{data: data, size: uint64(len(data)), digest: strings.Repeat("0", 64)}, "SHA-256"},
		{"wrong size", lyingAdmin{data: data, size: 1, digest: good}, "the server sent 1 bytes"},
		{"no summary", lyingAdmin{data: data}, "without its summary"},
		{"data after the summary", lyingAdmin{data: data, size: uint64(len(data)), digest: good, trailer: true}, "after the summary"},
		{"good", lyingAdmin{data: data, size: uint64(len(data)), digest: good}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "backup.db")
			if err := os.WriteFile(path, []byte("previous backup"), 0o600); err != nil {
				t.Fatal(err)
			}
			info, err := serveAdmin(t, &tc.admin).Backup(t.Context(), path)
			got, _ := os.ReadFile(path)
			if tc.want == "" {
				if err != nil || string(got) != string(data) || info.SHA256 != good || info.HeadSeq != 7 {
					t.Fatalf("good stream: %+v, %v; file %q", info, err, got)
				}
			} else {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err %v, want it to mention %q", err, tc.want)
				}
				if string(got) != "previous backup" {
					t.Fatalf("a refused backup replaced the file: %q", got)
				}
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Fatalf("files left in the directory: %v", entries)
			}
		})
	}
}

// TestBackupFileTargets checks BackupFile's target rules: a new file is
// written; an existing one is refused without Overwrite and replaced with
// it; a bbolt file held open (locked) is refused even with Overwrite, and
// stays as it was.
func TestBackupFileTargets(t *testing.T) {
	data := []byte("a snapshot of the database")
	sum := sha256.Sum256(data)
	c := serveAdmin(t, &lyingAdmin{data: data, size: uint64(len(data)), digest: hex.EncodeToString(sum[:])})
	dir := t.TempDir()

	path := filepath.Join(dir, "new.db")
	if _, err := c.BackupFile(t.Context(), path, client.BackupOptions{}); err != nil {
		t.Fatalf("a new file: %v", err)
	}
	if _, err := c.BackupFile(t.Context(), path, client.BackupOptions{}); !errors.Is(err, client.ErrTargetExists) || !errors.Is(err, os.ErrExist) {
		t.Fatalf("an existing file without Overwrite: %v, want ErrTargetExists", err)
	}
	if _, err := c.BackupFile(t.Context(), path, client.BackupOptions{Overwrite: true}); err != nil {
		t.Fatalf("an existing file with Overwrite: %v", err)
	}

	live := filepath.Join(dir, "live.db")
	db, err := bbolt.Open(live, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	before, _ := os.ReadFile(live)
	for _, overwrite := range []bool{false, true} {
		if _, err := c.BackupFile(t.Context(), live, client.BackupOptions{Overwrite: overwrite}); !errors.Is(err, client.ErrTargetLocked) {
			t.Fatalf("a locked database (Overwrite %v): %v, want ErrTargetLocked", overwrite, err)
		}
	}
	if after, _ := os.ReadFile(live); string(after) != string(before) {
		t.Fatal("a refused backup changed the locked database")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("files in the directory: %v, want new.db and live.db", entries)
	}
}
