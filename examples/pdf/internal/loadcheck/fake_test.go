package loadcheck

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// fault rewrites what the fake server sends for request n (0 is HELLO) on
// the connection that said HELLO gw: nil drops the reply, two lines
// duplicate it, hangup closes the connection after writing out.
type fault func(gw string, n int, reply string) (out []string, hangup bool)

// fakeServer speaks the pdf protocol correctly, unless a fault says not to.
type fakeServer struct {
	ln    net.Listener
	fault fault
	// release reports the version and pid answering now; tests that
	// upgrade change it under the clients' feet.
	release func() (version string, pid int)

	mu      sync.Mutex
	bal     map[string]int64
	charges map[string]int64
	wg      sync.WaitGroup

	// A run that must reach a volume of work ends when the server has
	// seen it, not after a time a loaded machine may not reach it in.
	answered, churned  atomic.Int64
	wantReq, wantChurn int64
	enough             context.CancelFunc // nil unless until was called
}

// until returns a context that ends once the server has answered requests
// requests and churn short-lived connections have said HELLO (the check
// finishes a churn connection's script once begun).
func (s *fakeServer) until(t *testing.T, requests, churn int64) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s.mu.Lock()
	s.wantReq, s.wantChurn, s.enough = requests, churn, cancel
	s.mu.Unlock()
	return ctx
}

// count records an answered request (f is its fields) and ends until's
// context once enough were.
func (s *fakeServer) count(f []string) {
	n := s.answered.Add(1)
	c := s.churned.Load()
	if len(f) == 2 && f[0] == "HELLO" && strings.HasPrefix(f[1], "gw-churn-") {
		c = s.churned.Add(1)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.enough != nil && n >= s.wantReq && c >= s.wantChurn {
		s.enough()
	}
}

func startFake(t *testing.T, release func() (string, int), f fault) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{ln: ln, fault: f, release: release, bal: map[string]int64{}, charges: map[string]int64{}}
	s.wg.Go(s.accept)
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func fixedRelease(version string, pid int) func() (string, int) {
	return func() (string, int) { return version, pid }
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

func (s *fakeServer) accept() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Go(func() { s.serve(nc) })
	}
}

func (s *fakeServer) serve(nc net.Conn) {
	defer nc.Close()
	r, w := bufio.NewReader(nc), bufio.NewWriter(nc)
	var gw string
	for n := 0; ; n++ {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		f := strings.Fields(line)
		out, hangup := []string{s.reply(&gw, n, f)}, false
		s.count(f)
		if s.fault != nil {
			out, hangup = s.fault(gw, n, out[0])
		}
		for _, o := range out {
			w.WriteString(o + "\n")
		}
		// Flush only when the client's pipeline is empty, as a real
		// pipelining server would.
		if hangup || r.Buffered() == 0 {
			if w.Flush() != nil || hangup {
				return
			}
		}
	}
}

func (s *fakeServer) reply(gw *string, n int, f []string) string {
	if len(f) == 0 {
		return "ERR - empty"
	}
	rid := "-"
	if len(f) > 1 {
		rid = f[1]
	}
	amount := func() int64 { a, _ := strconv.ParseInt(f[3], 10, 64); return a }
	version, pid := s.release()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case f[0] == "HELLO" && len(f) == 2:
		*gw = f[1]
		return "WELCOME " + f[1]
	case f[0] == "TOPUP" && len(f) == 4:
		s.bal[f[2]] += amount()
		return fmt.Sprintf("OK %s %d", rid, s.bal[f[2]])
	case f[0] == "CHARGE" && len(f) == 4 && s.bal[f[2]] < amount():
		return fmt.Sprintf("DENY %s %d", rid, s.bal[f[2]])
	case f[0] == "CHARGE" && len(f) == 4:
		s.bal[f[2]] -= amount()
		s.charges[f[2]]++
		return fmt.Sprintf("OK %s %d", rid, s.bal[f[2]])
	case f[0] == "BALANCE" && len(f) == 3:
		return fmt.Sprintf("BAL %s %d", rid, s.bal[f[2]])
	case f[0] == "WHOAMI" && len(f) == 2:
		return fmt.Sprintf("YOU %s %s %d", rid, *gw, n)
	case f[0] == "VERSION" && len(f) == 2:
		return fmt.Sprintf("VERSION %s %s %d", rid, version, pid)
	case f[0] == "STATS" && len(f) == 3 && strings.HasPrefix(version, "v2"):
		return fmt.Sprintf("STATS %s %d %d", rid, s.bal[f[2]], s.charges[f[2]])
	}
	return "ERR " + rid + " unknown-command"
}
