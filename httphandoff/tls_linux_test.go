package httphandoff

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/handoff-dev/handoff/internal/testtool"
)

// needTool returns the path of a client tool (testtool.Need).
func needTool(t *testing.T, name string) string {
	t.Helper()
	return testtool.Need(t, name, "apt-get install curl nghttp2-client")
}

// httpsClient is Go's client on one keep-alive connection at most, over
// HTTP/1.1 (h2 off) or HTTP/2, counting its dials.
type httpsClient struct {
	*http.Client
	dials atomic.Int32
	port  atomic.Int32 // the local port of the last dial
}

func newHTTPSClient(pool *x509.CertPool, version uint16, h2 bool) *httpsClient {
	c := &httpsClient{}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: version, MaxVersion: version},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				c.dials.Add(1)
				c.port.Store(int32(nc.LocalAddr().(*net.TCPAddr).Port))
			}
			return nc, err
		},
	}
	if h2 {
		tr.ForceAttemptHTTP2 = true
	} else {
		tr.MaxConnsPerHost = 1
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // HTTP/1.1 only
	}
	c.Client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return c
}

// get returns the body's fields of GET url.
func (c *httpsClient) get(url string) ([]string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, errors.Join(err, errors.New(resp.Status))
	}
	return strings.Fields(string(b)), nil
}

// TestTLSKeepAlive: Go's client keeps one HTTP/1.1 connection over TLS
// 1.3 and over TLS 1.2 across 10 upgrades, in both modes; each request is
// answered by the process that serves, whose handler sees r.TLS as
// tls.Server's would (version, ALPN), before and after the moves; the
// servers count one handshake for it.
func TestTLSKeepAlive(t *testing.T) {
	for _, mode := range []string{"all-at-once", "rolling"} {
		for _, version := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
			t.Run(mode+" "+tls.VersionName(version), func(t *testing.T) {
				var env []string
				if mode == "rolling" {
					env = append(env, envRoll+"=1")
				}
				h, _, pool := startTLSChain(t, env...)
				c := newHTTPSClient(pool, version, false)
				want := tls.VersionName(version) + " http/1.1 HTTP/1.1"
				for i := range 11 {
					if i > 0 {
						h.upgrade()
					}
					f, err := c.get("https://" + h.addr + "/tls")
					if err != nil || f[0] != strconv.Itoa(h.pid) || strings.Join(f[1:], " ") != want {
						t.Fatalf("after %d upgrades: %q, %v; want %d %s", i, f, err, h.pid, want)
					}
				}
				if n := c.dials.Load(); n != 1 {
					t.Fatalf("the client dialled %d times", n)
				}
				if n := h.handshakes(int(c.port.Load())); n != 1 {
					t.Fatalf("%d handshakes for the one connection", n)
				}
			})
		}
	}
}

// TestTLSCurl: curl (OpenSSL) fetches 10 URLs and a last one over one
// HTTP/1.1 keep-alive TLS connection, on TLS 1.3 and 1.2; each GET
// /upgrade moves it to a new process before the next request. Each
// answer comes from the process that serves then, curl connects once
// from one port, and the servers count one handshake.
func TestTLSCurl(t *testing.T) {
	for _, opts := range [][]string{{"--tlsv1.3"}, {"--tlsv1.2", "--tls-max", "1.2"}} {
		t.Run(opts[0], func(t *testing.T) {
			bin := needTool(t, "curl")
			h, ca, _ := startTLSChain(t)
			args := append([]string{"-sS", "--http1.1", "--cacert", ca, "-w", "%{local_port} %{num_connects}\n"}, opts...)
			for range 10 {
				args = append(args, "https://localhost:"+port(h.addr)+"/upgrade")
			}
			args = append(args, "https://localhost:"+port(h.addr)+"/")
			cmd := exec.Command(bin, args...)
			cmd.Stderr = os.Stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("curl: %v; output %q", err, out)
			}
			checkCurl(t, h, string(out))
		})
	}
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// checkCurl reads curl's output, "<pid>\n<local port> <connects>\n" per
// URL: the first URL connects, the others reuse its connection, and each
// answer comes from the process after the one before.
func checkCurl(t *testing.T, h *chain, out string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 22 {
		t.Fatalf("curl printed %q", out)
	}
	pid, clientPort := h.pid, strings.Fields(lines[1])[0]
	for i := 0; i < len(lines); i += 2 {
		want := clientPort + " 0"
		if i == 0 {
			want = clientPort + " 1"
		}
		if lines[i] != strconv.Itoa(pid) || lines[i+1] != want {
			t.Fatalf("URL %d: %q %q, want %d %q; output %q", i/2, lines[i], lines[i+1], pid, want, out)
		}
		if i/2 < 10 {
			pid, _ = strconv.Atoi(h.await("ready")[1]) // the process the next URL reaches
		}
	}
	p, _ := strconv.Atoi(clientPort)
	if n := h.handshakes(p); n != 1 {
		t.Fatalf("%d handshakes, want 1", n)
	}
}

