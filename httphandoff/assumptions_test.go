package httphandoff

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a net.Conn that logs what net/http does with it, and can
// make its next Read fail as this package's conn does when it leaves.
type recorder struct {
	net.Conn
	mu     sync.Mutex
	log    []string
	leave  bool // Reads return a timeout from now on
	closed chan struct{}
	once   sync.Once
}

func (r *recorder) note(s string) {
	r.mu.Lock()
	r.log = append(r.log, s)
	r.mu.Unlock()
}

func (r *recorder) Read(p []byte) (int, error) {
	r.note("read " + strconv.Itoa(len(p)))
	n, err := r.Conn.Read(p)
	r.note("got " + strconv.Itoa(n))
	r.mu.Lock()
	leave := r.leave
	r.mu.Unlock()
	if leave { // as this package's conn leaves: nothing delivered
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	}
	return n, err
}

func (r *recorder) SetReadDeadline(t time.Time) error {
	r.note("deadline")
	return r.Conn.SetReadDeadline(t)
}

func (r *recorder) Write(p []byte) (int, error) {
	r.note("write")
	return r.Conn.Write(p)
}

func (r *recorder) Close() error {
	r.note("close")
	r.once.Do(func() { close(r.closed) }) // http.Server.Close may close it again
	return r.Conn.Close()
}

type oneConnListener struct {
	net.Listener
	conns chan *recorder
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	r := &recorder{Conn: c, closed: make(chan struct{})}
	l.conns <- r
	return r, nil
}

// TestNetHTTPAssumptions pins what this package relies on in net/http
// (Go 1.26), so that a Go whose net/http behaves otherwise fails here,
// loudly, rather than lose bytes in an upgrade:
//
//  1. After a response on a keep-alive connection, net/http reports
//     StateIdle and then reads with a buffer of exactly 4096 bytes when it
//     holds no bytes read ahead.
//  2. A new connection's first Read also asks for 4096 bytes, in StateNew.
//  3. A read timeout at either moment makes net/http close the connection
//     without writing anything.
func TestNetHTTPAssumptions(t *testing.T) {
	for _, fresh := range []bool{false, true} {
		name := "idle"
		if fresh {
			name = "fresh"
		}
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			l := &oneConnListener{Listener: ln, conns: make(chan *recorder, 1)}
			var states sync.Map
			srv := &http.Server{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
				ConnState: func(c net.Conn, st http.ConnState) {
					c.(*recorder).note("state " + st.String())
					states.Store(st, true)
				},
			}
			go srv.Serve(l)
			defer srv.Close()
			client, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			rec := <-l.conns
			if !fresh {
				io.WriteString(client, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(client), nil)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			want := "state idle"
			if fresh {
				want = "state new"
			}
			var logged []string
			deadline := time.Now().Add(20 * time.Second)
			for {
				rec.mu.Lock()
				logged = append([]string(nil), rec.log...)
				rec.mu.Unlock()
				if n := len(logged); n >= 2 && logged[n-1] == "read 4096" && contains(logged, want) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("net/http did not reach %q followed by a Read of 4096 bytes; it did: %q", want, logged)
				}
				time.Sleep(time.Millisecond)
			}
			rec.mu.Lock()
			rec.leave = true
			before := len(rec.log)
			rec.mu.Unlock()
			// Wake the blocked Read, as this package's conn does.
			rec.Conn.SetReadDeadline(time.Unix(1, 0))
			select {
			case <-rec.closed:
			case <-time.After(20 * time.Second):
				t.Fatal("net/http did not close the connection after a read timeout")
			}
			rec.mu.Lock()
			after := rec.log[before:]
			rec.mu.Unlock()
			if contains(after, "write") {
				t.Fatalf("net/http wrote to the connection after a read timeout at %s: %q", want, after)
			}
		})
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestNetHTTPCycle pins the order of ConnState hooks, read deadlines and
// Reads from which conn knows where net/http is (see phase), for a request
// head that arrives in two pieces, on a fresh connection and on one after
// a response, with and without a header timeout:
//
//	fresh: StateNew, a deadline if ReadHeaderTimeout, the head's Reads,
//	       a deadline (ReadTimeout) once the head is parsed, StateActive;
//	idle:  StateIdle, a deadline (the idle one), the Reads of Peek(4),
//	       a deadline (the header one), the head's Reads, a deadline
//	       (ReadTimeout) once the head is parsed, StateActive.
func TestNetHTTPCycle(t *testing.T) {
	for _, header := range []time.Duration{0, time.Minute} {
		for _, fresh := range []bool{true, false} {
			t.Run(fmt.Sprintf("fresh=%v/header=%v", fresh, header), func(t *testing.T) {
				netHTTPCycle(t, fresh, header)
			})
		}
	}
}

func netHTTPCycle(t *testing.T, fresh bool, header time.Duration) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &oneConnListener{Listener: ln, conns: make(chan *recorder, 1)}
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ReadHeaderTimeout: header,
		ConnState:         func(c net.Conn, st http.ConnState) { c.(*recorder).note("state " + st.String()) },
	}
	go srv.Serve(l)
	defer srv.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	br := bufio.NewReader(client)
	rec := <-l.conns
	response := func() {
		t.Helper()
		client.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if !fresh {
		io.WriteString(client, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		response()
	}
	// waitLog waits until net/http's last step is last, after want.
	waitLog := func(want, last string) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(time.Millisecond) {
			rec.mu.Lock()
			log := append([]string(nil), rec.log...)
			rec.mu.Unlock()
			if n := len(log); n > 0 && log[n-1] == last && contains(log, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("net/http did not reach %q after %q: %q", last, want, log)
			}
		}
	}
	// Once net/http waits for the request (its background read of the
	// last one could take a byte sent before), the first line, then the
	// rest once net/http has read it.
	if fresh {
		waitLog("state new", "read 4096")
	} else {
		waitLog("state idle", "read 4096")
	}
	io.WriteString(client, "GET / HTTP/1.1\r\n")
	waitLog("got 16", "read 4096")
	io.WriteString(client, "Host: t\r\n\r\n")
	response()
	rec.mu.Lock()
	log := append([]string(nil), rec.log...)
	rec.mu.Unlock()
	// One letter per step: n(ew), i(dle), a(ctive), d(eadline), r(ead that
	// returned bytes); reads that returned nothing, writes and other
	// states are left out.
	var steps strings.Builder
	for _, e := range log {
		switch {
		case e == "state new":
			steps.WriteByte('n')
		case e == "state idle":
			steps.WriteByte('i')
		case e == "state active":
			steps.WriteByte('a')
		case e == "deadline":
			steps.WriteByte('d')
		case strings.HasPrefix(e, "got ") && e != "got 0":
			steps.WriteByte('r')
		}
	}
	want := "^nd?rrda" // fresh: the head in two Reads
	if !fresh {
		want = "^nd?rda[^i]*idrdrda" // the first request whole, then the Peek's Read, the head's
	}
	if !regexp.MustCompile(want).MatchString(steps.String()) {
		t.Fatalf("net/http's steps %q do not match %q; its log: %q", steps.String(), want, log)
	}
}
