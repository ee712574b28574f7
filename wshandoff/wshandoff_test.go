//go:build linux

package wshandoff

import (
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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cws "github.com/coder/websocket"
	"github.com/gorilla/websocket"
)

// client is one WebSocket connection of the test, written with either
// library, never redialled.
type client interface {
	send(msg []byte) error
	// startFragmented begins a fragmented message: first goes out as
	// non-final frames; endFragmented sends rest and the final frame.
	startFragmented(first []byte) error
	endFragmented(rest []byte) error
	ping(payload string) (wait func() error, err error) // sends a ping; wait returns once its pong came
	close() error                                       // sends a close frame (1000)
	replies() <-chan []byte                             // data messages received, in order; closed at a read error
	readErr() error                                     // that error
	pongs() []string                                    // payloads of the pongs received, in order
	localPort() int
}

type pongLog struct {
	mu sync.Mutex
	p  []string
}

func (l *pongLog) add(s string) { l.mu.Lock(); l.p = append(l.p, s); l.mu.Unlock() }
func (l *pongLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.p...)
}

type gorillaClient struct {
	ws   *websocket.Conn
	out  chan []byte
	err  error
	pl   pongLog
	frag io.WriteCloser
}

func dialGorilla(addr string) (client, error) { return dialGorillaWith(nil, addr) }

// dialGorillaTLS returns a dial for wss, trusting pool.
func dialGorillaTLS(pool *x509.CertPool) func(addr string) (client, error) {
	return func(addr string) (client, error) { return dialGorillaWith(&tls.Config{RootCAs: pool}, addr) }
}

// dialGorillaWith dials ws, or wss with cfg.
func dialGorillaWith(cfg *tls.Config, addr string) (client, error) {
	d := websocket.Dialer{WriteBufferSize: 512, TLSClientConfig: cfg} // a message longer than 512 goes in fragments
	url := "ws://" + addr + "/ws"
	if cfg != nil {
		url = "wss://" + addr + "/ws"
	}
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		return nil, err
	}
	c := &gorillaClient{ws: ws, out: make(chan []byte, 16)}
	ws.SetPongHandler(func(s string) error { c.pl.add(s); return nil })
	go func() {
		defer close(c.out)
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				c.err = err
				return
			}
			c.out <- msg
		}
	}()
	return c, nil
}

func (c *gorillaClient) send(msg []byte) error { return c.ws.WriteMessage(websocket.TextMessage, msg) }
func (c *gorillaClient) startFragmented(first []byte) error {
	w, err := c.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return err
	}
	c.frag = w
	_, err = w.Write(first)
	return err
}
func (c *gorillaClient) endFragmented(rest []byte) error {
	if _, err := c.frag.Write(rest); err != nil {
		return err
	}
	return c.frag.Close()
}

// ping's wait has nothing to wait for: the server answers a ping before
// the message sent after it, and the reader handles the pong before it
// returns that message's reply.
func (c *gorillaClient) ping(p string) (func() error, error) {
	err := c.ws.WriteControl(websocket.PingMessage, []byte(p), time.Now().Add(10*time.Second))
	return func() error { return nil }, err
}
func (c *gorillaClient) close() error {
	return c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(10*time.Second))
}
func (c *gorillaClient) replies() <-chan []byte { return c.out }
func (c *gorillaClient) readErr() error         { return c.err }
func (c *gorillaClient) pongs() []string        { return c.pl.get() }
func (c *gorillaClient) localPort() int         { return port(c.ws.LocalAddr()) }

type coderClient struct {
	ws   *cws.Conn
	nc   net.Conn
	out  chan []byte
	err  error
	pl   pongLog
	frag io.WriteCloser
}

func dialCoder(addr string) (client, error) {
	c := &coderClient{out: make(chan []byte, 16)}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, network, a)
		c.nc = nc
		return nc, err
	}}
	ws, _, err := cws.Dial(context.Background(), "ws://"+addr+"/ws", &cws.DialOptions{
		HTTPClient:     &http.Client{Transport: tr},
		OnPongReceived: func(_ context.Context, p []byte) { c.pl.add(string(p)) },
	})
	if err != nil {
		return nil, err
	}
	c.ws = ws
	go func() {
		defer close(c.out)
		for {
			_, msg, err := ws.Read(context.Background())
			if err != nil {
				c.err = err
				return
			}
			c.out <- msg
		}
	}()
	return c, nil
}

