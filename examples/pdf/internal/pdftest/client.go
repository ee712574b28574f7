// Package pdftest is what the pdf example's tests share to talk to a real
// server: a line client that fails the test on a wrong reply, and never
// hangs it.
package pdftest

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// replyTimeout bounds every wait for a reply, so a hung server fails the
// test instead of hanging it.
const replyTimeout = 10 * time.Second

// Client is one connection to a pdf server. The test closes it at cleanup.
type Client struct {
	net.Conn
	r *bufio.Reader
}

// Dial connects to addr.
func Dial(t testing.TB, addr string) *Client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &Client{c, bufio.NewReader(c)}
}

// Send writes s as it is: several requests, or part of one.
func (c *Client) Send(t testing.TB, s string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(replyTimeout))
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("send %q: %v", s, err)
	}
}

// ReadLine reads the next reply line, newline included.
func (c *Client) ReadLine() (string, error) {
	c.SetReadDeadline(time.Now().Add(replyTimeout))
	return c.r.ReadString('\n')
}

// Expect requires the next replies to be want, in order.
func (c *Client) Expect(t testing.TB, want ...string) {
	t.Helper()
	for _, w := range want {
		line, err := c.ReadLine()
		if err != nil {
			t.Fatalf("reading reply for %q: %v", w, err)
		}
		if line != w+"\n" {
			t.Fatalf("got %q, want %q", line, w)
		}
	}
}

// Ask sends one request and requires the reply want.
func (c *Client) Ask(t testing.TB, req, want string) {
	t.Helper()
	c.Send(t, req+"\n")
	line, err := c.ReadLine()
	if got := strings.TrimSpace(line); got != want || err != nil {
		t.Fatalf("%s: got %q (%v), want %q", req, got, err, want)
	}
}

// ClosedByServer requires the server to close the connection: a read ends
// with EOF (or a reset) without a byte.
func (c *Client) ClosedByServer(t testing.TB) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := c.r.ReadByte()
	if err == nil {
		t.Fatalf("read %q, want the connection closed", b)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read: %v, want the connection closed by the server", err)
	}
}
