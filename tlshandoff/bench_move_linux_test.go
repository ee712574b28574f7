//go:build linux

package tlshandoff

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/internal/fields"
)

// What moving one connection costs, in one process standing for both:
// the old process's side (park, dup, frame, sendmsg, close its copy) and
// the new one's (recvmsg, the fd made a net.Conn, tracked, resumed), per
// connection, for a plain TCP connection and for TLS ones. The TLS cost
// is the plain one plus Park's MarshalState, the state's bytes in the
// frame, and Server.Resume.
//
// handoff/internal/wire is out of this package's reach, so benchChannel
// is a minimal equivalent of what handoff/link.go (sendBatch) and
// handoff/inbox.go (adoptBatch, wait) do per connection, step for step:
//
//	old: the unread bytes copied (handoff.Conn.Park), MarshalState under
//	     the reader's and writer's locks (Conn.Park), the fd duplicated
//	     with F_DUPFD_CLOEXEC under SyscallConn().Control, the record
//	     (id, kind, unread, state) appended to a CONNS-like frame cut at
//	     253 connections (SCM_MAX_FD, as wire.MaxFdsPerMsg), sent in
//	     packets of at most 60 KiB on a SOCK_SEQPACKET socketpair with
//	     the fds on the first, the duplicates closed; once the new side
//	     has acknowledged the frame, the state cleared and the keys
//	     forgotten (Conn.Park), and the old copy closed.
//	new: the packets received (MSG_CMSG_CLOEXEC, as net does), the frame
//	     decoded, each fd made a net.Conn (os.NewFile, net.FileConn, close:
//	     handoff's fdConn), one goroutine per connection with a 4 KiB
//	     read buffer touched and a 4 KiB stack frame (inbox.wait), a
//	     PROGRESS-like acknowledgement, then past the gate each
//	     goroutine tracks its connection (Upgrader.Wrap, then Unread of
//	     the bytes that came with it) and, for TLS, calls Server.Resume.
//
// Not measured, the same for both kinds: asking the handlers to park
// (a read deadline each, about 1 µs per connection, shared/LIMITS.md),
// and the HELLO/PLAN/COMMIT exchange, once per upgrade.
//
// The connections move back and forth between two sets of copies in the
// one process, so the benchmark holds a fixed number of fds whatever b.N.

// benchFdsPerFrame is the core's frame size at scale (wire.MaxFdsPerMsg).
const benchFdsPerFrame = 253

// benchUnread is the application data a connection has read from the
// network and not consumed when it moves: a plain one's in its
// handoff.Conn's buffer, a TLS one's decrypted and not yet read.
const benchUnread = 64

var (
	benchUpOnce sync.Once
	benchUp     *handoff.Upgrader
	benchUpErr  error
)

