//go:build linux

package tlshandoff

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testtool"
)

// needTool returns the path of a client tool (testtool.Need).
func needTool(t *testing.T, name string) string {
	t.Helper()
	return testtool.Need(t, name, "apt-get install openssl curl python3")
}

// lineProc is a client program that sends each line of its stdin to the
// echo server over one TLS connection and prints what comes back.
type lineProc struct {
	t   *testing.T
	in  io.WriteCloser
	out *bufio.Reader
}

func startLineProc(t *testing.T, name string, args ...string) *lineProc {
	t.Helper()
	cmd := exec.Command(name, args...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout // s_client says what it did on stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// A deadline on the pipe, so that an answer that never comes fails
	// the test with what came instead rather than hang it.
	out.(*os.File).SetReadDeadline(time.Now().Add(2 * time.Minute))
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return &lineProc{t: t, in: in, out: bufio.NewReader(out)}
}

// send writes a line to the program, for the server or, with openssl, a
// command for s_client itself.
func (p *lineProc) send(line string) {
	p.t.Helper()
	if _, err := io.WriteString(p.in, line+"\n"); err != nil {
		p.t.Fatal(err)
	}
}

// command sends s_client one of its commands and waits until it says it
// ran it (it prints said): s_client reads its stdin in blocks and takes a
// block beginning with a command letter for that command alone, so a line
// sent too soon after would be lost.
func (p *lineProc) command(cmd, said string) {
	p.t.Helper()
	p.send(cmd)
	for {
		got, err := p.out.ReadString('\n')
		if err != nil {
			p.t.Fatalf("waiting for s_client to say %q: %v", said, err)
		}
		if strings.TrimSpace(got) == said {
			return
		}
	}
}

// ask sends line and returns the pid that answered it, skipping the other
// lines the program prints (openssl's own). The program's output ends if
// the connection does: a read error fails the test.
func (p *lineProc) ask(line string) int {
	p.t.Helper()
	p.send(line)
	for {
		got, err := p.out.ReadString('\n')
		if err != nil {
			p.t.Fatalf("waiting for the answer to %q: %q, %v", line, got, err)
		}
		pid, echoed, _ := strings.Cut(strings.TrimRight(got, "\r\n"), " ")
		if n, err := strconv.Atoi(pid); err == nil && echoed == line {
			return n
		}
	}
}

// moveThrough keeps ask answered across 10 upgrades, each answer from the
// process that serves; between upgrades, between(i) acts on the
// connection. The servers count one handshake.
func (h *chain) moveThrough(ask func(string) int, between func(i int)) {
	h.t.Helper()
	for i := range 10 {
		if pid := ask("before " + strconv.Itoa(i)); pid != h.pid {
			h.t.Fatalf("answered by %d, want %d", pid, h.pid)
		}
		if between != nil {
			between(i)
		}
		h.exited(h.upgrade())
		if pid := ask("after " + strconv.Itoa(i)); pid != h.pid {
			h.t.Fatalf("upgrade %d: answered by %d, want %d", i, pid, h.pid)
		}
	}
	if n := h.count("handshake"); n != 1 {
		h.t.Fatalf("%d handshakes, want 1", n)
	}
}

// opensslSuites are s_client's options for each suite this package
// moves, by the suite's IANA name.
var opensslSuites = map[string][]string{
	"TLS_AES_128_GCM_SHA256":                        {"-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"},
	"TLS_AES_256_GCM_SHA384":                        {"-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"},
	"TLS_CHACHA20_POLY1305_SHA256":                  {"-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"},
	"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256":         {"-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"},
	"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256":       {"-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"},
	"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384":         {"-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"},
	"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384":       {"-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"},
	"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256":   {"-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305"},
	"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": {"-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"},
}

// startSClient connects openssl s_client to the chain with opts. Its
// interactive commands stay on: a line "K" sends a KeyUpdate asking the
// server for one, "k" one that does not, "R" a renegotiation.
func (h *chain) startSClient(opts ...string) *lineProc {
	h.t.Helper()
	bin := needTool(h.t, "openssl")
	args := append([]string{"s_client", "-connect", h.addr, "-CAfile", caFile(h.t), "-verify_return_error", "-brief"}, opts...)
	return startLineProc(h.t, bin, args...)
}

// TestOpenSSLClient: openssl s_client keeps one TLS connection across 10
// upgrades on every suite this package moves; on TLS 1.3 it sends
// KeyUpdates (requesting the server's, and not) before and after
// upgrades, and the data goes on both ways.
func TestOpenSSLClient(t *testing.T) {
	for name, opts := range opensslSuites {
		t.Run(name, func(t *testing.T) {
			h := startChain(t)
			p := h.startSClient(opts...)
			tls13 := opts[0] == "-tls1_3"
			p.ask("hello")
			if ev := h.await("handshake", nil); ev[4] != name {
				t.Fatalf("negotiated %s", ev[4])
			}
			h.moveThrough(p.ask, func(i int) {
				if tls13 && i%3 == 0 {
					p.command("K", "KEYUPDATE")
					p.ask("after K")
					p.command("k", "KEYUPDATE")
				}
			})
		})
	}
}

// TestOpenSSLRenegotiation: a TLS 1.2 client's renegotiation, after a
// move, is refused as crypto/tls refuses it, and the connection ends with
// ErrRenegotiation's error rather than hang.
func TestOpenSSLRenegotiation(t *testing.T) {
	h := startChain(t)
	p := h.startSClient(opensslSuites["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]...)
	p.ask("hello")
	h.exited(h.upgrade())
	p.ask("moved")
	p.command("R", "RENEGOTIATING")
	ev := h.await("ended", nil)
	if !strings.Contains(strings.Join(ev, " "), "renegotiation") {
		t.Fatalf("the connection ended with %q", ev)
	}
}

// pythonClient sends stdin's lines over Python's ssl and prints the
// answers; its arguments: port, CA file, TLS version (1.2 or 1.3), and an
// OpenSSL cipher string for TLS 1.2.
const pythonClient = `
import socket, ssl, sys
port, ca, version, ciphers = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
ctx.minimum_version = ctx.maximum_version = v
if ciphers:
    ctx.set_ciphers(ciphers)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
f = s.makefile("rwb", buffering=0)
for line in sys.stdin:
    f.write(line.encode())
    sys.stdout.write(f.readline().decode())
    sys.stdout.flush()
`

// TestPythonClient: Python's ssl keeps one TLS connection across 10
// upgrades on every suite this package moves. Its ssl module cannot
// choose a TLS 1.3 suite; OpenSSL's configuration (OPENSSL_CONF) does.
func TestPythonClient(t *testing.T) {
	for name, opts := range opensslSuites {
		version, ciphers := "1.2", opts[2]
		if opts[0] == "-tls1_3" {
			version, ciphers = "1.3", ""
		}
		t.Run(name, func(t *testing.T) {
			bin := needTool(t, "python3")
			if version == "1.3" {
				t.Setenv("OPENSSL_CONF", tls13Conf(t, opts[2]))
			}
			h := startChain(t)
			_, port, _ := net.SplitHostPort(h.addr)
			p := startLineProc(t, bin, "-c", pythonClient, port, caFile(t), version, ciphers)
			h.moveThrough(p.ask, nil)
			h.requireSuite(name)
		})
	}
}

// tls13Conf writes an OpenSSL configuration that holds the clients that
// read it (OPENSSL_CONF) to one TLS 1.3 suite.
func tls13Conf(t *testing.T, suite string) string {
	path := filepath.Join(t.TempDir(), "openssl.cnf")
	conf := "openssl_conf = default_conf\n[default_conf]\nssl_conf = ssl_sect\n[ssl_sect]\n" +
		"system_default = tls_sect\n[tls_sect]\nCiphersuites = " + suite + "\n"
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// requireSuite checks that the chain's first handshake not yet looked at
// negotiated suite.
func (h *chain) requireSuite(suite string) {
	h.t.Helper()
	if ev := h.await("handshake", nil); ev[4] != suite {
		h.t.Fatalf("negotiated %s, want %s", ev[4], suite)
	}
}

// TestCurl: on every suite this package moves, curl (OpenSSL) fetches 10
// URLs and a last one over one TLS connection, and each GET /upgrade moves it to a new process before the
// next request: each answer comes from the next process, curl connects
// once, the servers count one handshake.
func TestCurl(t *testing.T) {
	for name, sopts := range opensslSuites {
		opts := []string{"--tlsv1.2", "--tls-max", "1.2", "--ciphers", sopts[2]}
		if sopts[0] == "-tls1_3" {
			opts = []string{"--tlsv1.3", "--tls13-ciphers", sopts[2]}
		}
		t.Run(name, func(t *testing.T) {
			bin := needTool(t, "curl")
			h := startChain(t)
			args := append([]string{"-sS", "--cacert", caFile(t), "-w", " connects=%{num_connects}\n"}, opts...)
			for range 10 {
				args = append(args, "https://"+h.addr+"/upgrade")
			}
			args = append(args, "https://"+h.addr+"/")
			cmd := exec.Command(bin, args...)
			cmd.Stderr = os.Stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("curl: %v; output %q", err, out)
			}
			checkCurl(t, h, string(out))
			h.requireSuite(name)
		})
	}
}

// checkCurl reads curl's output, "<pid>\n connects=<n>\n" per URL: the
// first URL connects, the others reuse the connection, and each answer
// comes from a process later than the one before.
func checkCurl(t *testing.T, h *chain, out string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 22 {
		t.Fatalf("curl printed %q", out)
	}
	pid := h.pid
	for i := 0; i < len(lines); i += 2 {
		got, _ := strconv.Atoi(lines[i])
		connects := strings.TrimSpace(lines[i+1])
		want := "connects=0"
		if i == 0 {
			want = "connects=1"
		}
		if got != pid || connects != want {
			t.Fatalf("URL %d: answered by %d (%s), want %d (%s); output %q", i/2, got, connects, pid, want, out)
		}
		if i/2 < 10 {
			ev := h.await("ready", nil) // the process the next URL reaches
			pid, _ = strconv.Atoi(ev[1])
		}
	}
	if n := h.count("handshake"); n != 1 {
		t.Fatalf("%d handshakes, want 1", n)
	}
}
