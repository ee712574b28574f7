//go:build linux

package tlshandoff

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/handoff-dev/handoff/internal/testtool"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/handoff"
)

// The test binary doubles as the TLS echo server under test (TestMain
// runs echoMain when envRole says so); every process of an upgrade chain
// is one. It writes its events, one a line, to the file envEvents names:
// "ready <pid> <addr>", "handshake <pid> <client port> <movable> <suite>",
// "keyupdate <pid> <client port>", "exit <pid> <connections that could not
// move, served here to their end>".
const (
	envRole   = "TLSHANDOFF_TEST_ROLE"
	envEvents = "TLSHANDOFF_TEST_EVENTS"
	envCert   = "TLSHANDOFF_TEST_CERT" // the test's certificate and key, PEM: every process serves the same
	envRoll   = "TLSHANDOFF_TEST_ROLLING"
)

func TestMain(m *testing.M) {
	if os.Getenv(envRole) == "server" {
		echoMain()
		return
	}
	os.Exit(m.Run())
}

func event(format string, args ...any) {
	f, err := os.OpenFile(os.Getenv(envEvents), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, format+"\n", args...)
}

// upgradeEvents logs to stderr and makes the Server's line at each
// upgrade an event: "tlsupgrade <pid> <move> <stay>".
type upgradeEvents struct{ slog.Handler }

func (h upgradeEvents) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "tlshandoff: upgrade:") {
		n := map[string]int64{}
		r.Attrs(func(a slog.Attr) bool {
			if a.Value.Kind() == slog.KindInt64 {
				n[a.Key] = a.Value.Int64()
			}
			return true
		})
		event("tlsupgrade %d %d %d", os.Getpid(), n["move"], n["stay"])
	}
	return h.Handler.Handle(ctx, r)
}

// certEnv is what envCert carries: each certificate and its key in PEM.
// A test certificate made for this run only.
func certEnv(t testing.TB) string {
	var b bytes.Buffer
	ec, rsa, _ := certs(t)
	for _, c := range []tls.Certificate{ec, rsa} {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
		pem.Encode(&b, &pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8(t, c)})
	}
	return b.String()
}