// benchUpgrader is the process's Upgrader, made once (handoff.New
// succeeds once per process): the one that tracks every connection moved,
// as the new process's does. It never upgrades.
func benchUpgrader(b *testing.B) *handoff.Upgrader {
	benchUpOnce.Do(func() {
		benchUp, benchUpErr = handoff.New(handoff.Options{NoSignal: true,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	})
	if benchUpErr != nil {
		b.Fatal(benchUpErr)
	}
	return benchUp
}

// movable is one connection of the benchmark, at its current copy.
type movable struct {
	hc     *handoff.Conn // tracked by the Upgrader
	tc     *Conn         // the TLS connection over hc; nil for plain TCP
	client benchClient   // the other end, for checking after the run
}

// benchClient is a connection's client end.
type benchClient interface {
	send(b *testing.B, p []byte)
	recv(b *testing.B, n int) []byte
	close()
}

// BenchmarkMove moves connections one frame of up to 253 at a time; an
// op is one connection. ns/op is wall time with both sides in one
// process (the new side's goroutines may run on the other core);
// cpu-ns/op is the process's CPU time; state-B is the TLS state
// MarshalState wrote, and wire-B the bytes each connection took in the
// frame. After the run, outside the timer, each connection still holds
// its 64 unread bytes and carries a message each way.
func BenchmarkMove(b *testing.B) {
	b.Run("plain", func(b *testing.B) { benchMove(b, nil) })
	for _, tc := range []struct {
		name           string
		version, suite uint16
	}{
		{"tls13-aes128gcm", tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256},
		{"tls13-chacha20", tls.VersionTLS13, tls.TLS_CHACHA20_POLY1305_SHA256},
		{"tls12-ecdhe-aes128gcm", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
	} {
		b.Run(tc.name, func(b *testing.B) { benchMove(b, &benchSuite{tc.version, tc.suite}) })
	}
}

type benchSuite struct{ version, suite uint16 }

func benchMove(b *testing.B, tlsSuite *benchSuite) {
	up := benchUpgrader(b)
	var srv *Server
	if tlsSuite != nil {
		var err error
		srv, err = NewServer(serverConfig(b), Options{Upgrader: up,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
	}
	conns := benchConns(b, up, srv, tlsSuite, min(b.N, benchFdsPerFrame))
	ch := newBenchChannel(b)
	var stateLen, wireBytes int
	cpu := startCPU()
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		k := min(len(conns), b.N-done)
		st, wb, err := ch.move(conns[:k], up, srv)
		if err != nil {
			b.Fatal(err)
		}
		stateLen, wireBytes, done = st, wireBytes+wb, done+k
	}
	b.StopTimer()
	cpu.report(b)
	if tlsSuite != nil {
		b.ReportMetric(float64(stateLen), "state-B")
	}
	b.ReportMetric(float64(wireBytes)/float64(b.N), "wire-B")
	for i, m := range conns {
		checkMoved(b, i, m)
	}
}

// checkMoved checks that a connection, moved, still has its unread bytes
// and carries a message each way.
func checkMoved(b *testing.B, i int, m *movable) {
	b.Helper()
	var rw io.ReadWriter = m.hc
	if m.tc != nil {
		rw = m.tc
		if st := m.tc.ConnectionState(); !st.HandshakeComplete {
			b.Fatalf("connection %d: resumed state says no handshake", i)
		}
	}
	got := make([]byte, benchUnread)
	if _, err := io.ReadFull(rw, got); err != nil || !bytes.Equal(got, benchRequest()[benchUnread:]) {
		b.Fatalf("connection %d after the moves: unread bytes %q, %v", i, got, err)
	}
	m.client.send(b, []byte("ping"))
	got = got[:4]
	if _, err := io.ReadFull(rw, got); err != nil || string(got) != "ping" {
		b.Fatalf("connection %d after the moves: read %q, %v", i, got, err)
	}
	if _, err := rw.Write([]byte("pong")); err != nil {
		b.Fatalf("connection %d after the moves: write: %v", i, err)
	}
	if got := m.client.recv(b, 4); string(got) != "pong" {
		b.Fatalf("connection %d after the moves: client read %q", i, got)
	}
}

// benchRequest is what each client sent before the moves: the server
// read the first half, and the second, benchUnread bytes, is unread.
func benchRequest() []byte {
	p := make([]byte, 2*benchUnread)
	for i := range p {
		p[i] = 'a' + byte(i%26)
	}
	return p
}

// benchConns opens n connections on loopback and brings each to the
// point it moves from: tracked by up, the request read halfway. For TLS,
// srv did the handshake with Go's client (TLS 1.3 ChaCha20: see
// toChaCha20).
func benchConns(b *testing.B, up *handoff.Upgrader, srv *Server, s *benchSuite, n int) []*movable {
	b.Helper()
	conns := make([]*movable, 0, n)
	b.Cleanup(func() {
		for _, m := range conns {
			m.client.close()
			if m.tc != nil {
				m.tc.Close()
			} else {
				m.hc.Close()
			}
		}
	})
	req := benchRequest()
	for range n {
		cc, raw := tcpPair(b)
		var m *movable
		if s == nil {
			m = &movable{hc: up.Wrap(raw, "tcp"), client: tcpClient{cc}}
		} else {
			m = tlsHandshake(b, srv, s, cc, raw)
		}
		conns = append(conns, m)
		m.client.send(b, req)
		var rw io.Reader = m.hc
		if m.tc != nil {
			rw = m.tc
		}
		got := make([]byte, len(req))
		if _, err := io.ReadFull(rw, got[:benchUnread]); err != nil {
			b.Fatal(err)
		}
		if m.tc == nil {
			// Read the rest and give it back, so that it is in the
			// handoff.Conn's buffer however the bytes came in.
			if _, err := io.ReadFull(rw, got[benchUnread:]); err != nil {
				b.Fatal(err)
			}
			m.hc.Unread(got[benchUnread:])
		} else if len(m.tc.r.plain) != benchUnread || len(m.tc.r.rbuf) != 0 {
			b.Fatalf("TLS connection holds %d bytes of plaintext and %d undecrypted, want %d and 0",
				len(m.tc.r.plain), len(m.tc.r.rbuf), benchUnread)
		}
	}
	return conns
}

// tlsHandshake does the handshake of cc (Go's client) and raw (srv) in
// suite s, and returns the server's connection, movable, and the
// client's end.
func tlsHandshake(b *testing.B, srv *Server, s *benchSuite, cc, raw net.Conn) *movable {
	b.Helper()
	cfg := clientConfig(b)
	cfg.MinVersion, cfg.MaxVersion = s.version, s.version
	if s.version == tls.VersionTLS12 {
		cfg.CipherSuites = []uint16{s.suite}
	}
	keys := &secretLog{m: map[string][]byte{}}
	cfg.KeyLogWriter = keys
	client := tls.Client(cc, cfg)
	errc := make(chan error, 1)
	go func() { errc <- client.Handshake() }()
	c := srv.Server(raw)
	err := c.Handshake()
	if cerr := <-errc; err != nil || cerr != nil {
		b.Fatalf("handshake: server %v, client %v", err, cerr)
	}
	if ok, why := c.Movable(); !ok {
		b.Fatalf("connection cannot move: %s", why)
	}
	hc, ok := c.raw.(*handoff.Conn)
	if !ok {
		b.Fatalf("transport %T, not tracked by the Upgrader", c.raw)
	}
	m := &movable{hc: hc, tc: c, client: tlsClient{client}}
	if s.version == tls.VersionTLS13 && s.suite == tls.TLS_CHACHA20_POLY1305_SHA256 {
		m.client = toChaCha20(b, c, cc, keys)
	}
	if got := c.ConnectionState().CipherSuite; got != s.suite {
		b.Fatalf("suite %s, want %s", tls.CipherSuiteName(got), tls.CipherSuiteName(s.suite))
	}
	return m
}

// toChaCha20 puts a TLS 1.3 connection that Go negotiated with
// AES-128-GCM (Go's server picks ChaCha20 only for a client without AES
// hardware, and Go's client cannot be told to be one) on
// TLS_CHACHA20_POLY1305_SHA256, which has the same hash and so the same
// traffic secrets: the server's state is then exactly a ChaCha20
// connection's, and the client's end becomes this package's record
// layer (as peer_test.go's), keyed from Go's client's key log.
func toChaCha20(b *testing.B, c *Conn, cc net.Conn, keys *secretLog) benchClient {
	b.Helper()
	s := lookupSuite(tls.VersionTLS13, tls.TLS_CHACHA20_POLY1305_SHA256)
	if c.r.in.seq != 0 || c.w.out.seq != 0 || !bytes.Equal(c.r.in.secret, keys.m[labelClientTraffic]) {
		b.Fatal("the server's read secret is not the client's write secret, or records went already")
	}
	var err error
	mustHalf := func(secret []byte) *half {
		var h *half
		if h, err = newHalf13(s, secret, 0); err != nil {
			b.Fatal(err)
		}
		return h
	}
	c.r.in, c.w.out = mustHalf(c.r.in.secret), mustHalf(c.w.out.secret)
	c.state.CipherSuite = tls.TLS_CHACHA20_POLY1305_SHA256
	return peerClient{&peer{t: b, conn: cc, out: mustHalf(keys.m[labelClientTraffic]), in: mustHalf(keys.m[labelServerTraffic])}}
}

type tcpClient struct{ net.Conn }

func (c tcpClient) send(b *testing.B, p []byte) {
	if _, err := c.Write(p); err != nil {
		b.Fatal(err)
	}
}

func (c tcpClient) recv(b *testing.B, n int) []byte {
	p := make([]byte, n)
	if _, err := io.ReadFull(c, p); err != nil {
		b.Fatal(err)
	}
	return p
}

func (c tcpClient) close() { c.Close() }

type tlsClient struct{ *tls.Conn }

func (c tlsClient) send(b *testing.B, p []byte) { tcpClient{c.Conn}.send(b, p) }

func (c tlsClient) recv(b *testing.B, n int) []byte { return tcpClient{c.Conn}.recv(b, n) }

func (c tlsClient) close() { c.Close() }

// peerClient is a TLS 1.3 client's end run by this package's record
// layer (peer_test.go's peer).
type peerClient struct{ *peer }

func (c peerClient) send(_ *testing.B, p []byte) { c.peer.send(typeApplicationData, p, nil) }

func (c peerClient) recv(_ *testing.B, n int) []byte {
	var got []byte
	for len(got) < n {
		typ, plain := c.peer.recv()
		if typ != typeApplicationData {
			c.t.Fatalf("server record of type %d, want application data", typ)
		}
		got = append(got, plain...)
	}
	return got
}

func (c peerClient) close() { c.conn.Close() }

// benchChannel is the two ends of a handoff channel, a SOCK_SEQPACKET
// socketpair as the core's, with the buffers wire.Channel keeps.
type benchChannel struct {
	old, new *net.UnixConn
	out, pkt []byte // a packet being sent, received
	oob      []byte
	seq      uint32
	nextID   uint64
}

const (
	benchPacketHeader = 8        // wire's headerLen
	benchPacketData   = 60 << 10 // wire's maxPacketData
	benchFlagMore     = 1
)

func newBenchChannel(b *testing.B) *benchChannel {
	b.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(os.NewSyscallError("socketpair", err))
	}
	end := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "channel")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			b.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	ch := &benchChannel{old: end(fds[0]), new: end(fds[1]),
		out: make([]byte, benchPacketHeader+benchPacketData), pkt: make([]byte, benchPacketHeader+benchPacketData),
		oob: make([]byte, unix.CmsgSpace(benchFdsPerFrame*4))}
	b.Cleanup(func() { ch.old.Close(); ch.new.Close() })
	return ch
}

// move moves conns, at most benchFdsPerFrame, in one frame, and puts the
// new copies in their place. It returns the TLS state's length (of the
// last) and the frame's bytes.
func (ch *benchChannel) move(conns []*movable, up *handoff.Upgrader, srv *Server) (stateLen, frameLen int, err error) {
	// The old process: each connection parks (Park copies its unread
	// bytes; tlshandoff's Park marshals its state under both locks and
	// holds them until the outcome), and sendBatch dups each fd.
	type parkedBench struct {
		hc    *handoff.Conn
		tc    *Conn
		state []byte
	}
	parked := make([]parkedBench, len(conns))
	var frame []byte
	frame = binary.BigEndian.AppendUint32(frame, ch.seq)
	frame = binary.BigEndian.AppendUint16(frame, uint16(len(conns)))
	var fds []int
	for i, m := range conns {
		unread := takeBuffered(m.hc)
		p := parkedBench{hc: m.hc, tc: m.tc}
		if m.tc != nil {
			m.tc.r.mu.Lock()
			m.tc.w.mu.Lock()
			if p.state, err = m.tc.marshalLocked(nil); err != nil {
				return 0, 0, err
			}
			stateLen = len(p.state)
		}
		parked[i] = p
		fd, err := benchDup(m.hc.Conn)
		if err != nil {
			return 0, 0, err
		}
		fds = append(fds, fd)
		ch.nextID++
		frame = binary.BigEndian.AppendUint64(frame, ch.nextID)
		frame = appendStr16(frame, []byte(m.hc.Kind()))
		frame = appendB32(frame, unread)
		frame = appendB32(frame, p.state)
	}
	err = ch.send(frame, fds)
	for _, fd := range fds {
		unix.Close(fd)
	}
	if err != nil {
		return 0, 0, err
	}

	// The new process: the frame, each fd made a connection with its
	// goroutine waiting at the gate, and the acknowledgement.
	payload, rfds, err := ch.recv()
	if err != nil {
		return 0, 0, err
	}
	recs, err := decodeBenchFrame(payload, ch.seq, len(rfds))
	if err != nil {
		return 0, 0, err
	}
	ch.seq++
	gate := make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, len(recs))
	for i, rec := range recs {
		nc, err := benchFdConn(rfds[i])
		if err != nil {
			return 0, 0, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = benchTouched(4096)
			benchWaitDeep(gate)
			hc := up.Wrap(nc, rec.kind)
			if len(rec.unread) > 0 {
				hc.Unread(rec.unread)
			}
			m := &movable{hc: hc, client: conns[i].client}
			if srv != nil {
				if m.tc, _, errs[i] = srv.Resume(hc, rec.state); errs[i] != nil {
					return
				}
			}
			conns[i] = m
		}()
	}
	var progress [benchPacketHeader + 8]byte
	binary.BigEndian.PutUint32(progress[benchPacketHeader:], ch.seq-1)
	binary.BigEndian.PutUint32(progress[benchPacketHeader+4:], uint32(len(recs)))
	if _, _, err := ch.new.WriteMsgUnix(progress[:], nil, nil); err != nil {
		return 0, 0, err
	}

	// The old process, acknowledged: the connections are the new one's.
	if _, _, _, _, err := ch.old.ReadMsgUnix(progress[:], nil); err != nil {
		return 0, 0, err
	}
	for _, p := range parked {
		if p.tc != nil {
			clear(p.state)
			p.tc.forgetLocked()
			p.tc.w.mu.Unlock()
			p.tc.r.mu.Unlock()
		}
		p.hc.Close()
	}

	// The new process, committed: the handlers resume.
	close(gate)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return 0, 0, err
		}
	}
	return stateLen, len(frame), nil
}