func (c *coderClient) send(msg []byte) error {
	return c.ws.Write(context.Background(), cws.MessageText, msg)
}
func (c *coderClient) startFragmented(first []byte) error {
	w, err := c.ws.Writer(context.Background(), cws.MessageText)
	if err != nil {
		return err
	}
	c.frag = w
	_, err = w.Write(first)
	return err
}
func (c *coderClient) endFragmented(rest []byte) error {
	if _, err := c.frag.Write(rest); err != nil {
		return err
	}
	return c.frag.Close()
}

// ping: coder's Ping picks its own payload and returns once its pong came
// (its reader, running here, takes the pong), so it runs on; wait waits
// for it.
func (c *coderClient) ping(string) (func() error, error) {
	done := make(chan error, 1)
	go func() { done <- c.ws.Ping(context.Background()) }()
	return func() error { return <-done }, nil
}

// close writes a close frame itself, on the connection: coder's Close
// writes one and waits for the answer, which may only come from the
// next process, and the test needs the frame on its way before that
// process serves.
func (c *coderClient) close() error {
	payload := append([]byte{0x03, 0xe8}, "bye"...) // 1000
	frame := []byte{0x80 | opClose, 0x80 | byte(len(payload)), 0, 0, 0, 0}
	_, err := c.nc.Write(append(frame, payload...)) // mask key 0: the payload as is
	return err
}
func (c *coderClient) replies() <-chan []byte { return c.out }
func (c *coderClient) readErr() error         { return c.err }
func (c *coderClient) pongs() []string        { return c.pl.get() }
func (c *coderClient) localPort() int         { return port(c.nc.LocalAddr()) }

// TestGorillaKeepsConnections and TestCoderKeepsConnections: servers
// written with each library keep every connection across upgrades, each
// the same TCP connection with one handshake, every message answered
// exactly once, in order, with the count it carries; at each upgrade
// some connections are inside a fragmented message (the old process
// answers it whole, then lets the connection go), some send a ping and
// one a close frame while the upgrade runs (each ping gets one pong, the
// close frame is answered with one and the connection ends).
func TestGorillaKeepsConnections(t *testing.T) {
	n, u := scale(t)
	keepConnections(t, startChain(t, "gorilla"), dialGorilla, n, u)
}

func TestCoderKeepsConnections(t *testing.T) {
	n, u := scale(t)
	keepConnections(t, startChain(t, "coder"), dialCoder, n, u)
}

// TestGorillaKeepsWSS and TestCoderKeepsWSS: the same over wss, served
// by httphandoff's HTTPS server (tlshandoff), with gorilla/websocket
// clients: each connection keeps its one TCP and TLS connection, with
// one TLS handshake and one WebSocket handshake, across the upgrades (a
// fifth of the connections of the ws tests).
func TestGorillaKeepsWSS(t *testing.T) { keepWSS(t, "gorilla") }
func TestCoderKeepsWSS(t *testing.T)   { keepWSS(t, "coder") }

func keepWSS(t *testing.T, lib string) {
	n, u := scale(t)
	h, pool := startChainTLS(t, lib)
	keepConnections(t, h, dialGorillaTLS(pool), max(n/5, 20), u)
}

// Scale: WSHANDOFF_CONNS and WSHANDOFF_UPGRADES (default 1000 and 10).
func scale(t *testing.T) (conns, upgrades int) {
	conns, upgrades = 1000, 10
	if testing.Short() {
		conns, upgrades = 100, 3
	}
	if n, err := strconv.Atoi(os.Getenv("WSHANDOFF_CONNS")); err == nil {
		conns = n
	}
	if n, err := strconv.Atoi(os.Getenv("WSHANDOFF_UPGRADES")); err == nil {
		upgrades = n
	}
	return conns, upgrades
}

