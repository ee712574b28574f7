package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseBrief(t *testing.T) {
	out := "CONNECTION ESTABLISHED\nProtocol version: TLSv1.2\nCiphersuite: ECDHE-ECDSA-AES128-GCM-SHA256\n" +
		"Peer certificate: CN = handoff test\nHash used: SHA256\nVerification: OK\nDONE\n"
	if got, want := parseBrief(out), "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256"; got != want {
		t.Errorf("parseBrief = %q, want %q", got, want)
	}
	if got := parseBrief("40E7:error:0A000086:SSL routines::certificate verify failed\n"); got != "" {
		t.Errorf("parseBrief of a failed handshake = %q, want none", got)
	}
}

func TestSumMetric(t *testing.T) {
	text := `# HELP handoff_tls_handshakes_total TLS handshakes of the process chain.
# TYPE handoff_tls_handshakes_total counter
handoff_tls_handshakes_total{moves="no"} 3
handoff_tls_handshakes_total{moves="yes"} 200
handoff_tls_handshakes_total_other 7
handoff_tls_drained_total 0
`
	if sum, found, err := sumMetric(text, "handoff_tls_handshakes_total"); sum != 203 || !found || err != nil {
		t.Errorf("sumMetric = %v, %v, %v; want 203, true, nil", sum, found, err)
	}
	if sum, found, err := sumMetric(text, "httpd_tls_handshakes_total"); sum != 0 || found || err != nil {
		t.Errorf("sumMetric of an absent metric = %v, %v, %v; want 0, false, nil", sum, found, err)
	}
	if _, _, err := sumMetric("handoff_tls_handshakes_total x\n", "handoff_tls_handshakes_total"); err == nil {
		t.Error("sumMetric of a bad value: no error")
	}
}

func TestCountLines(t *testing.T) {
	f := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(f, []byte("tlsconn a\n[NOTICE] x\ntlsconn b\n tlsconn c\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if n, err := countLines(f, "tlsconn "); n != 2 || err != nil {
		t.Errorf("countLines = %d, %v; want 2, nil", n, err)
	}
}

func TestHaproxyNotes(t *testing.T) {
	f := filepath.Join(t.TempDir(), "haproxy.log")
	log := `[NOTICE]   (19448) : Reloading HAProxy
tlsconn 40000 TLSv1.3 TLS_AES_256_GCM_SHA384
[WARNING]  (19448) : Former worker (19464) exited with code 0 (Exit)
[NOTICE]   (19448) : Reloading HAProxy
[WARNING]  (19448) : Former worker (19762) exited with code 139 (Segmentation fault)
[ALERT]    (19448) : Current worker (19868) exited with code 143 (Terminated)
`
	if err := os.WriteFile(f, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	got := haproxyNotes(f)
	want := []string{"its master's log: 2 reloads begun",
		"1 old workers did not exit cleanly: Former worker (19762) exited with code 139 (Segmentation fault)"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("haproxyNotes:\n got %q\nwant %q", got, want)
	}
}