// takeBuffered copies what hc has buffered and not consumed, as
// handoff.Conn.Park does, through the public API.
func takeBuffered(hc *handoff.Conn) []byte {
	n := hc.Buffered()
	if n == 0 {
		return nil
	}
	p := make([]byte, n)
	k, _ := hc.Read(p)
	return p[:k]
}

// send writes frame in packets of at most benchPacketData bytes, fds on
// the first (wire.Channel.Send).
func (ch *benchChannel) send(frame []byte, fds []int) error {
	oob := unix.UnixRights(fds...)
	for first := true; first || len(frame) > 0; first = false {
		n := min(len(frame), benchPacketData)
		pkt := ch.out[:benchPacketHeader+n]
		clear(pkt[:benchPacketHeader])
		pkt[0] = 3 // CONNS
		if n < len(frame) {
			pkt[1] = benchFlagMore
		}
		binary.BigEndian.PutUint32(pkt[4:], uint32(n))
		copy(pkt[benchPacketHeader:], frame[:n])
		if _, _, err := ch.old.WriteMsgUnix(pkt, oob, nil); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		frame, oob = frame[n:], nil
	}
	return nil
}

// recv reads one frame's packets (wire.Channel.Recv).
func (ch *benchChannel) recv() (payload []byte, fds []int, err error) {
	for {
		n, oobn, flags, _, err := ch.new.ReadMsgUnix(ch.pkt, ch.oob)
		if err != nil {
			return nil, fds, err
		}
		if flags&(unix.MSG_CTRUNC|unix.MSG_TRUNC) != 0 {
			return nil, fds, fmt.Errorf("receive: flags %#x", flags)
		}
		if oobn > 0 {
			msgs, err := unix.ParseSocketControlMessage(ch.oob[:oobn])
			if err != nil {
				return nil, fds, err
			}
			for _, m := range msgs {
				got, err := unix.ParseUnixRights(&m)
				if err != nil {
					return nil, fds, err
				}
				fds = append(fds, got...)
			}
		}
		size := int(binary.BigEndian.Uint32(ch.pkt[4:]))
		if n < benchPacketHeader || size != n-benchPacketHeader {
			return nil, fds, fmt.Errorf("packet of %d bytes says %d", n, size)
		}
		payload = append(payload, ch.pkt[benchPacketHeader:n]...)
		if ch.pkt[1]&benchFlagMore == 0 {
			return payload, fds, nil
		}
	}
}

