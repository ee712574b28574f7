package tlshandoff_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"time"

	"github.com/handoff-dev/handoff/tlshandoff"
)

// A Server in place of tls.NewListener. Each connection's handshake is
// crypto/tls's; Movable says whether its record layer is this package's,
// so that it can move at an upgrade (with a handoff.Upgrader in Options,
// it moves by itself; see the package doc).
func Example() {
	cert, pool := exampleCert()
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	srv, err := tlshandoff.NewServer(cfg, tlshandoff.Options{})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go func() {
		nc, err := srv.NewListener(ln).Accept()
		if err != nil {
			return
		}
		c := nc.(*tlshandoff.Conn)
		defer c.Close()
		movable, _ := c.Movable()
		fmt.Fprintf(c, "movable: %v\n", movable)
	}()

	client, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	b, _ := io.ReadAll(client)
	fmt.Print(string(b))
	// Output: movable: true
}

// exampleCert makes a self-signed certificate for localhost, and a pool
// that trusts it.
func exampleCert() (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		log.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
