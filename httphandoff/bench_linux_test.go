//go:build linux

package httphandoff

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/handoff"
)

var (
	benchUpOnce sync.Once
	benchUp     *handoff.Upgrader
	benchUpErr  error
)

// benchUpgrader is the benchmark process's Upgrader, made once
// (handoff.New succeeds once per process). It never upgrades.
func benchUpgrader(b testing.TB) *handoff.Upgrader {
	benchUpOnce.Do(func() {
		benchUp, benchUpErr = handoff.New(handoff.Options{NoSignal: true,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if benchUpErr == nil {
			benchUpErr = benchUp.Ready(context.Background())
		}
	})
	if benchUpErr != nil {
		b.Fatal(benchUpErr)
	}
	return benchUp
}

// BenchmarkServeKeepAlive: one keep-alive client in this process sends a
// GET and reads the answer, an op a request, served by the same
// http.Server and handler through this package ("handoff") and on a
// plain listener ("plain"). Compare the two, as ratios: ns/op is wall
// time over loopback, cpu-ns/op the process's CPU time, client included.
func BenchmarkServeKeepAlive(b *testing.B) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	b.Run("handoff", func(b *testing.B) {
		ln, err := benchUpgrader(b).Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := &http.Server{Handler: handler}
		go New(srv).Serve(ln)
		defer ln.Close()
		benchKeepAlive(b, ln.Addr().String())
	})
	b.Run("plain", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := &http.Server{Handler: handler}
		go srv.Serve(ln)
		defer srv.Close()
		benchKeepAlive(b, ln.Addr().String())
	})
}

func benchKeepAlive(b *testing.B, addr string) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	br := bufio.NewReader(nc)
	req := []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
	b.ReportAllocs()
	cpu := processCPU()
	for b.Loop() {
		if _, err := nc.Write(req); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
	b.ReportMetric(float64((processCPU()-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(os.NewSyscallError("getrusage", err))
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkConnRequest: the calls net/http (Go 1.26, no timeouts set)
// makes on a keep-alive connection for one GET, from StateIdle to its
// background read ended (src/net/http/server.go: serve, readRequest,
// startBackgroundRead, finishRequest, abortPendingRead), on a conn over
// a handoff.Conn over a net.Conn that costs nothing (requestConn): what
// this package and handoff.Conn add to each request, without syscalls.
func BenchmarkConnRequest(b *testing.B) {
	hc := benchUpgrader(b).Wrap(&requestConn{}, "bench")
	defer hc.Close()
	c := newConn(New(&http.Server{}), hc, hc, false, time.Time{})
	c.setState(http.StateNew)
	p := make([]byte, bufioSize)
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
	past := time.Unix(1, 0)
	b.ReportAllocs()
	for b.Loop() {
		c.setState(http.StateIdle)
		_ = c.SetReadDeadline(time.Time{})   // the idle deadline
		if _, err := c.Read(p); err != nil { // Peek(4): the whole request
			b.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Time{}) // the header deadline
		_ = c.SetReadDeadline(time.Time{}) // ReadTimeout's, the head parsed
		c.setState(http.StateActive)
		_ = c.SetReadDeadline(time.Time{}) // startBackgroundRead
		if _, err := c.Write(resp); err != nil {
			b.Fatal(err)
		}
		_ = c.SetReadDeadline(past) // abortPendingRead: its background read...
		if _, err := c.Read(p[:1]); err == nil {
			b.Fatal("background read: no timeout")
		}
		_ = c.SetReadDeadline(time.Time{}) // ...ended
	}
}

// requestConn is a net.Conn whose Read returns a GET, or net's timeout past
// its read deadline, and whose Write and deadlines cost nothing.
type requestConn struct {
	net.Conn // nil: only what follows is used
	past     bool
}

var benchRequest = []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")

func (r *requestConn) Read(p []byte) (int, error) {
	if r.past { // as net returns it
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	}
	return copy(p, benchRequest), nil
}

func (r *requestConn) Write(p []byte) (int, error) { return len(p), nil }

func (r *requestConn) SetReadDeadline(t time.Time) error {
	r.past = !t.IsZero() && t.Before(time.Now())
	return nil
}

func (r *requestConn) SetWriteDeadline(time.Time) error { return nil }
func (r *requestConn) Close() error                     { return nil }
func (r *requestConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (r *requestConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