type benchRecord struct {
	id            uint64
	kind          string
	unread, state []byte
}

// decodeBenchFrame decodes what move encodes, as wire's decodeRecords.
func decodeBenchFrame(p []byte, seq uint32, nfds int) ([]benchRecord, error) {
	d := &decoder{fields.NewReader(p, ErrState)}
	gotSeq := d.U32()
	n := int(d.U16())
	if d.Err() != nil || gotSeq != seq || n != nfds {
		return nil, fmt.Errorf("frame %d of %d records with %d fds, want frame %d: %v", gotSeq, n, nfds, seq, d.Err())
	}
	recs := make([]benchRecord, 0, n)
	for range n {
		r := benchRecord{id: d.U64(), kind: string(d.Take(int(d.U16())))}
		r.unread, r.state = d.b32(maxPending), d.b32(1<<20)
		recs = append(recs, r)
	}
	if d.Len() != 0 {
		d.Fail("%d bytes after the last record", d.Len())
	}
	return recs, d.Err()
}

func appendStr16(b, s []byte) []byte {
	return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...)
}

func appendB32(b, s []byte) []byte {
	return append(binary.BigEndian.AppendUint32(b, uint32(len(s))), s...)
}

// benchDup is handoff's dupConnFd.
func benchDup(c net.Conn) (int, error) {
	rc, err := c.(interface {
		SyscallConn() (syscall.RawConn, error)
	}).SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", derr)
}