// h2Client is a raw HTTP/2 client connection, to see the frames.
type h2Client struct {
	t  *testing.T
	tc *tls.Conn
	fr *http2.Framer
}

func dialH2(t *testing.T, addr string, pool *x509.CertPool) *h2Client {
	t.Helper()
	tc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q", p)
	}
	c := &h2Client{t: t, tc: tc, fr: http2.NewFramer(tc, tc)}
	if _, err := io.WriteString(tc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c
}

// get opens stream id with GET path.
func (c *h2Client) get(id uint32, path string) {
	c.t.Helper()
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "localhost"}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: b.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		c.t.Fatal(err)
	}
}

// next returns the next frame that is not about the connection's
// settings, flow control or liveness (it acknowledges SETTINGS, or the
// server would close the connection, and answers PING, as RFC 9113
// requires of a client).
func (c *h2Client) next() http2.Frame {
	c.t.Helper()
	for {
		c.tc.SetReadDeadline(time.Now().Add(30 * time.Second))
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("read frame: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				c.fr.WritePing(true, f.Data)
			}
		case *http2.WindowUpdateFrame:
		default:
			return f
		}
	}
}

// TestH2GoAway: an HTTP/2 connection stays in the old process at an
// upgrade; after the commit it gets RFC 9113's two GOAWAYs (NO_ERROR:
// first with the last stream 2^31-1, then, once the client has answered
// the PING between them, naming the stream in flight as the last one),
// the stream in flight is answered by the old process, the connection
// closes, the old process exits once it has, and a new connection
// reaches the new process.
func TestH2GoAway(t *testing.T) {
	h, _, pool := startTLSChain(t)
	c := dialH2(t, h.addr, pool)
	release := h.fifo("h2")
	c.get(1, "/hold?name=h2")
	old := h.pid
	h.await("holding")
	h.hup()
	h.pid, _ = strconv.Atoi(h.await("ready")[1])
	ga, ok := c.next().(*http2.GoAwayFrame)
	if !ok || ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 1<<31-1 {
		t.Fatalf("got %v, want GOAWAY NO_ERROR with last stream 2^31-1", ga)
	}
	ga, ok = c.next().(*http2.GoAwayFrame) // next answered the PING
	if !ok || ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 1 {
		t.Fatalf("got %v, want GOAWAY NO_ERROR with last stream 1", ga)
	}
	release()
	if hf, ok := c.next().(*http2.HeadersFrame); !ok || hf.StreamID != 1 {
		t.Fatalf("got %v, want the response's HEADERS", hf)
	}
	df, ok := c.next().(*http2.DataFrame)
	if !ok || strings.TrimSpace(string(df.Data())) != strconv.Itoa(old) {
		t.Fatalf("got %v, want DATA from the old process %d", df, old)
	}
	c.tc.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		if _, err := c.fr.ReadFrame(); err != nil { // the server closes once the stream is done
			break
		}
	}
	h.await("exit")
	cl := newHTTPSClient(pool, tls.VersionTLS13, true)
	if f, err := cl.get("https://" + h.addr + "/tls"); err != nil || f[0] != strconv.Itoa(h.pid) || f[4] != "HTTP/2.0" {
		t.Fatalf("a new connection: %q, %v; want HTTP/2.0 from %d", f, err, h.pid)
	}
}

