package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/internal/testcert"
)

// tlsSetup is one TLS version's run: the self-signed pair every server
// serves, made at bench time, and the OpenSSL configuration that holds
// wrk, h2load and openssl s_client to the version (none of them has a
// flag for it: OPENSSL_CONF applies to every libssl client alike).
type tlsSetup struct {
	version   string // "1.3" or "1.2"
	cert, key string // PEM files; cert is also the CA that verifying clients trust
	conf      string // OPENSSL_CONF file
}

// openSSLConf holds a client to one version: TLS 1.3 only, or TLS 1.2
// only with ECDHE-ECDSA AES-GCM (the certificate is ECDSA P-256).
var openSSLConf = map[string]string{
	"1.3": "MinProtocol = TLSv1.3\n",
	"1.2": "MaxProtocol = TLSv1.2\nCipherString = ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384\n",
}

// newTLSSetup writes the pair and the OpenSSL configuration for version
// into dir.
func newTLSSetup(dir, version string) (*tlsSetup, error) {
	rule, ok := openSSLConf[version]
	if !ok {
		return nil, fmt.Errorf("-tls %q: want 1.3 or 1.2", version)
	}
	cert, key, err := testcert.Write(dir)
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "openssl-tls"+version+".cnf")
	text := "openssl_conf = default_conf\n[default_conf]\nssl_conf = ssl_sect\n[ssl_sect]\n" +
		"system_default = tls_sect\n[tls_sect]\n" + rule
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, err
	}
	return &tlsSetup{version: version, cert: cert, key: key, conf: conf}, nil
}

// env is a libssl client's environment under this setup.
func (t *tlsSetup) env() []string {
	if t == nil {
		return os.Environ()
	}
	return append(os.Environ(), "OPENSSL_CONF="+t.conf)
}

// client is the Go client that waits for a server: it verifies the
// server's certificate against the pair.
func (t *tlsSetup) client() (*http.Client, error) {
	tr := &http.Transport{DisableKeepAlives: true}
	if t != nil {
		pool, err := testcert.Pool(t.cert)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	return &http.Client{Timeout: time.Second, Transport: tr}, nil
}

// negotiated is what OpenSSL's client settles on with the server on port
// under this setup, as wrk and h2load would: "TLSv1.2
// ECDHE-ECDSA-AES128-GCM-SHA256". One more handshake: take it after the
// server's count.
func (t *tlsSetup) negotiated(port int) string {
	cmd := exec.Command("openssl", "s_client", "-brief", "-connect", fmt.Sprintf("127.0.0.1:%d", port),
		"-CAfile", t.cert, "-verify_return_error")
	cmd.Env = t.env()
	cmd.Stdin = bytes.NewReader(nil)
	out, err := cmd.CombinedOutput()
	if s := parseBrief(string(out)); s != "" {
		return s
	}
	return fmt.Sprintf("openssl s_client: %v: %s", err, oneLine(string(out)))
}

// parseBrief reads openssl s_client -brief's protocol and cipher lines.
func parseBrief(out string) string {
	var proto, suite string
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(l, ":")
		switch k = strings.TrimSpace(k); {
		case !ok:
		case k == "Protocol version":
			proto = strings.TrimSpace(v)
		case k == "Ciphersuite":
			suite = strings.TrimSpace(v)
		}
	}
	if proto == "" || suite == "" {
		return ""
	}
	return proto + " " + suite
}

// sumMetric sums the samples of metric (every label set) in a Prometheus
// text exposition; found says whether there was one.
func sumMetric(text, metric string) (sum float64, found bool, err error) {
	for _, l := range strings.Split(text, "\n") {
		name, value, ok := strings.Cut(l, " ")
		if name, _, _ = strings.Cut(name, "{"); !ok || name != metric {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return 0, false, fmt.Errorf("metrics: %q: %w", l, err)
		}
		sum, found = sum+v, true
	}
	return sum, found, nil
}

// countLines counts the lines of file that begin with prefix.
func countLines(file, prefix string) (int64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n, nil
}