// benchFdConn is handoff's fdConn.
func benchFdConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "handoff-conn")
	defer f.Close()
	return net.FileConn(f)
}

// benchTouched is handoff's touched: a read buffer with its pages mapped.
func benchTouched(n int) []byte {
	p := make([]byte, n)
	for i := 0; i < n; i += os.Getpagesize() {
		p[i] = 0
	}
	return p[:0]
}

// benchWaitDeep is handoff's waitDeep: the goroutine's stack grown to
// hold a 4 KiB frame before the gate opens.
//
//go:noinline
func benchWaitDeep(gate <-chan struct{}) byte {
	var pad [4 << 10]byte
	pad[0] = 1
	<-gate
	return pad[0] + pad[len(pad)-1]
}

// cpuClock measures the process's CPU time (every thread: both sides,
// the runtime and the collector) over the timed part of a benchmark.
type cpuClock struct {
	total, since time.Duration
	running      bool
}

func startCPU() *cpuClock { return &cpuClock{since: processCPU(), running: true} }

func (c *cpuClock) stop() {
	if c.running {
		c.total += processCPU() - c.since
		c.running = false
	}
}

func (c *cpuClock) start() {
	if !c.running {
		c.since, c.running = processCPU(), true
	}
}

func (c *cpuClock) report(b *testing.B) {
	c.stop()
	b.ReportMetric(float64(c.total.Nanoseconds())/float64(b.N), "cpu-ns/op")
}

func processCPU() time.Duration { return clockCPU(unix.CLOCK_PROCESS_CPUTIME_ID) }

func clockCPU(id int32) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(id, &ts); err != nil {
		panic(os.NewSyscallError("clock_gettime", err))
	}
	return time.Duration(ts.Nano())
}
