package bolt_test

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/dfsmr/dfsmr/server/store/bolt"
)

// ext4's shutdown ioctl (EXT4_IOC_SHUTDOWN, _IOR('X', 125, __u32)) with
// EXT4_GOING_FLAGS_NOLOGFLUSH stops the file system at once without
// writing anything more to the device: what was not made durable by an
// fsync (dirty pages, the uncommitted journal) is gone, as on a power cut.
// xfstests uses the same (its "godown" tool) for power-failure tests.
var powercut = flag.Bool("powercut", false, "run TestPowerCut (needs root, losetup, mkfs.ext4 and mount)")

const (
	ext4IocShutdown          = 0x8004587D
	ext4GoingFlagsNoLogFlush = 0x2
)

// TestPowerCut is TestKill9 with a power cut instead of a kill: the child
// writes to a store on a fresh ext4 file system on a loop device; after a
// random number of acknowledgements the file system is shut down without
// flushing (every write after the last fsync is dropped), the child is
// killed, and the file system is mounted again (journal recovery). Every
// acknowledged change must be in the file, which must pass Check.
//
// It needs root, losetup, mkfs.ext4 and mount, so it runs only with
// -powercut: .ci/run passes it in its second step where the machine allows
// loop devices.
func TestPowerCut(t *testing.T) {
	if !*powercut {
		t.Skip("needs root and loop devices; run with -powercut")
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v: %s (this test needs root, losetup, mkfs.ext4 and mount)", name, strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(128 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run("mkfs.ext4", "-q", "-F", img)
	loop := run("losetup", "-f", "--show", img)
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", loop).Run() })
	mounted := false
	mount := func() {
		run("mount", loop, mnt)
		mounted = true
	}
	umount := func() {
		run("umount", mnt)
		mounted = false
	}
	t.Cleanup(func() {
		if mounted {
			_ = exec.Command("umount", mnt).Run()
		}
	})

	path := filepath.Join(mnt, "db")
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	acked := map[uint64]string{}
	for cycle := range 3 {
		mount()
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v=false")
		cmd.Env = append(os.Environ(), helperEnv+"="+path)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(stdout)
		if !lines.Scan() || lines.Text() != "READY" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("cycle %d: child did not start: %q", cycle, lines.Text())
		}
		cutAt := 50 + r.IntN(400)
		n, cut := 0, false
		for lines.Scan() {
			fields := strings.Fields(lines.Text())
			if fields[0] == "ERR" {
				if !cut {
					t.Fatalf("cycle %d: child failed before the cut: %q", cycle, lines.Text())
				}
				continue // its writes fail once the file system is down
			}
			seq, err := strconv.ParseUint(fields[0], 10, 64)
			if err != nil || len(fields) != 2 {
				t.Fatalf("child: %q", lines.Text())
			}
			// An acknowledgement printed after the cut is for a commit whose
			// fsync returned before it: it must survive too.
			acked[seq] = fields[1]
			if n++; n == cutAt {
				shutdown(t, mnt)
				cut = true
				_ = cmd.Process.Signal(syscall.SIGKILL)
			}
		}
		_ = cmd.Wait()
		if !cut {
			t.Fatalf("cycle %d: child ended after %d acks", cycle, n)
		}
		umount()
		mount() // replays the journal as after a power cut
		verifyAcked(t, path, acked, fmt.Sprintf("cycle %d: power cut after %d acks", cycle, n))
		var out strings.Builder
		if err := bolt.Check(path, &out); err != nil {
			t.Fatalf("cycle %d: %v\n%s", cycle, err, out.String())
		}
		umount()
	}
}

// shutdown cuts the power of the file system mounted at mnt.
func shutdown(t *testing.T, mnt string) {
	t.Helper()
	d, err := os.Open(mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	flags := uint32(ext4GoingFlagsNoLogFlush)
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, d.Fd(), ext4IocShutdown, uintptr(unsafe.Pointer(&flags))); errno != 0 {
		t.Fatalf("shut down %s: %v", mnt, errno)
	}
}