func keepConnections(t *testing.T, h *chain, dial func(addr string) (client, error), nConns, nUpgrades int) {
	lib := h.lib
	f := dialFleet(t, h, nConns, dial)
	clients, active := f.clients, f.active
	f.roundtrip("first")
	pings := make([][]string, nConns)
	var pongWaits []func() error
	for u := 0; u < nUpgrades; u++ {
		var frag, pinging, closing []int
		for i := range active {
			switch {
			case i%20 == u%20:
				frag = append(frag, i)
			case i%20 == (u+1)%20 && len(closing) == 0:
				closing = append(closing, i)
			case i%20 == (u+2)%20:
				pinging = append(pinging, i)
			}
		}
		first := bytes.Repeat([]byte("f"), 9000)
		rest := []byte(fmt.Sprintf("-end-%d", u))
		ports := []int{}
		for _, i := range frag {
			if err := clients[i].startFragmented(first); err != nil {
				t.Fatal(err)
			}
			ports = append(ports, clients[i].localPort())
		}
		h.awaitServerRead(ports)
		old := h.pid
		h.hup()
		// The upgrade asked every connection; those inside a message wait.
		for _, p := range ports {
			ps := strconv.Itoa(p)
			h.await("waits", func(f []string) bool { return len(f) > 2 && f[2] == ps })
		}
		for _, i := range pinging {
			p := fmt.Sprintf("p%d-%d", u, i)
			wait, err := clients[i].ping(p)
			if err != nil {
				t.Fatal(err)
			}
			pongWaits = append(pongWaits, wait)
			pings[i] = append(pings[i], p)
		}
		for _, i := range closing {
			if err := clients[i].close(); err != nil {
				t.Fatal(err)
			}
		}
		for _, i := range frag {
			if err := clients[i].endFragmented(rest); err != nil {
				t.Fatal(err)
			}
			if err := f.expect(i, old, append(append([]byte(nil), first...), rest...)); err != nil {
				t.Fatal(err)
			}
		}
		p := h.upgraded()
		for _, i := range closing {
			f.expectClosed(i)
		}
		f.roundtrip(fmt.Sprintf("after%d", u+1))
		if p == old {
			t.Fatalf("upgrade %d: still served by %d", u+1, old)
		}
		for _, wait := range pongWaits {
			if err := wait(); err != nil {
				t.Fatalf("ping: %v", err)
			}
		}
		pongWaits = pongWaits[:0]
		for _, i := range pinging {
			if lib == "gorilla" && !equal(clients[i].pongs(), pings[i]) {
				t.Fatalf("connection %d: pongs %q, want one per ping %q", i, clients[i].pongs(), pings[i])
			}
			if lib == "coder" && len(clients[i].pongs()) != len(pings[i]) {
				t.Fatalf("connection %d: %d pongs, want one per ping (%d)", i, len(clients[i].pongs()), len(pings[i]))
			}
		}
	}
	h.checkHandshakes(nConns)
	t.Logf("%s: %d connections, %d upgrades, %d messages answered", lib, nConns, nUpgrades, sum(f.sent))
}

// fleet is the test's connections to one chain.
type fleet struct {
	t       *testing.T
	h       *chain
	clients []client
	sent    []int64      // messages answered so far, per connection
	active  map[int]bool // connections not closed
}

func dialFleet(t *testing.T, h *chain, n int, dial func(addr string) (client, error)) *fleet {
	t.Helper()
	f := &fleet{t: t, h: h, clients: make([]client, n), sent: make([]int64, n), active: map[int]bool{}}
	for i := range f.clients {
		c, err := dial(h.addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		f.clients[i] = c
		f.active[i] = true
	}
	return f
}

// expect checks the next message connection i receives: the reply to msg,
// by pid, with the connection's next count.
func (f *fleet) expect(i int, pid int, msg []byte) error {
	got, ok := <-f.clients[i].replies()
	if !ok {
		return fmt.Errorf("connection %d: no reply to message %d: %v", i, f.sent[i]+1, f.clients[i].readErr())
	}
	f.sent[i]++
	want := fmt.Appendf(nil, "%d %d %s", pid, f.sent[i], msg)
	if !bytes.Equal(got, want) {
		return fmt.Errorf("connection %d: got %.60q, want %.60q", i, got, want)
	}
	return nil
}

// roundtrip sends a message on every active connection and checks that
// the serving process answers each once.
func (f *fleet) roundtrip(tag string) {
	f.t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(f.active))
	for i := range f.active {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := []byte(fmt.Sprintf("%s-%d", tag, i))
			if err := f.clients[i].send(msg); err != nil {
				errs <- err
				return
			}
			if err := f.expect(i, f.h.pid, msg); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		f.t.Fatal(err)
	}
}