// TestH2AcrossUpgrades: Go's HTTP/2 client, with requests in flight all
// along (four loops of GET, and one request held across each upgrade),
// gets every response across 10 upgrades: GOAWAY sends its new requests
// to a new connection, to the new process, and the held ones are
// answered by the old process before it exits.
func TestH2AcrossUpgrades(t *testing.T) {
	h, _, pool := startTLSChain(t)
	c := newHTTPSClient(pool, tls.VersionTLS13, true)
	url := "https://" + h.addr
	var ok, failed atomic.Int64
	var errs sync.Map
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.get(url + "/"); err != nil {
					failed.Add(1)
					errs.Store(err.Error(), true)
				} else {
					ok.Add(1)
				}
			}
		})
	}
	for i := range 10 {
		old, name := h.pid, "h2-"+strconv.Itoa(i)
		release := h.fifo(name)
		held := make(chan []string, 1)
		go func() {
			f, err := c.get(url + "/hold?name=" + name)
			if err != nil {
				failed.Add(1)
				errs.Store(err.Error(), true)
			}
			held <- f
		}()
		h.awaitMatch("holding", func(f []string) bool { return f[2] == name })
		h.hup()
		h.pid, _ = strconv.Atoi(h.await("ready")[1])
		release()
		if f := <-held; len(f) == 0 || f[0] != strconv.Itoa(old) {
			t.Fatalf("upgrade %d: the held request got %q, want the old process %d", i, f, old)
		}
		h.await("exit")
	}
	close(stop)
	wg.Wait()
	errs.Range(func(k, _ any) bool { t.Errorf("error: %s", k); return true })
	t.Logf("%d requests answered, %d failed, %d connections", ok.Load(), failed.Load(), c.dials.Load())
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("%d requests failed, %d answered", failed.Load(), ok.Load())
	}
	if f, err := c.get(url + "/"); err != nil || f[0] != strconv.Itoa(h.pid) {
		t.Fatalf("after the upgrades: %q, %v; want %d", f, err, h.pid)
	}
}

// TestH2Linger: with HTTP2Linger, the old process goes on serving an
// HTTP/2 connection after the commit: a new stream is answered by it, and
// it exits once the client closes the connection; once the linger is
// over, the connection gets the two GOAWAYs and the old process exits.
func TestH2Linger(t *testing.T) {
	t.Run("client closes", func(t *testing.T) {
		h, _, pool := startTLSChain(t, envLinger+"=10m")
		c := dialH2(t, h.addr, pool)
		old := h.pid
		h.hup()
		h.pid, _ = strconv.Atoi(h.await("ready")[1])
		c.get(1, "/")
		if hf, ok := c.next().(*http2.HeadersFrame); !ok || hf.StreamID != 1 {
			t.Fatalf("got %v, want the response's HEADERS", hf)
		}
		df, ok := c.next().(*http2.DataFrame)
		if !ok || strings.TrimSpace(string(df.Data())) != strconv.Itoa(old) {
			t.Fatalf("got %v, want DATA from the old process %d", df, old)
		}
		c.tc.Close()
		h.await("exit")
	})
	t.Run("linger over", func(t *testing.T) {
		h, _, pool := startTLSChain(t, envLinger+"=1ms")
		c := dialH2(t, h.addr, pool)
		c.get(1, "/")
		if hf, ok := c.next().(*http2.HeadersFrame); !ok || hf.StreamID != 1 {
			t.Fatalf("got %v, want the response's HEADERS", hf)
		}
		c.next() // DATA
		h.hup()
		for _, last := range []uint32{1<<31 - 1, 1} {
			ga, ok := c.next().(*http2.GoAwayFrame)
			if !ok || ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != last {
				t.Fatalf("got %v, want GOAWAY NO_ERROR with last stream %d", ga, last)
			}
		}
		h.await("ready")
		h.await("exit")
	})
}

