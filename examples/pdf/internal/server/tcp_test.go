package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/examples/pdf/internal/ledger"
	"github.com/handoff-dev/handoff/examples/pdf/internal/proto"
	"github.com/handoff-dev/handoff/handoff"
)

// tcpServer is one server behind a handoff listener on loopback, shared by
// every run of TestOverTCP: handoff.New works once per process, so -count=N
// must reuse it.
var tcpServer struct {
	once sync.Once
	addr string
	err  error
}

func startTCP(t *testing.T) string {
	t.Helper()
	tcpServer.once.Do(func() {
		tcpServer.addr, tcpServer.err = listenTCP()
	})
	if tcpServer.err != nil {
		t.Fatal(tcpServer.err)
	}
	return tcpServer.addr
}

// listenTCP starts the server; it lives until the test binary exits.
func listenTCP() (string, error) {
	s := New("v2.0.0", ledger.NewV2(), quiet())
	up, err := handoff.New(handoff.Options{
		Version:   s.version,
		SaveState: s.SaveState,
		LoadState: s.LoadState,
		Resume:    s.Resume,
		NoSignal:  true,
		Logger:    quiet(),
	})
	if err != nil {
		return "", err
	}
	ln, err := up.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	if err := up.Ready(context.Background()); err != nil {
		return "", err
	}
	go s.Serve(ln)
	return ln.Addr().String(), nil
}

// TestOverTCP runs the real handler behind a handoff listener on loopback.
// Account names are unique per run because the ledger outlives a run.
func TestOverTCP(t *testing.T) {
	addr := startTCP(t)
	run := fmt.Sprint(time.Now().UnixNano())
	alice, bob := "alice"+run, "bob"+run

	t.Run("pipelined", func(t *testing.T) {
		c := dial(t, addr)
		// All requests in one write, the last split across two.
		send(t, c, "HELLO gw1\r\nTOPUP r1 "+alice+" 100\nCHARGE r2 "+alice+" 150\n\nSTATS r3 "+alice+"\nWHOA")
		send(t, c, "MI r4\n")
		expect(t, c, "WELCOME gw1", "OK r1 100", "DENY r2 100", "ERR - empty-line",
			"STATS r3 100 0", "YOU r4 gw1 5")
	})
	t.Run("ledger is shared", func(t *testing.T) {
		a, b := dial(t, addr), dial(t, addr)
		send(t, a, "TOPUP x "+bob+" 10\n")
		expect(t, a, "OK x 10")
		send(t, b, "CHARGE y "+bob+" 4\nWHOAMI z\n")
		expect(t, b, "OK y 6", "YOU z - 1")
	})
	t.Run("too long", func(t *testing.T) {
		c := dial(t, addr)
		send(t, c, "BALANCE r1 "+alice+"\n"+strings.Repeat("x", proto.MaxLine+1)+"\nBALANCE r2 "+alice+"\n")
		expect(t, c, "BAL r1 100", "ERR - too-long")
		if line, err := c.r.ReadString('\n'); !errors.Is(err, io.EOF) {
			t.Fatalf("after too-long: read %q, %v; want EOF", line, err)
		}
	})
	t.Run("too long without newline", func(t *testing.T) {
		c := dial(t, addr)
		send(t, c, strings.Repeat("y", proto.MaxLine+2))
		expect(t, c, "ERR - too-long")
	})
}

type client struct {
	net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// A hung server fails the test instead of hanging it.
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{c, bufio.NewReader(c)}
}

func send(t *testing.T, c *client, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatal(err)
	}
}

func expect(t *testing.T, c *client, want ...string) {
	t.Helper()
	for _, w := range want {
		line, err := c.r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading reply for %q: %v", w, err)
		}
		if line != w+"\n" {
			t.Fatalf("got %q, want %q", line, w)
		}
	}
}
