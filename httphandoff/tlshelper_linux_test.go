package httphandoff

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/internal/testcert"
	"github.com/handoff-dev/handoff/internal/testtool"
	"github.com/handoff-dev/handoff/tlshandoff"
)

// The HTTPS side of the test server (serverMain with envTLS set): it
// writes "handshake <pid> <client port>" for each TLS handshake, so that
// a test counts them per connection.

// serveTLS serves HTTPS once the process is ready, with the certificate
// in envTLS's directory, on TLS 1.2 and 1.3. It sets *ts before Ready,
// whose LoadState sets its ticket keys.
func serveTLS(hs *Server, up *handoff.Upgrader, ts **tlshandoff.Server) (net.Addr, error) {
	dir := os.Getenv(envTLS)
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		return nil, err
	}
	pid := os.Getpid()
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			event("handshake %d %d", pid, chi.Conn.RemoteAddr().(*net.TCPAddr).Port)
			return nil, nil
		},
	}
	if *ts, err = hs.TLS(cfg, tlshandoff.Options{Upgrader: up, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}); err != nil {
		return nil, err
	}
	ln, err := up.ListenPlain("tcp", "127.0.0.1:0")
	if err == nil {
		err = up.Ready(context.Background())
	}
	if err != nil {
		return nil, err
	}
	go hs.ServeTLS(ln)
	return ln.Addr(), nil
}

// moveTicketKeys carries the session ticket keys in the state, so that
// a ticket of one process resumes in the next.
func moveTicketKeys(opts *handoff.Options, ts **tlshandoff.Server) {
	opts.SaveState = func(w io.Writer) error { return (*ts).SaveTicketKeys(w) }
	opts.LoadState = func(r io.Reader) error { return (*ts).LoadTicketKeys(r) }
}

// tlsSeen is what a handler sees of TLS: "<version> <ALPN> <proto>", or
// "none".
func tlsSeen(r *http.Request) string {
	if r.TLS == nil {
		return "none"
	}
	alpn := r.TLS.NegotiatedProtocol
	if alpn == "" {
		alpn = "-"
	}
	return tls.VersionName(r.TLS.Version) + " " + alpn + " " + r.Proto
}

// testUp is this server process's Upgrader, for GET /upgrade; testReady
// is closed once Ready has returned (an upgrade before is refused).
var (
	testUp    *handoff.Upgrader
	testReady = make(chan struct{})
)

type connKey struct{}

// withConn is the test server's ConnContext: a handler finds its
// connection's client address.
func withConn(ctx context.Context, nc net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, nc.RemoteAddr().String())
}

// waiting holds, by client address, what GET /upgrade waits on: the
// upgrade's ask for its connection.
var waiting sync.Map

func asked(nc net.Conn) {
	if ch, ok := waiting.LoadAndDelete(nc.RemoteAddr().String()); ok {
		close(ch.(chan struct{}))
	}
}

// upgradeHandler starts an upgrade and answers once it has asked for
// this connection, which then moves before the next request: a client
// that sends its next request at once (curl with several URLs) cannot
// wait for a test, so the server moves between two requests by itself.
// If the upgrade fails, it answers from here.
func upgradeHandler(w http.ResponseWriter, r *http.Request) {
	pid := strconv.Itoa(os.Getpid())
	ch := make(chan struct{})
	waiting.Store(r.Context().Value(connKey{}), ch)
	failed := make(chan struct{})
	go func() {
		<-testReady
		if err := testtool.Upgrade(testUp); err != nil {
			event("failed %s %v", pid, err)
			close(failed)
		}
	}()
	select {
	case <-ch:
	case <-failed:
	}
	io.WriteString(w, pid+"\n")
}

// certDir makes a self-signed certificate for the test's servers and
// returns its directory (envTLS) and a pool that trusts it.
func certDir(t *testing.T) (string, *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	certFile, _, err := testcert.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := testcert.Pool(certFile)
	if err != nil {
		t.Fatal(err)
	}
	return dir, pool
}

// startTLSChain starts a chain of HTTPS servers; it returns the chain,
// the CA file that clients outside the test trust, and Go's pool for it.
func startTLSChain(t *testing.T, env ...string) (*chain, string, *x509.CertPool) {
	t.Helper()
	dir, pool := certDir(t)
	return startChain(t, append(env, envTLS+"="+dir)...), filepath.Join(dir, "cert.pem"), pool
}

// handshakes counts the handshakes the servers did for the client port.
func (h *chain) handshakes(port int) int {
	b, _ := os.ReadFile(h.events)
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		var pid, p int
		if _, err := fmt.Sscanf(line, "handshake %d %d", &pid, &p); err == nil && p == port {
			n++
		}
	}
	return n
}

// serveLinesTLS is serveLines over a hijacked HTTPS connection, with
// pre the plaintext before tc's: it reads tc's plaintext itself, and at
// an upgrade parks with tc.Park, its state "lines" and the bytes of a
// line begun.
func serveLinesTLS(tc *tlshandoff.Conn, pre []byte) {
	pid := strconv.Itoa(os.Getpid())
	buf := append([]byte(nil), pre...)
	p := make([]byte, 4096)
	for {
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			line := strings.TrimSpace(string(buf[:i]))
			buf = buf[i+1:]
			if _, err := io.WriteString(tc, pid+" "+line+"\n"); err != nil {
				tc.Close()
				return
			}
			continue
		}
		n, err := tc.Read(p)
		buf = append(buf, p[:n]...)
		switch {
		case errors.Is(err, handoff.ErrPark):
			if err := tc.Park(append([]byte("lines"), buf...)); err != nil {
				return // handed over (or closed)
			}
		case err != nil:
			tc.Close()
			return
		}
	}
}

// resumeLinesTLS serves a hijacked HTTPS connection that serveLinesTLS
// parked, and reports whether state was one.
func resumeLinesTLS(ts *tlshandoff.Server, c *handoff.Conn, state []byte) bool {
	if ts == nil || !tlshandoff.IsState(state) {
		return false
	}
	tc, app, err := ts.Resume(c, state)
	if err != nil || !bytes.HasPrefix(app, []byte("lines")) {
		return false // HTTP's: Server.Resume resumes its TLS itself
	}
	go serveLinesTLS(tc, app[len("lines"):])
	return true
}