func certsFromEnv() ([]tls.Certificate, error) {
	var out []tls.Certificate
	rest := []byte(os.Getenv(envCert))
	for {
		var cb, kb *pem.Block
		if cb, rest = pem.Decode(rest); cb == nil {
			break
		}
		if kb, rest = pem.Decode(rest); kb == nil {
			return nil, errors.New("certificate without key")
		}
		c, err := tls.X509KeyPair(pem.EncodeToMemory(cb), pem.EncodeToMemory(kb))
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func echoMain() {
	pid := os.Getpid()
	certs, err := certsFromEnv()
	if err != nil {
		event("error %d %v", pid, err)
		os.Exit(1)
	}
	var srv *Server
	mode := handoff.AllAtOnce
	if os.Getenv(envRoll) != "" {
		mode = handoff.Rolling
	}
	up, err := handoff.New(handoff.Options{
		Resume: func(hc *handoff.Conn, state []byte) {
			c, app, err := srv.Resume(hc, state)
			if err != nil {
				event("error %d resume: %v", pid, err)
				hc.Close()
				return
			}
			serveEcho(c, app)
		},
		// The ticket keys move with the state, on the handoff channel only.
		SaveState: func(w io.Writer) error { _, err := w.Write(srv.MarshalTicketKeys()); return err },
		LoadState: func(r io.Reader) error {
			b, err := io.ReadAll(r)
			if err != nil {
				return err
			}
			return srv.SetTicketKeys(b)
		},
		Mode:     mode,
		NoSignal: true,
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err == nil {
		srv, err = NewServer(&tls.Config{Certificates: certs, MinVersion: tls.VersionTLS10},
			Options{Upgrader: up, Logger: slog.New(upgradeEvents{slog.NewTextHandler(os.Stderr, nil)})})
	}
	if err != nil {
		event("error %d %v", pid, err)
		os.Exit(1)
	}
	testUp = up
	serveUpgrades(up, srv)
}

// serveUpgrades listens, accepts, upgrades at each SIGHUP, and once
// handed over drains what could not move.
func serveUpgrades(up *handoff.Upgrader, srv *Server) {
	pid := os.Getpid()
	ln, err := up.ListenPlain("tcp", "127.0.0.1:0")
	if err == nil {
		err = up.Ready(context.Background())
	}
	if err != nil {
		event("error %d %v", pid, err)
		os.Exit(1)
	}
	close(testReady)
	tl := srv.NewListener(ln)
	go func() {
		for {
			nc, err := tl.Accept()
			if err != nil {
				return
			}
			go acceptEcho(nc.(*Conn))
		}
	}()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if err := testtool.Upgrade(up); err != nil {
				event("failed %d %v", pid, err)
			}
		}
	}()
	event("ready %d %s", pid, ln.Addr())
	<-up.Exit()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.Drain(ctx); err != nil {
		event("error %d %v", pid, err)
	}
	event("exit %d %d", pid, srv.Stats().Unmovable)
	up.Exiting()
}

func acceptEcho(c *Conn) {
	if err := c.Handshake(); err != nil {
		c.Close()
		return
	}
	ok, _ := c.Movable()
	event("handshake %d %s %v %s", os.Getpid(), port(c), ok, tls.CipherSuiteName(c.ConnectionState().CipherSuite))
	serveEcho(c, nil)
}

func port(c *Conn) string {
	_, p, _ := net.SplitHostPort(c.RemoteAddr().String())
	return p
}

// serveEcho answers each line "<pid> <line>"; "keyupdate" makes the
// server update its keys and ask the client to update its own. It
// answers HTTP GET requests too (for curl), with the pid as the body. At
// an upgrade it parks between reads, with the part of a line or request
// head it holds as its state.
func serveEcho(c *Conn, partial []byte) {
	buf := make([]byte, 4096)
	for {
		var ok bool
		if partial, ok = answerAll(c, partial); !ok {
			return
		}
		n, err := c.Read(buf)
		partial = append(partial, buf[:n]...)
		if errors.Is(err, handoff.ErrPark) {
			if c.Park(partial) != nil {
				return // handed over, or closed
			}
			continue
		}
		if err != nil {
			if err != io.EOF {
				event("ended %d %s %v", os.Getpid(), port(c), err)
			}
			c.Close()
			return
		}
	}
}

// answerAll answers every whole line and request head in partial and
// returns what is left; false if the connection is gone (closed, or
// handed over).
func answerAll(c *Conn, partial []byte) ([]byte, bool) {
	pid := strconv.Itoa(os.Getpid())
	for {
		if bytes.HasPrefix(partial, []byte("GET ")) {
			i := bytes.Index(partial, []byte("\r\n\r\n"))
			if i < 0 {
				return partial, true
			}
			path := strings.Fields(string(partial[:i]))[1]
			partial = partial[i+4:]
			if !answerHTTP(c, path, partial) {
				return nil, false
			}
			continue
		}
		i := bytes.IndexByte(partial, '\n')
		if i < 0 {
			return partial, true
		}
		line := string(partial[:i])
		partial = partial[i+1:]
		if line == "keyupdate" {
			if err := c.KeyUpdate(true); err != nil {
				event("error %s keyupdate: %v", pid, err)
			}
			event("keyupdate %s %s", pid, port(c))
		}
		if _, err := c.Write([]byte(pid + " " + line + "\n")); err != nil {
			c.Close()
			return nil, false
		}
	}
}

// testUp is this server process's Upgrader, for GET /upgrade, and
// testReady is closed once its Ready has returned.
var (
	testUp    *handoff.Upgrader
	testReady = make(chan struct{})
)

// answerHTTP answers GET path with the pid. For /upgrade it first starts
// an upgrade and waits until it asks this connection to park, then
// answers and parks with rest, the bytes after the request: curl sends
// its next request at once, and cannot wait for a test, so the server
// moves between two requests by itself.
func answerHTTP(c *Conn, path string, rest []byte) bool {
	pid := strconv.Itoa(os.Getpid())
	var asked chan struct{}
	if path == "/upgrade" {
		asked = make(chan struct{})
		var once sync.Once
		hc := c.raw.(*handoff.Conn)
		hc.ParkWhen(func() { once.Do(func() { close(asked) }) })
		defer hc.ParkWhen(nil)
		failed := make(chan struct{})
		go func() {
			<-testReady // a connection resumes before Ready returns, and an upgrade then is refused
			if err := testtool.Upgrade(testUp); err != nil {
				event("failed %s %v", pid, err)
				close(failed)
			}
		}()
		select {
		case <-asked:
		case <-failed:
			asked = nil // answer, and carry on here
		}
	}
	if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s\n", len(pid)+1, pid); err != nil {
		c.Close()
		return false
	}
	return asked == nil || c.Park(rest) == nil
}