// expectClosed checks that connection i, which sent a close frame, got
// the server's close frame (1000) and no message, and takes it out of the
// active ones.
func (f *fleet) expectClosed(i int) {
	f.t.Helper()
	if got, ok := <-f.clients[i].replies(); ok {
		f.t.Fatalf("connection %d closing: got a message %.60q", i, got)
	}
	var ce *websocket.CloseError
	switch err := f.clients[i].readErr(); {
	case errors.As(err, &ce) && ce.Code == websocket.CloseNormalClosure:
	case cws.CloseStatus(err) == cws.StatusNormalClosure:
	default:
		f.t.Fatalf("connection %d closing: %v, want the server's close frame (1000)", i, err)
	}
	delete(f.active, i)
}

// TestRollback: an upgrade that rolls back leaves each connection with
// the old process, its library never having seen an error. The new
// process fails in two places: it rejects the state, once every
// connection has parked ("rejected"), or it is killed while one
// connection, inside a fragmented message, has yet to park ("killed").
// That message, begun before the upgrade and ended during it (rejected)
// or after the rollback (killed), with a ping between its fragments, is
// answered whole by the old process; pings sent to parked connections
// get their pongs, a close frame sent to a parked connection gets the old
// process's close frame, and every other connection goes on with the
// count it had. A later upgrade moves them all.
func TestRollback(t *testing.T) {
	for _, lib := range []struct {
		name string
		dial func(string) (client, error)
	}{{"gorilla", dialGorilla}, {"coder", dialCoder}} {
		for _, how := range []string{"rejected", "killed"} {
			t.Run(lib.name+"/"+how, func(t *testing.T) { rollback(t, startChain(t, lib.name), how, lib.dial) })
			t.Run(lib.name+"/wss/"+how, func(t *testing.T) {
				h, pool := startChainTLS(t, lib.name)
				rollback(t, h, how, dialGorillaTLS(pool))
			})
		}
	}
}

func rollback(t *testing.T, h *chain, how string, dial func(string) (client, error)) {
	const frag, closing = 0, 1
	pinging := []int{0, 2, 3}
	lib := h.lib
	f := dialFleet(t, h, 20, dial)
	f.roundtrip("first")
	if how == "rejected" {
		if err := os.WriteFile(h.fail, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	first := bytes.Repeat([]byte("f"), 9000)
	if err := f.clients[frag].startFragmented(first); err != nil {
		t.Fatal(err)
	}
	h.awaitServerRead([]int{f.clients[frag].localPort()})
	old := h.pid
	h.hup()
	started, _ := strconv.Atoi(h.await("started", nil)[1])
	portOf := func(i int) func([]string) bool {
		ps := strconv.Itoa(f.clients[i].localPort())
		return func(e []string) bool { return len(e) > 2 && e[2] == ps }
	}
	h.await("waits", portOf(frag))
	for i := range f.clients {
		if i != frag {
			h.await("parks", portOf(i))
		}
	}
	var waits []func() error
	for _, i := range pinging {
		wait, err := f.clients[i].ping(fmt.Sprintf("p-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, wait)
	}
	if err := f.clients[closing].close(); err != nil {
		t.Fatal(err)
	}
	if how == "killed" {
		if err := syscall.Kill(started, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		h.await("failed", nil)
	}
	if err := f.clients[frag].endFragmented([]byte("-end")); err != nil {
		t.Fatal(err)
	}
	if err := f.expect(frag, old, append(first, "-end"...)); err != nil {
		t.Fatal(err)
	}
	if how == "rejected" {
		h.await("rejects", nil)
		h.await("failed", nil)
	}
	f.expectClosed(closing)
	f.roundtrip("rolled-back")
	for k, wait := range waits {
		if err := wait(); err != nil {
			t.Fatalf("ping on connection %d: %v", pinging[k], err)
		}
	}
	for _, i := range pinging {
		if got := f.clients[i].pongs(); lib == "gorilla" && !equal(got, []string{fmt.Sprintf("p-%d", i)}) || len(got) != 1 {
			t.Fatalf("connection %d: pongs %q, want one for its ping", i, got)
		}
	}
	os.Remove(h.fail)
	h.hup()
	if p := h.upgraded(); p == old {
		t.Fatalf("still served by %d", old)
	}
	f.roundtrip("moved")
	h.checkHandshakes(len(f.clients))
}

func equal(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00") && len(a) == len(b)
}

func sum(v []int64) (s int64) {
	for _, x := range v {
		s += x
	}
	return s
}
