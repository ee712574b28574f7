package httphandoff

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
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
	r.mu.Lock()
	leave := r.leave
	r.mu.Unlock()
	if leave { // as this package's conn leaves: nothing delivered
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	}
	return n, err
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
			deadline := time.Now().Add(5 * time.Second)
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
			case <-time.After(5 * time.Second):
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
