package metrics

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/tlshandoff"
)

// tlsServer is a tlshandoff.Server with a self-signed ECDSA certificate,
// its clients' config, and a listener whose accepted connections
// handshake.
func tlsServer(t *testing.T) (*tlshandoff.Server, *tls.Config, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := tlshandoff.NewServer(&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion: tls.VersionTLS12}, tlshandoff.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	tl := s.NewListener(ln)
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tlshandoff.Conn).Handshake() }()
		}
	}()
	return s, &tls.Config{InsecureSkipVerify: true}, ln.Addr().String()
}

// dialTLS makes one handshake with cfg and keeps the connection open
// until the test ends.
func dialTLS(t *testing.T, addr string, cfg *tls.Config) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
}

// waitStats waits until the server has counted n handshakes: the
// server's side of each ends after the client's.
func waitStats(t *testing.T, s *tlshandoff.Server, n uint64) tlshandoff.Stats {
	t.Helper()
	for end := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		if st := s.Stats(); st.Handshakes >= n {
			return st
		}
		if time.Now().After(end) {
			t.Fatalf("server stats %+v, want %d handshakes", s.Stats(), n)
		}
	}
}

// TestTLSDrainedSeen: the old process counts the connections it kept to
// drain once it has handed over, not before.
func TestTLSDrainedSeen(t *testing.T) {
	c := &TLSCollector{drained: 4, offered: 3}
	if got := c.drainedSeen(false); got != 4 {
		t.Errorf("serving: %v, want the carried 4", got)
	}
	if got := c.drainedSeen(true); got != 7 {
		t.Errorf("handed over: %v, want 4 carried + 3 kept here", got)
	}
}
