package handoff

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// client is one connection of a test: it sends numbered requests and
// checks that each is answered exactly once, in order, with the
// connection's request count continuing across upgrades.
type client struct {
	t    *testing.T
	c    net.Conn
	r    *bufio.Reader
	sent int
	got  int
	pids map[string]bool
}

func dialClient(t *testing.T, addr string) *client {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, r: bufio.NewReader(c), pids: map[string]bool{}}
}

// send pipelines k requests; if half is set the last one is sent only in
// part, to be completed by finish.
func (cl *client) send(k int, half bool) {
	var b strings.Builder
	for i := 0; i < k; i++ {
		fmt.Fprintf(&b, "req-%d\n", cl.sent)
		cl.sent++
	}
	if half {
		fmt.Fprintf(&b, "req-%d", cl.sent)
	}
	if _, err := cl.c.Write([]byte(b.String())); err != nil {
		cl.t.Errorf("write: %v", err)
	}
}

// finish completes a half-sent request.
func (cl *client) finish() {
	if _, err := cl.c.Write([]byte("\n")); err != nil {
		cl.t.Errorf("write: %v", err)
	}
	cl.sent++
}

// receive reads every outstanding reply and checks it.
func (cl *client) receive() error {
	cl.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for cl.got < cl.sent {
		line, err := cl.r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("reply %d of %d: %w", cl.got, cl.sent, err)
		}
		f := strings.Fields(line)
		want := fmt.Sprintf("req-%d", cl.got)
		if len(f) != 3 || f[0] != want || f[1] != strconv.Itoa(cl.got) {
			return fmt.Errorf("reply %q, want %q with count %d", strings.TrimSpace(line), want, cl.got)
		}
		cl.pids[f[2]] = true
		cl.got++
	}
	return nil
}

func TestUpgradeKeepsConnections(t *testing.T) {
	h := startServer(t)
	var clients []*client
	for i := 0; i < 20; i++ {
		cl := dialClient(t, h.addr)
		cl.send(5, true)
		clients = append(clients, cl)
	}
	// Wait until the first five of each are answered, so the half request
	// is surely buffered in the server when it parks.
	for _, cl := range clients {
		if err := cl.receive(); err != nil {
			t.Fatal(err)
		}
	}
	old := h.pid
	newPid, fail := h.upgrade()
	if newPid == 0 {
		t.Fatalf("upgrade failed: %s", fail)
	}
	for _, cl := range clients {
		cl.finish()
		cl.send(3, false)
		if err := cl.receive(); err != nil {
			t.Fatal(err)
		}
		if !cl.pids[strconv.Itoa(newPid)] || !cl.pids[strconv.Itoa(old)] {
			t.Fatalf("replies came from %v, want both %d and %d", cl.pids, old, newPid)
		}
	}
}

var _ = sync.Mutex{}
