package tlshandoff

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// fixedConn is a Conn of suite s with keys from a fixed secret, as
// Resume would rebuild it: for the state and record decoder tests.
func fixedConn(t testing.TB, s *suite, pending []byte) *Conn {
	t.Helper()
	ec, _, _ := certs(t)
	c := &Conn{state: tls.ConnectionState{Version: s.version, CipherSuite: s.id, NegotiatedProtocol: "h2", ServerName: "localhost",
		PeerCertificates: []*x509.Certificate{ec.Leaf}}}
	var err error
	if s.version == tls.VersionTLS13 {
		secret := bytes.Repeat([]byte{7}, s.hash().Size())
		c.r.in, err = newHalf13(s, secret, 3)
		if err == nil {
			c.w.out, err = newHalf13(s, bytes.Repeat([]byte{8}, len(secret)), 5)
		}
	} else {
		secret := bytes.Repeat([]byte{7}, 48)
		c.r.in, err = newHalf(s, secret[:s.keyLen], secret[:s.ivLen], 3)
		if err == nil {
			c.w.out, err = newHalf(s, secret[1:s.keyLen+1], secret[1:s.ivLen+1], 5)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	c.r.rbuf = pending
	c.r.plain = []byte("unread")
	return c
}

func stateOf(t testing.TB, c *Conn, app string) []byte {
	t.Helper()
	b, err := c.marshalLocked([]byte(app))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestStateRoundTrip: every suite's state decodes to the same
// connection, which encodes to the same bytes.
func TestStateRoundTrip(t *testing.T) {
	for i := range suites {
		s := &suites[i]
		state := stateOf(t, fixedConn(t, s, []byte("pending bytes")), "app")
		c, app, err := parseState(state)
		if err != nil {
			t.Fatalf("%s: %v", tls.CipherSuiteName(s.id), err)
		}
		if string(app) != "app" || string(c.r.plain) != "unread" || string(c.r.rbuf) != "pending bytes" ||
			c.r.in.seq != 3 || c.w.out.seq != 5 || c.state.NegotiatedProtocol != "h2" || len(c.state.PeerCertificates) != 1 {
			t.Fatalf("%s: decoded %+v", tls.CipherSuiteName(s.id), c.state)
		}
		if again := stateOf(t, c, "app"); !bytes.Equal(again, state) {
			t.Fatalf("%s: state encodes differently after a round trip", tls.CipherSuiteName(s.id))
		}
	}
}

// TestStateRefused: a state cut short anywhere, with bytes after its
// end, or changed where it must be exact, is refused, never half built.
func TestStateRefused(t *testing.T) {
	state := stateOf(t, fixedConn(t, &suites[0], nil), "app")
	for n := range len(state) {
		if _, _, err := parseState(state[:n]); !errors.Is(err, ErrState) {
			t.Fatalf("state cut to %d bytes: %v", n, err)
		}
	}
	bad := map[string]func([]byte) []byte{
		"trailing":  func(b []byte) []byte { return append(b, 0) },
		"magic":     func(b []byte) []byte { b[0] = 'X'; return b },
		"format":    func(b []byte) []byte { b[4] = 2; return b },
		"version":   func(b []byte) []byte { b[6] = 3; return b }, // TLS 1.2 with a TLS 1.3 suite
		"suite":     func(b []byte) []byte { b[8] = 0x99; return b },
		"flags":     func(b []byte) []byte { return flipFlags(b) },
		"certCount": func(b []byte) []byte { b[flagsAt(b)+1] = maxPeerCerts + 1; return b },
		"secretLen": func(b []byte) []byte { b[flagsAt(b)+2+8] = 31; return b },
	}
	for name, f := range bad {
		if _, _, err := parseState(f(bytes.Clone(state))); !errors.Is(err, ErrState) {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// flagsAt is the offset of the flags byte: after magic, format, version,
// suite, ALPN and server name.
func flagsAt(b []byte) int {
	i := 4 + 1 + 2 + 2
	i += 1 + int(b[i])
	i += 1 + int(b[i])
	return i
}

func flipFlags(b []byte) []byte {
	b[flagsAt(b)] |= 0x80
	return b
}

// FuzzState: no input makes the decoder panic or allocate what the input
// does not back, and what it accepts encodes back to the same bytes.
func FuzzState(f *testing.F) {
	for i := range suites {
		f.Add(stateOf(f, fixedConn(f, &suites[i], []byte{23, 3, 3, 0, 1}), "app"))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, app, err := parseState(b)
		if err != nil {
			if !errors.Is(err, ErrState) {
				t.Fatalf("error not wrapping ErrState: %v", err)
			}
			return
		}
		if again := stateOf(t, c, string(app)); !bytes.Equal(again, b) {
			t.Fatalf("accepted state encodes differently")
		}
	})
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if a, err = net.Dial("tcp", ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if b, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// FuzzRecords feeds the record layer arbitrary bytes from the client
// (the first byte picks the suite): it must neither panic nor hang, and
// each Read ends in data, io.EOF, or an error; the transport has
// nothing more, so that reading past the input times out at once.
func FuzzRecords(f *testing.F) {
	for i := range suites {
		in := fixedConn(f, &suites[i], nil).r.in
		var recs []byte
		recs = in.seal(recs, typeApplicationData, []byte("hello"))
		recs = in.seal(recs, typeHandshake, []byte{msgKeyUpdate, 0, 0, 1, 0})
		recs = in.seal(recs, typeAlert, []byte{alertLevelWarning, alertCloseNotify})
		f.Add(append([]byte{byte(i)}, recs...))
		f.Add(append([]byte{byte(i)}, recs[:len(recs)-3]...))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 || len(b) > maxPending {
			return
		}
		s := &suites[int(b[0])%len(suites)]
		c := fixedConn(t, s, append([]byte(nil), b[1:]...))
		c.r.plain = nil
		c.raw, c.movable = tcpEnd(t), true
		c.hsDone.Store(true)
		_ = c.raw.SetReadDeadline(time.Unix(1, 0))
		readAllRecords(t, c)
	})
}

func tcpEnd(t *testing.T) net.Conn {
	a, _ := tcpPair(t)
	return a
}

func readAllRecords(t *testing.T, c *Conn) {
	buf := make([]byte, maxPlaintext)
	for range len(c.r.rbuf) + 1 {
		n, err := c.Read(buf)
		switch {
		case err == nil && n > 0:
			continue
		case err == nil:
			t.Fatal("Read returned nothing and no error")
		case errors.Is(err, io.EOF), temporary(err), c.r.err != nil:
			return
		default:
			t.Fatal(fmt.Errorf("unexpected Read error: %w", err))
		}
	}
	t.Fatal("more Reads than input bytes")
}
