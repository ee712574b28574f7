//go:build linux

package tlshandoff

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkHandshake is what a client dropped at an upgrade costs when it
// comes back: a TLS 1.3 handshake with this package's Server, X25519
// only, over loopback, on connections already made (TCP's own handshake
// is outside the timer). full: no ticket (the client asks for one, as
// browsers do, and the server's ticket is in its cost); resumed: with the
// ticket of an earlier connection (psk_dhe_ke, a new X25519 exchange, no
// certificate). An op is one handshake: ns/op is its wall time, both
// ends in this process, cpu-ns/op the process's CPU time (both ends,
// the runtime, the collector), server-cpu-ns/op the server goroutine's
// own thread's, locked for that. After the run, outside the timer, every
// handshake is checked to have resumed or not as named, every server
// connection to be movable, and the last one carries a message each way.
func BenchmarkHandshake(b *testing.B) {
	ec, rsa, _ := certs(b)
	for _, tc := range []struct {
		name    string
		cert    tls.Certificate
		resumed bool
	}{
		{"tls13-ecdsa-p256-x25519/full", ec, false},
		{"tls13-rsa2048-x25519/full", rsa, false},
		{"tls13-ecdsa-p256-x25519/resumed", ec, true},
	} {
		b.Run(tc.name, func(b *testing.B) { benchHandshake(b, tc.cert, tc.resumed) })
	}
}

// handshakeBatch is how many TCP connections are made, off the timer,
// for the handshakes that follow.
const handshakeBatch = 64

func benchHandshake(b *testing.B, cert tls.Certificate, resumed bool) {
	srv, err := NewServer(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
		CurvePreferences: []tls.CurveID{tls.X25519}}, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	cfg := clientConfig(b)
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
	cfg.CurvePreferences = []tls.CurveID{tls.X25519}
	cfg.ClientSessionCache = noTickets{}
	if resumed {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	}
	hs := startHandshaker(srv)
	defer close(hs.in)
	var open []net.Conn
	closeAll := func() {
		for _, c := range open {
			c.Close()
		}
		open = open[:0]
	}
	defer closeAll()
	pairs := func(n int) (clients, servers []net.Conn) {
		for range n {
			cc, sc := tcpPair(b)
			clients, servers = append(clients, cc), append(servers, sc)
			open = append(open, cc, sc)
		}
		return clients, servers
	}
	if resumed { // the ticket: a full handshake, and a read for the ticket
		cs, ss := pairs(1)
		hs.in <- ss[0]
		client := tls.Client(cs[0], cfg)
		if err := client.Handshake(); err != nil {
			b.Fatal(err)
		}
		r := <-hs.out
		if r.err != nil {
			b.Fatal(r.err)
		}
		open = append(open, r.c)
		roundTripTLS(b, client, r.c)
		closeAll()
	}

	var serverCPU time.Duration
	var didResume, handshakes int
	var last *tls.Conn
	var lastServer *Conn
	cpu := startCPU()
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		b.StopTimer()
		cpu.stop()
		closeAll()
		cs, ss := pairs(min(handshakeBatch, b.N-done))
		cpu.start()
		b.StartTimer()
		for i := range cs {
			hs.in <- ss[i]
			client := tls.Client(cs[i], cfg)
			cerr := client.Handshake()
			r := <-hs.out
			if cerr != nil || r.err != nil {
				b.Fatalf("handshake: client %v, server %v", cerr, r.err)
			}
			serverCPU += r.cpu
			open = append(open, r.c)
			if client.ConnectionState().DidResume {
				didResume++
			}
			if ok, _ := r.c.Movable(); ok {
				handshakes++
			}
			last, lastServer = client, r.c
		}
		done += len(cs)
	}
	b.StopTimer()
	cpu.report(b)
	b.ReportMetric(float64(serverCPU.Nanoseconds())/float64(b.N), "server-cpu-ns/op")
	if want := map[bool]int{true: b.N, false: 0}[resumed]; didResume != want {
		b.Fatalf("%d of %d handshakes resumed, want %d", didResume, b.N, want)
	}
	if handshakes != b.N {
		b.Fatalf("%d of %d server connections movable", handshakes, b.N)
	}
	roundTripTLS(b, last, lastServer)
}

// noTickets is a client session cache that keeps nothing: the client
// asks for tickets, as a browser does, and never resumes.
type noTickets struct{}

func (noTickets) Get(string) (*tls.ClientSessionState, bool) { return nil, false }
func (noTickets) Put(string, *tls.ClientSessionState)        {}

// roundTripTLS carries a message each way between client and server.
func roundTripTLS(b *testing.B, client *tls.Conn, server *Conn) {
	b.Helper()
	if _, err := client.Write([]byte("ping")); err != nil {
		b.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(server, got); err != nil || string(got) != "ping" {
		b.Fatalf("server read %q, %v", got, err)
	}
	if _, err := server.Write([]byte("pong")); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "pong" {
		b.Fatalf("client read %q, %v", got, err)
	}
}

// handshaker does server handshakes on one goroutine locked to its
// thread, so that the thread's CPU clock is the server's cost.
type handshaker struct {
	in  chan net.Conn
	out chan handshakeResult
}

type handshakeResult struct {
	c   *Conn
	err error
	cpu time.Duration
}

func startHandshaker(srv *Server) *handshaker {
	h := &handshaker{in: make(chan net.Conn), out: make(chan handshakeResult)}
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for raw := range h.in {
			start := clockCPU(unix.CLOCK_THREAD_CPUTIME_ID)
			c := srv.Server(raw)
			err := c.Handshake()
			h.out <- handshakeResult{c, err, clockCPU(unix.CLOCK_THREAD_CPUTIME_ID) - start}
		}
	}()
	return h
}
