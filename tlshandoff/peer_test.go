package tlshandoff

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"io"
	"net"
	"sync"
	"testing"
)

// peer is Go's TLS client after its handshake, taken over by the test:
// its traffic secrets come from its KeyLogWriter, and the test writes
// and reads records on its TCP connection itself, with this package's
// sealing, to send what Go's client never sends (KeyUpdate, a fatal
// alert, an unsupported message, a tampered record). TLS 1.3 only: the
// key log says TLS 1.2's master secret but not the randoms.
type peer struct {
	t       testing.TB
	conn    net.Conn
	out, in *half
	rbuf    []byte
}

type secretLog struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (l *secretLog) Write(line []byte) (int, error) {
	f := bytes.Fields(line)
	if len(f) == 3 {
		s, _ := hex.DecodeString(string(f[2]))
		l.mu.Lock()
		l.m[string(f[0])] = s
		l.mu.Unlock()
	}
	return len(line), nil
}

// dialPeer handshakes with Go's client (TLS 1.3, no tickets: nothing is
// under the application keys yet) and takes its connection over.
func dialPeer(t *testing.T, addr net.Addr) *peer {
	t.Helper()
	tcp, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcp.Close() })
	log := &secretLog{m: map[string][]byte{}}
	cfg := goClient(t, tls.VersionTLS13, 0)
	cfg.KeyLogWriter = log
	tc := tls.Client(tcp, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	s := lookupSuite(tls.VersionTLS13, tc.ConnectionState().CipherSuite)
	out, err := newHalf13(s, log.m[labelClientTraffic], 0)
	if err != nil {
		t.Fatal(err)
	}
	in, err := newHalf13(s, log.m[labelServerTraffic], 0)
	if err != nil {
		t.Fatal(err)
	}
	return &peer{t: t, conn: tcp, out: out, in: in}
}

// send seals one record of typ and writes it; tamper, if set, changes
// the sealed record before it goes.
func (p *peer) send(typ byte, payload []byte, tamper func([]byte)) {
	p.t.Helper()
	rec := p.out.seal(nil, typ, payload)
	if tamper != nil {
		tamper(rec)
	}
	if _, err := p.conn.Write(rec); err != nil {
		p.t.Fatal(err)
	}
}

// recv reads and opens the server's next record.
func (p *peer) recv() (byte, []byte) {
	p.t.Helper()
	for {
		if len(p.rbuf) >= headerLen {
			n, err := recordLen(p.rbuf)
			if err != nil {
				p.t.Fatal(err)
			}
			if len(p.rbuf) >= n {
				rec := p.rbuf[:n]
				p.rbuf = p.rbuf[n:]
				typ, plain, err := p.in.open(rec)
				if err != nil {
					p.t.Fatalf("server record: %v", err)
				}
				return typ, plain
			}
		}
		var buf [4096]byte
		n, err := p.conn.Read(buf[:])
		if n == 0 && err != nil {
			p.t.Fatalf("read from server: %v", err)
		}
		p.rbuf = append(p.rbuf, buf[:n]...)
	}
}

// expectAlert reads the server's next record and checks it is the fatal
// alert desc, and that the server then closes the connection.
func (p *peer) expectAlert(desc byte) {
	p.t.Helper()
	typ, plain := p.recv()
	if typ != typeAlert || !bytes.Equal(plain, []byte{alertLevelFatal, desc}) {
		p.t.Fatalf("got record type %d % x, want fatal alert %d", typ, plain, desc)
	}
	if n, err := p.conn.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		p.t.Fatalf("after the alert: %d bytes, %v; want the server's close", n, err)
	}
}

// echoErr echoes, then reports the error that ended its reads.
func echoErr(ch chan<- error) func(*Conn) {
	return func(c *Conn) {
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if err != nil {
				ch <- err
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				ch <- err
				return
			}
		}
	}
}

// expectEcho reads application data from the server until it has msg.
func (p *peer) expectEcho(msg []byte) {
	p.t.Helper()
	var got []byte
	for len(got) < len(msg) {
		typ, plain := p.recv()
		if typ != typeApplicationData {
			p.t.Fatalf("record of type %d, want application data", typ)
		}
		got = append(got, plain...)
	}
	if !bytes.Equal(got, msg) {
		p.t.Fatalf("echo differs")
	}
}
