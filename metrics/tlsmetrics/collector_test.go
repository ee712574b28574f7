package tlsmetrics

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/handoff-dev/handoff/handoff"
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
	c := &Collector{drained: 4, offered: 3}
	if got := c.drainedSeen(false); got != 4 {
		t.Errorf("serving: %v, want the carried 4", got)
	}
	if got := c.drainedSeen(true); got != 7 {
		t.Errorf("handed over: %v, want 4 carried + 3 kept here", got)
	}
}

// TestCollector: a first process's Server with one TLS 1.3 connection,
// which can move, and one TLS 1.2 connection with a CBC suite, which
// cannot and would drain here; a rolled-back upgrade (a binary that
// exits) leaves nothing drained.
func TestCollector(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "exits")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	up, err := handoff.New(handoff.Options{Binary: bin, NoSignal: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Stop()
	srv, client, addr := tlsServer(t)
	c := NewCollector(up, srv)
	if err := up.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	dialTLS(t, addr, client)
	cbc := client.Clone()
	cbc.MaxVersion, cbc.CipherSuites = tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
	dialTLS(t, addr, cbc)
	waitStats(t, srv, 2)
	want := `
# HELP handoff_tls_drained_total TLS connections that could not move and stayed to drain in the old process, summed over the chain's upgrades.
# TYPE handoff_tls_drained_total counter
handoff_tls_drained_total 0
# HELP handoff_tls_handshakes_total TLS handshakes of the process chain, by whether the connection can move at an upgrade.
# TYPE handoff_tls_handshakes_total counter
handoff_tls_handshakes_total{moves="no"} 1
handoff_tls_handshakes_total{moves="yes"} 1
# HELP handoff_tls_unmovable_connections Open TLS connections of this process that cannot move: at an upgrade they stay here and drain.
# TYPE handoff_tls_unmovable_connections gauge
handoff_tls_unmovable_connections 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if res, err := up.UpgradeWith(context.Background(), handoff.UpgradeRequest{}); err == nil || res.Committed {
		t.Fatalf("upgrade to a binary that exits: %+v, %v", res, err)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Fatalf("after a rollback: %v", err)
	}
}