// TestH2LateStream: over the real TLS stack and across an upgrade, a
// client opens a new stream after the old process wrote its first
// GOAWAY (it is in the client's socket) but before the client read it:
// the final GOAWAY names that stream, and the old process answers it
// and the stream in flight before it, refusing none.
func TestH2LateStream(t *testing.T) {
	h, _, pool := startTLSChain(t)
	c := dialH2(t, h.addr, pool)
	c.sync()
	release := h.fifo("late")
	c.get(1, "/hold?name=late")
	old := h.pid
	h.await("holding")
	h.hup()
	h.pid, _ = strconv.Atoi(h.await("ready")[1])
	awaitUnread(t, c.tc.NetConn()) // the first GOAWAY, unread
	c.get(3, "/")
	ga, ok := c.next().(*http2.GoAwayFrame)
	if !ok || ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 1<<31-1 {
		t.Fatalf("got %v, want GOAWAY NO_ERROR with last stream 2^31-1", ga)
	}
	// Then, in any order: stream 3's answer, and the final GOAWAY (after
	// which stream 1 is let go).
	answered := map[uint32]string{}
	final := false
	for len(answered) < 2 || !final {
		switch f := c.next().(type) {
		case *http2.GoAwayFrame:
			if final || f.ErrCode != http2.ErrCodeNo || f.LastStreamID != 3 {
				t.Fatalf("got %v, want one GOAWAY NO_ERROR with last stream 3", f)
			}
			final = true
			release()
		case *http2.DataFrame:
			answered[f.StreamID] += strings.TrimSpace(string(f.Data()))
		case *http2.RSTStreamFrame:
			t.Fatalf("stream %d reset: %v", f.StreamID, f.ErrCode)
		}
	}
	if want := strconv.Itoa(old); answered[1] != want || answered[3] != want {
		t.Fatalf("answers %v, want both from the old process %d", answered, old)
	}
	h.await("exit")
}

// sync reads what the server sent so far (its SETTINGS and the like)
// and answers it, up to the ACK of a PING of ours: nothing is left
// unread.
func (c *h2Client) sync() {
	c.t.Helper()
	data := [8]byte{'s', 'y', 'n', 'c'}
	if err := c.fr.WritePing(false, data); err != nil {
		c.t.Fatal(err)
	}
	for {
		c.tc.SetReadDeadline(time.Now().Add(30 * time.Second))
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("read frame: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if f.IsAck() && f.Data == data {
				return
			}
		}
	}
}

// awaitUnread waits until bytes the client has not read are in nc's
// receive queue (/proc/net/tcp).
func awaitUnread(t *testing.T, nc net.Conn) {
	t.Helper()
	local := procAddr(nc.LocalAddr().(*net.TCPAddr))
	remote := procAddr(nc.RemoteAddr().(*net.TCPAddr))
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 4 && f[1] == local && f[2] == remote {
				if q := strings.SplitN(f[4], ":", 2); len(q) == 2 && strings.Trim(q[1], "0") != "" {
					return
				}
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("nothing came to %s in 30s", nc.LocalAddr())
}

// TestTLSHijackedConnection: a connection that a handler hijacked on the
// HTTPS server (a protocol of lines stands for a wss WebSocket) is
// parked by the application through TLSConn and tlshandoff.Conn.Park, and
// moves at each upgrade with its TLS session: every line is answered by
// the process that serves then, on the one TCP connection, after one TLS
// handshake. Package wshandoff's wss tests do the same with real
// WebSocket libraries.
func TestTLSHijackedConnection(t *testing.T) {
	h, _, pool := startTLSChain(t)
	tc, err := tls.Dial("tcp", h.addr, &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	r := bufio.NewReader(tc)
	io.WriteString(tc, "GET /ws HTTP/1.1\r\nHost: t\r\n\r\n")
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade to lines: %v %v", resp, err)
	}
	for u := 0; u <= 3; u++ {
		if u > 0 {
			h.upgrade()
		}
		line := fmt.Sprintf("line%d", u)
		if _, err := io.WriteString(tc, line+"\n"); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadString('\n')
		if want := fmt.Sprintf("%d %s\n", h.pid, line); err != nil || got != want {
			t.Fatalf("after %d upgrades: %q, %v; want %q", u, got, err, want)
		}
	}
	if n := h.handshakes(tc.LocalAddr().(*net.TCPAddr).Port); n != 1 {
		t.Fatalf("%d TLS handshakes for the one connection", n)
	}
}
