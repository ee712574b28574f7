package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/examples/pdf/internal/ledger"
	"github.com/handoff-dev/handoff/examples/pdf/internal/pdftest"
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
		c := pdftest.Dial(t, addr)
		// All requests in one write, the last split across two.
		c.Send(t, "HELLO gw1\r\nTOPUP r1 "+alice+" 100\nCHARGE r2 "+alice+" 150\n\nSTATS r3 "+alice+"\nWHOA")
		c.Send(t, "MI r4\n")
		c.Expect(t, "WELCOME gw1", "OK r1 100", "DENY r2 100", "ERR - empty-line",
			"STATS r3 100 0", "YOU r4 gw1 5")
	})
	t.Run("ledger is shared", func(t *testing.T) {
		a, b := pdftest.Dial(t, addr), pdftest.Dial(t, addr)
		a.Send(t, "TOPUP x "+bob+" 10\n")
		a.Expect(t, "OK x 10")
		b.Send(t, "CHARGE y "+bob+" 4\nWHOAMI z\n")
		b.Expect(t, "OK y 6", "YOU z - 1")
	})
	t.Run("too long", func(t *testing.T) {
		c := pdftest.Dial(t, addr)
		c.Send(t, "BALANCE r1 "+alice+"\n"+strings.Repeat("x", maxLine+1)+"\nBALANCE r2 "+alice+"\n")
		c.Expect(t, "BAL r1 100", "ERR - too-long")
		if line, err := c.ReadLine(); !errors.Is(err, io.EOF) {
			t.Fatalf("after too-long: read %q, %v; want EOF", line, err)
		}
	})
	t.Run("too long without newline", func(t *testing.T) {
		c := pdftest.Dial(t, addr)
		c.Send(t, strings.Repeat("y", maxLine+2))
		c.Expect(t, "ERR - too-long")
	})
}
