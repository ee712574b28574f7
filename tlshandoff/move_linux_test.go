//go:build linux

package tlshandoff

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// dupConn makes a second net.Conn of c's socket from a dup of its fd
// (F_DUPFD_CLOEXEC, through SyscallConn: Fd would make it blocking), as a
// new process gets one over SCM_RIGHTS.
func dupConn(t *testing.T, c net.Conn) net.Conn {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		t.Fatal(err, derr)
	}
	f := os.NewFile(uintptr(fd), "dup")
	defer f.Close()
	nc, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	return nc
}

// acceptOne accepts one connection on a real listener and does the
// server's handshake, in the background while the client dials; next
// returns the Server's Conn with its raw TCP connection.
func acceptOne(t *testing.T, s *Server) (addr net.Addr, next func() (*Conn, net.Conn)) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	type accepted struct {
		c   *Conn
		raw net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			ch <- accepted{err: err}
			return
		}
		c := s.Server(raw)
		ch <- accepted{c, raw, c.Handshake()}
	}()
	return ln.Addr(), func() (*Conn, net.Conn) {
		a := <-ch
		if a.err != nil {
			t.Fatal(a.err)
		}
		t.Cleanup(func() { a.raw.Close() })
		return a.c, a.raw
	}
}

// move marshals c with app, rebuilds it on a dup of raw's fd, and closes
// raw without a word to the client (close(2) of one of two fds of the
// socket sends nothing), as the old process of an upgrade does.
func move(t *testing.T, s *Server, c *Conn, raw net.Conn, app string) (*Conn, net.Conn) {
	t.Helper()
	state, err := c.MarshalState([]byte(app))
	if err != nil {
		t.Fatal(err)
	}
	dup := dupConn(t, raw)
	t.Cleanup(func() { dup.Close() })
	raw.Close()
	nc, gotApp, err := s.Resume(dup, state)
	if err != nil {
		t.Fatal(err)
	}
	if string(gotApp) != app {
		t.Fatalf("application state %q, want %q", gotApp, app)
	}
	return nc, dup
}

// TestMoveLive: a live connection, with a request half read and another
// not yet decrypted, moves three times to a dup of its fd (with a
// KeyUpdate between moves in TLS 1.3); the client sees one TCP
// connection, one handshake, and every byte in order.
func TestMoveLive(t *testing.T) {
	for _, tc := range []struct{ version, suite uint16 }{
		{tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256}, // what Go's client gets
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		{tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256},
	} {
		t.Run(tls.CipherSuiteName(tc.suite), func(t *testing.T) {
			s := newServer(t, serverConfig(t))
			addr, next := acceptOne(t, s)
			client, err := tls.Dial("tcp", addr.String(), goClient(t, tc.version, tc.suite))
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			c, raw := next()
			for i := range 3 {
				writeAll(t, client, "first request|second request|")
				readN(t, c, "first")      // the rest of the record is plaintext kept
				waitRecords(t, c, raw, 2) // the second record waits undecrypted
				c, raw = move(t, s, c, raw, "app state")
				readN(t, c, " request|second request|")
				if tc.version == tls.VersionTLS13 && i == 1 {
					if err := c.KeyUpdate(true); err != nil {
						t.Fatal(err)
					}
				}
				writeAll(t, c, "reply")
				readN(t, client, "reply")
			}
			if st := s.Stats(); st.Handshakes != 1 {
				t.Fatalf("%d handshakes, want 1", st.Handshakes)
			}
		})
	}
}

func writeAll(t *testing.T, w io.Writer, s string) {
	t.Helper()
	for _, part := range []string{s[:len(s)/2], s[len(s)/2:]} {
		if _, err := w.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
	}
}

func readN(t *testing.T, r io.Reader, want string) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(r, got); err != nil || string(got) != want {
		t.Fatalf("read %q, %v; want %q", got, err, want)
	}
}

// waitRecords reads from the transport until n whole records are
// buffered: the bytes that must move undecrypted.
func waitRecords(t *testing.T, c *Conn, raw net.Conn, n int) {
	t.Helper()
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	for {
		b, k := c.r.rbuf, 0
		for len(b) >= headerLen {
			l, err := recordLen(b)
			if err != nil || len(b) < l {
				break
			}
			b, k = b[l:], k+1
		}
		if k >= n-1 { // the first was decrypted already
			return
		}
		if err := c.fillLocked(headerLen); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTamperAfterMove: after a move, a record changed on the wire is
// refused with bad_record_mac, and the moved connection ends.
func TestTamperAfterMove(t *testing.T) {
	s := newServer(t, serverConfig(t))
	addr, next := acceptOne(t, s)
	p := dialPeer(t, addr)
	c, raw := next()
	p.send(typeApplicationData, []byte("hello"), nil)
	readN(t, c, "hello")
	c, _ = move(t, s, c, raw, "")
	p.send(typeApplicationData, []byte("tampered"), func(rec []byte) { rec[len(rec)-1] ^= 0x80 })
	_, err := c.Read(make([]byte, 16))
	if !errors.Is(err, errBadRecordMAC) {
		t.Fatalf("Read after tampering: %v", err)
	}
	p.expectAlert(alertBadRecordMAC)
}

// TestMoveClientAuth: a client's certificate moves with its connection.
// With a certificate requested, crypto/tls sends the TLS 1.3 ticket
// after the client's certificate rather than in its first flight: still
// one record under the application keys at the switch.
func TestMoveClientAuth(t *testing.T) {
	cfg := serverConfig(t)
	cfg.ClientAuth = tls.RequireAnyClientCert
	s := newServer(t, cfg)
	addr, next := acceptOne(t, s)
	ccfg := goClient(t, tls.VersionTLS13, 0)
	ec, _, _ := certs(t)
	ccfg.Certificates = []tls.Certificate{ec}
	ccfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	client, err := tls.Dial("tcp", addr.String(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, raw := next()
	checkFacts(t, c.Facts(), Facts{0, 1, []byte{0x84}})
	writeAll(t, client, "hello")
	readN(t, c, "hello")
	c, _ = move(t, s, c, raw, "")
	peers := c.ConnectionState().PeerCertificates
	if len(peers) != 1 || !peers[0].Equal(ec.Leaf) {
		t.Fatalf("after the move, %d peer certificates, not the client's", len(peers))
	}
	writeAll(t, c, "moved")
	readN(t, client, "moved")
}
