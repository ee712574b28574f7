//go:build e2esystemd

package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// addr is where the units serve, in the container and so on the host.
const addr = "127.0.0.1:7070"

// replyTimeout bounds one request of a client, an upgrade's pause or a
// restart included.
const replyTimeout = 20 * time.Second

// client is one connection of the test's own, one request at a time, for
// the checks that need an exact answer at an exact moment on a connection
// that must never be redialled. It is the demo's probe (the demo package
// is internal to examples/pdf).
type client struct {
	t   testing.TB
	nc  net.Conn
	r   *bufio.Reader
	gw  string
	rid int
}

// dial connects and says HELLO as gw; the test closes it at cleanup.
func dial(t testing.TB, gw string) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, replyTimeout)
	if err != nil {
		t.Fatalf("client %s: %v", gw, err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &client{t: t, nc: nc, r: bufio.NewReader(nc), gw: gw}
	if reply, err := c.exchange("HELLO " + gw); err != nil || reply != "WELCOME "+gw {
		t.Fatalf("client %s: HELLO got %q, %v", gw, reply, err)
	}
	return c
}

func (c *client) exchange(line string) (string, error) {
	c.nc.SetDeadline(time.Now().Add(replyTimeout))
	if _, err := c.nc.Write([]byte(line + "\n")); err != nil {
		return "", fmt.Errorf("client %s (local %v): %q: %w", c.gw, c.nc.LocalAddr(), line, err)
	}
	reply, err := c.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("client %s (local %v): %q: %w", c.gw, c.nc.LocalAddr(), line, err)
	}
	return strings.TrimRight(reply, "\r\n"), nil
}

// ask sends verb with a fresh rid and args, and returns the reply with
// its rid taken out: "BAL e7 800" comes back as "BAL 800".
func (c *client) ask(verb string, args ...string) (string, error) {
	c.rid++
	rid := "e" + strconv.Itoa(c.rid)
	req := strings.Join(append([]string{verb, rid}, args...), " ")
	reply, err := c.exchange(req)
	if err != nil {
		return "", err
	}
	f := strings.Fields(reply)
	if len(f) < 2 || f[1] != rid {
		return "", fmt.Errorf("client %s: %q got %q", c.gw, req, reply)
	}
	return strings.Join(append(f[:1:1], f[2:]...), " "), nil
}

// expect asks and fails the test unless the reply, rid taken out, is want.
func (c *client) expect(want, verb string, args ...string) {
	c.t.Helper()
	got, err := c.ask(verb, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	if got != want {
		c.t.Fatalf("client %s: %s %v got %q, want %q", c.gw, verb, args, got, want)
	}
}

// version asks which version and pid serve the connection now.
func (c *client) version() (version string, pid int) {
	c.t.Helper()
	got, err := c.ask("VERSION")
	if err != nil {
		c.t.Fatal(err)
	}
	f := strings.Fields(got)
	if len(f) == 3 && f[0] == "VERSION" {
		if pid, err = strconv.Atoi(f[2]); err == nil {
			return f[1], pid
		}
	}
	c.t.Fatalf("client %s: VERSION got %q", c.gw, got)
	return "", 0
}

// requireServedBy fails unless the connection is served by release
// (v1 or v2) in process pid.
func (c *client) requireServedBy(release string, pid int) {
	c.t.Helper()
	v, p := c.version()
	if !strings.HasPrefix(v, release+".") || p != pid {
		c.t.Fatalf("client %s: served by %s pid %d, want %s pid %d", c.gw, v, p, release, pid)
	}
}

// requireClosed fails unless the server closes the connection: a read
// ends with EOF or a reset, without a byte, within replyTimeout.
func (c *client) requireClosed() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(replyTimeout))
	b, err := c.r.ReadByte()
	switch {
	case err == nil:
		c.t.Fatalf("client %s: read %q, want the connection closed", c.gw, b)
	case !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET):
		c.t.Fatalf("client %s: read: %v, want the connection closed by the server", c.gw, err)
	}
}

// accepts reports whether addr takes a connection now.
func accepts(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
