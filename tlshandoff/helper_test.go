package tlshandoff

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Self-signed certificates made once per test binary, in memory: an
// ECDSA one for the ECDHE_ECDSA suites, an RSA one for ECDHE_RSA.
var (
	certsOnce       sync.Once
	ecCert, rsaCert tls.Certificate
	certPool        *x509.CertPool
)

func certs(t testing.TB) (ec, rsa tls.Certificate, pool *x509.CertPool) {
	t.Helper()
	certsOnce.Do(func() {
		certPool = x509.NewCertPool()
		ecCert = selfSigned(t, newECKey(t))
		rsaCert = selfSigned(t, newRSAKey(t))
	})
	return ecCert, rsaCert, certPool
}

func newECKey(t testing.TB) crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newRSAKey(t testing.TB) crypto.Signer {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// selfSigned makes a certificate for localhost and 127.0.0.1 and adds it
// to certPool, which clients trust.
func selfSigned(t testing.TB, key crypto.Signer) tls.Certificate {
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "tlshandoff test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	certPool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func pkcs8(t testing.TB, c tls.Certificate) []byte {
	b, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// caFile writes the test certificates (public parts only) for clients
// outside the process: curl, openssl, Python.
func caFile(t testing.TB) string {
	ec, rsa, _ := certs(t)
	var b bytes.Buffer
	for _, c := range []tls.Certificate{ec, rsa} {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// serverConfig serves both certificates: crypto/tls picks the one the
// negotiated suite needs.
func serverConfig(t testing.TB) *tls.Config {
	ec, rsa, _ := certs(t)
	return &tls.Config{Certificates: []tls.Certificate{ec, rsa}, MinVersion: tls.VersionTLS10}
}

func clientConfig(t testing.TB) *tls.Config {
	_, _, pool := certs(t)
	return &tls.Config{RootCAs: pool, ServerName: "localhost"}
}

func newServer(t testing.TB, cfg *tls.Config) *Server {
	t.Helper()
	s, err := NewServer(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// listen serves each accepted connection with serve, on a real loopback
// listener, until the test ends.
func listen(t testing.TB, s *Server, serve func(*Conn)) net.Addr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	tl := s.NewListener(ln)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c.(*Conn))
			}()
		}
	}()
	return ln.Addr()
}

// echo copies what it reads back until the client closes.
func echo(c *Conn) { io.Copy(c, c) }

// roundTrip writes msg and reads back as many bytes, checking them.
func roundTrip(t testing.TB, c io.ReadWriter, msg []byte) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		errc <- err
	}()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read back: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("read back %d bytes that differ from those written", len(got))
	}
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
