package tcpproxy_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/dfsmr/dfsmr/internal/tcpproxy"
)

// echo serves a line echo on a loopback port until the test ends.
func echo(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return lis.Addr().String()
}

// roundTrip sends a line on c and reads it back.
func roundTrip(c net.Conn, r *bufio.Reader, line string) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return err
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if got != line+"\n" {
		return errors.New("echoed " + got)
	}
	return nil
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// TestCutClosesAndRefusesUntilHeal forwards a connection, cuts the proxy
// (the open connection ends, a new one is closed at once), heals it (a new
// connection is forwarded again) and closes it.
func TestCutClosesAndRefusesUntilHeal(t *testing.T) {
	p, err := tcpproxy.New(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	c1, r1 := dial(t, p.Addr())
	if err := roundTrip(c1, r1, "before"); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}

	p.Cut()
	c1.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r1.ReadString('\n'); !errors.Is(err, io.EOF) {
		t.Fatalf("open connection after Cut: read %v, want EOF", err)
	}
	c2, r2 := dial(t, p.Addr())
	if err := roundTrip(c2, r2, "cut"); err == nil {
		t.Fatal("a new connection was forwarded while cut")
	}

	p.Heal()
	c3, r3 := dial(t, p.Addr())
	if err := roundTrip(c3, r3, "healed"); err != nil {
		t.Fatalf("after Heal: %v", err)
	}

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	c3.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r3.ReadString('\n'); !errors.Is(err, io.EOF) {
		t.Fatalf("open connection after Close: read %v, want EOF", err)
	}
	if c, err := net.Dial("tcp", p.Addr()); err == nil {
		c.Close()
		t.Fatal("the proxy still accepts after Close")
	}
}
