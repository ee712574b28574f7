package load

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/proc"
)

// run connects cfg, runs it with now as time zero and returns the result.
func run(t *testing.T, cfg Config, drain time.Duration) Result {
	t.Helper()
	c, err := Connect(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c.Run(time.Now(), drain)
}

// TestRealServer runs the load against the pdf server it is written for:
// every request must come back OK, on schedule, with nothing dropped.
func TestRealServer(t *testing.T) {
	t.Parallel()
	addr := startPDF(t, buildPDF(t))
	cfg := Config{Addr: addr, Conns: 20, Rate: 400, Duration: time.Second, Tag: "t"}
	res := run(t, cfg, 5*time.Second)

	want := int(cfg.Rate * cfg.Duration.Seconds())
	if n := len(res.Records); n < want*9/10 || n > want*11/10 {
		t.Fatalf("%d records, want about %d", n, want)
	}
	if res.Totals != (Totals{}) || res.Duplicated != 0 {
		t.Errorf("totals %+v, %d duplicated: want none", res.Totals, res.Duplicated)
	}
	interval := int64(time.Duration(float64(time.Second) / cfg.Rate))
	for i, rec := range res.Records {
		if rec.Outcome != OK {
			t.Errorf("request %d: %s, want OK", i, name(rec.Outcome))
		}
		// The schedule, not a measurement: request i is due i intervals
		// after the first, on connection i mod Conns.
		if rec.Due-res.Records[0].Due != int64(i)*interval || rec.Conn != uint32(i%cfg.Conns) {
			t.Errorf("request %d: due %d after the first, conn %d: want %d, %d",
				i, rec.Due-res.Records[0].Due, rec.Conn, int64(i)*interval, i%cfg.Conns)
		}
		// Order only: never sent before it was due, never answered
		// before it was sent.
		if rec.Sent < rec.Due || rec.Replied < rec.Sent {
			t.Errorf("request %d: due %d, sent %d, replied %d: want due <= sent <= replied",
				i, rec.Due, rec.Sent, rec.Replied)
		}
	}
}

// TestConnectRefused: with nothing listening, Connect says so in a way
// errors.Is sees.
func TestConnectRefused(t *testing.T) {
	t.Parallel()
	_, err := Connect(Config{Addr: closedAddr(t), Conns: 2, Rate: 10, Duration: time.Second, Tag: "t"})
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("Connect to a closed port: %v, want ECONNREFUSED", err)
	}
}

// TestMisbehavingServer checks each way a server can get a reply wrong is
// counted once, as what it is, and nothing else is: every request's outcome
// must be what the fake server did with it.
func TestMisbehavingServer(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		fault   fault
		outcome Outcome // of the request the fault hit
		dups    int
	}{
		{"reply twice", twice, OK, 1},
		{"skip a reply", skip, Lost, 0},
		{"forget the account", forget, Failed, 0},
		{"reply ERR", refuse, Failed, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// The third top-up of t-1, so that replies come before and after.
			f := startFake(t, func(acct string, n int) fault {
				if acct == "t-1" && n == 3 {
					return tt.fault
				}
				return none
			}, nil)
			res := run(t, Config{Addr: f.addr, Conns: 4, Rate: 200, Duration: 200 * time.Millisecond, Tag: "t"}, 5*time.Second)

			hit := f.hits(tt.fault)
			if len(hit) != 1 {
				t.Fatalf("the fault hit requests %v, want one", hit)
			}
			if o := res.Records[hit[0]].Outcome; o != tt.outcome {
				t.Errorf("request %d, hit by the fault: %s, want %s", hit[0], name(o), name(tt.outcome))
			}
			checkOutcomes(t, f, res)
			if res.Duplicated != tt.dups || res.Totals != (Totals{}) {
				t.Errorf("%d duplicated, totals %+v: want %d, none", res.Duplicated, res.Totals, tt.dups)
			}
		})
	}
}

// TestDroppedConnection: a server that closes a connection loses what was
// outstanding on it; the client counts the drop, dials again, and carries
// on where the account stands.
func TestDroppedConnection(t *testing.T) {
	t.Parallel()
	f := startFake(t, func(acct string, n int) fault {
		if acct == "t-1" && (n == 3 || n == 6) {
			return hangUp
		}
		return none
	}, nil)
	res := run(t, Config{Addr: f.addr, Conns: 4, Rate: 200, Duration: 500 * time.Millisecond, Tag: "t"}, 5*time.Second)

	// Two drops of one connection.
	if want := (Totals{Dropped: 2, DroppedConns: 1}); res.Totals != want || res.Duplicated != 0 {
		t.Errorf("totals %+v, %d duplicated: want %+v, none", res.Totals, res.Duplicated, want)
	}
	hit := f.hits(hangUp)
	if len(hit) != 2 || res.Records[hit[0]].Outcome != Lost || res.Records[hit[1]].Outcome != Lost {
		t.Errorf("hung up on requests %v, want two, both Lost", hit)
	}
	checkOutcomes(t, f, res)
	// Requests read after the second drop, all OK above, prove the third
	// connection worked and the client kept the balance across. The
	// schedule has 19 more for t-1 by then: only a client stalled past
	// its end sends them all down the dead connection.
	hellos, topups := f.seen("t-1")
	if hellos != 3 || topups <= 6 {
		t.Errorf("t-1 said HELLO %d times and sent %d top-ups: want 3, more than 6", hellos, topups)
	}
}

// TestRedialWhileRefused: a connection dropped while nothing listens is
// dialled again until the server is back.
func TestRedialWhileRefused(t *testing.T) {
	t.Parallel()
	var f *fake
	reopenAt := 0 // t-2's top-up that makes the server listen again
	f = startFake(t, func(acct string, n int) fault {
		switch {
		case acct == "t-1" && n == 3:
			// Stop listening first: the client's first redial is refused.
			f.stopListening()
			reopenAt = f.n["t-2"] + 2
			return hangUp
		case acct == "t-2" && n == reopenAt:
			// Two of t-2's intervals later, so that t-1 has a request
			// come due while it is down.
			if err := f.listenAgain(); err != nil {
				t.Error(err)
			}
		}
		return none
	}, nil)
	res := run(t, Config{Addr: f.addr, Conns: 4, Rate: 200, Duration: 500 * time.Millisecond, Tag: "t"}, 5*time.Second)

	if want := (Totals{Dropped: 1, DroppedConns: 1}); res.Totals != want || res.Duplicated != 0 {
		t.Errorf("totals %+v, %d duplicated: want %+v, none", res.Totals, res.Duplicated, want)
	}
	checkOutcomes(t, f, res)
	hellos, topups := f.seen("t-1")
	if hellos != 2 || topups <= 3 {
		t.Errorf("t-1 said HELLO %d times and sent %d top-ups: want 2, more than 3", hellos, topups)
	}
}

// TestChurnRefused closes the listening socket mid-run, as an upgrade
// that loses it would: new connections are refused from then on, and the
// established ones carry on undisturbed.
func TestChurnRefused(t *testing.T) {
	t.Parallel()
	const before = 5 // churn connections let in
	var f *fake
	var churned atomic.Int32
	f = startFake(t, nil, func(name string, _ int) {
		if strings.Contains(name, "-churn-") && churned.Add(1) == before {
			f.stopListening()
		}
	})
	res := run(t, Config{Addr: f.addr, Conns: 4, Rate: 200, Churn: 200, Duration: 200 * time.Millisecond, Tag: "t"}, 5*time.Second)

	// One more may have been in the accept queue and got in, or reset.
	tot := res.Totals
	if tot.ChurnOK < before || tot.ChurnRefused == 0 || tot.Dropped != 0 {
		t.Errorf("totals %+v: want ChurnOK >= %d, ChurnRefused > 0, no drops", tot, before)
	}
	checkOutcomes(t, f, res)
}

// TestNoConnectionOutlivesRun: a connection dropped at the end whose
// redial completes only after Run returned must be closed, not left open
// with a reader behind it.
func TestNoConnectionOutlivesRun(t *testing.T) {
	t.Parallel()
	returned := make(chan struct{})
	release := sync.OnceFunc(func() { close(returned) })
	f := startFake(t, func(acct string, n int) fault {
		if acct == "t-1" && n == 10 { // its last
			return hangUp
		}
		return none
	}, func(name string, n int) {
		if name == "t-1" && n == 2 {
			<-returned // WELCOME the redial only once Run has returned
		}
	})
	t.Cleanup(release) // before the fake's, which waits for its connections
	res := run(t, Config{Addr: f.addr, Conns: 4, Rate: 200, Duration: 200 * time.Millisecond, Tag: "t"}, 5*time.Second)
	release()

	for ends := 0; ends < 2; { // of t-1's connections
		select {
		case name := <-f.ended:
			if name == "t-1" {
				ends++
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the connection redialled after Run returned is still open")
		}
	}
	if want := (Totals{Dropped: 1, DroppedConns: 1}); res.Totals != want || res.Duplicated != 0 {
		t.Errorf("totals %+v, %d duplicated: want %+v, none", res.Totals, res.Duplicated, want)
	}
	checkOutcomes(t, f, res)
}

// TestUnansweredAtEnd: requests still unanswered when the drain time is
// up are Lost, and the end of a run is no dropped connection.
func TestUnansweredAtEnd(t *testing.T) {
	t.Parallel()
	f := startFake(t, func(acct string, n int) fault {
		if n >= 9 { // the last two of every connection
			return skip
		}
		return none
	}, nil)
	res := run(t, Config{Addr: f.addr, Conns: 4, Rate: 200, Duration: 200 * time.Millisecond, Tag: "t"}, 100*time.Millisecond)

	// Every request was written before Run closed the connections, so
	// once they have all ended the server has read every one.
	f.waitEnded(t, 4)
	hit := f.hits(skip)
	if len(hit) != 8 {
		t.Errorf("unanswered requests %v, want eight", hit)
	}
	for _, rid := range hit {
		if o := res.Records[rid].Outcome; o != Lost {
			t.Errorf("request %d, never answered: %s, want Lost", rid, name(o))
		}
	}
	checkOutcomes(t, f, res)
	if res.Totals != (Totals{}) || res.Duplicated != 0 {
		t.Errorf("totals %+v, %d duplicated: want none", res.Totals, res.Duplicated)
	}
}

// checkOutcomes compares every record with what the fake server did with
// its request.
func checkOutcomes(t *testing.T, f *fake, res Result) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	ok := 0
	for rid, rec := range res.Records {
		want := Lost // never read, skipped or hung up on
		if d, read := f.did[rid]; read && d != skip && d != hangUp {
			want = OK
			if d == forget || d == refuse {
				want = Failed
			}
		}
		if rec.Outcome != want {
			t.Errorf("request %d on conn %d: %s, want %s", rid, rec.Conn, name(rec.Outcome), name(want))
		}
		if rec.Outcome == OK {
			ok++
		}
		// Every connection was up again by the end, so even requests
		// that came due while one was down went out.
		if rec.Sent == 0 {
			t.Errorf("request %d on conn %d: never sent", rid, rec.Conn)
		}
	}
	if ok < len(res.Records)/2 {
		t.Errorf("%d of %d requests OK: the run barely ran", ok, len(res.Records))
	}
}

func name(o Outcome) string {
	if names := []string{"Pending", "OK", "Failed", "Lost", "Duplicated"}; int(o) < len(names) {
		return names[o]
	}
	return fmt.Sprintf("Outcome(%d)", o)
}

// fault is what the fake server does with one top-up instead of its job.
type fault int

const (
	none   fault = iota
	twice        // answer, then answer again
	skip         // neither apply nor answer
	forget       // lose the account, as a server that lost its state would, then apply and answer
	refuse       // answer ERR without applying
	hangUp       // close the connection without applying or answering
)

// fake speaks the pdf protocol as load uses it: "HELLO <name>" gets
// "WELCOME <name>", "TOPUP <rid> <acct> 1" gets "OK <rid> <balance>",
// unless its fault function says otherwise for the n-th top-up of acct (n
// counts from 1 over all of acct's connections).
type fake struct {
	// fault runs with mu held.
	fault func(acct string, n int) fault
	// hello, if set, runs before the n-th WELCOME to name; it may block.
	hello func(name string, n int)
	ended chan string // the HELLO name of each connection that ended, if there is room
	addr  string

	lnMu sync.Mutex
	ln   net.Listener

	mu     sync.Mutex
	n      map[string]int
	bal    map[string]int64
	hellos map[string]int
	did    map[int]fault // by rid, every top-up read
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func startFake(t *testing.T, f func(acct string, n int) fault, hello func(name string, n int)) *fake {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if f == nil {
		f = func(string, int) fault { return none }
	}
	s := &fake{ln: ln, addr: ln.Addr().String(), fault: f, hello: hello, ended: make(chan string, 64),
		n: map[string]int{}, bal: map[string]int64{}, hellos: map[string]int{},
		did: map[int]fault{}, conns: map[net.Conn]bool{}}
	s.wg.Go(func() { s.accept(ln) })
	t.Cleanup(func() {
		s.stopListening()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// stopListening closes the listening socket; established connections stay.
func (s *fake) stopListening() {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	s.ln.Close()
}

// listenAgain listens at the same address again, after stopListening.
func (s *fake) listenAgain() error {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return err
	}
	s.ln = ln
	s.wg.Go(func() { s.accept(ln) })
	return nil
}

// hits returns the rids of the top-ups the server did d with, in order.
func (s *fake) hits(d fault) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rids []int
	for rid, got := range s.did {
		if got == d {
			rids = append(rids, rid)
		}
	}
	slices.Sort(rids)
	return rids
}

// waitEnded waits for n connections to end.
func (s *fake) waitEnded(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-s.ended:
		case <-time.After(10 * time.Second):
			t.Fatal("connections still open 10s after the run")
		}
	}
}

func (s *fake) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Go(func() { s.serve(c) })
	}
}

func (s *fake) serve(c net.Conn) {
	var name string
	defer func() {
		c.Close()
		select {
		case s.ended <- name:
		default:
		}
	}()
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		var out []byte
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "HELLO" {
			name = f[1]
			s.mu.Lock()
			s.hellos[name]++
			n := s.hellos[name]
			s.mu.Unlock()
			if s.hello != nil {
				s.hello(name, n)
			}
			out = fmt.Appendf(nil, "WELCOME %s\n", name)
		} else if out = s.topUp(f); out == nil {
			return // the fault is hangUp
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// topUp answers "TOPUP <rid> <acct> 1" as the fault says: nil means hang
// up, empty means say nothing.
func (s *fake) topUp(f []string) []byte {
	var rid int
	if len(f) != 4 || f[0] != "TOPUP" || f[3] != "1" {
		return []byte("ERR - bad-args\n")
	}
	if _, err := fmt.Sscan(f[1], &rid); err != nil {
		return []byte("ERR - bad-args\n")
	}
	acct := f[2]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n[acct]++
	d := s.fault(acct, s.n[acct])
	s.did[rid] = d
	switch d {
	case skip:
		return []byte{}
	case refuse:
		return fmt.Appendf(nil, "ERR %d overflow\n", rid)
	case hangUp:
		return nil
	case forget:
		s.bal[acct] = 0
	}
	s.bal[acct]++
	ok := fmt.Appendf(nil, "OK %d %d\n", rid, s.bal[acct])
	if d == twice {
		return append(ok, ok...)
	}
	return ok
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// seen returns how many HELLOs and top-ups the fake had from acct.
func (f *fake) seen(acct string) (hellos, topups int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hellos[acct], f.n[acct]
}

// buildPDF builds the pdf server (v2) into a temporary directory.
func buildPDF(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pdf")
	if err := proc.Build("github.com/handoff-dev/handoff/examples/pdf/cmd/pdf-v2", bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// startPDF starts the server bin on a port of its choosing and returns
// its address once its log says it is serving. The server is killed when
// the test ends.
func startPDF(t *testing.T, bin string) string {
	t.Helper()
	dir := t.TempDir()
	log := &serverLog{serving: make(chan string, 1)}
	cmd := exec.Command(bin, "-listen", "127.0.0.1:0",
		"-pidfile", filepath.Join(dir, "pid"), "-state", filepath.Join(dir, "state"))
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	select {
	case addr := <-log.serving:
		return addr
	case <-exited:
		t.Fatalf("pdf server exited before serving: %v\n%s", cmd.ProcessState, log)
	case <-time.After(30 * time.Second):
		t.Fatalf("pdf server not serving after 30s\n%s", log)
	}
	return ""
}

// serverLog keeps what the server writes to stderr and sends the address
// on serving when the "serving" line comes.
type serverLog struct {
	serving chan string

	mu    sync.Mutex
	buf   bytes.Buffer
	found bool
}

func (l *serverLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for line := range strings.Lines(l.buf.String()) {
		if l.found || !strings.HasSuffix(line, "\n") || !strings.Contains(line, "msg=serving ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if addr, ok := strings.CutPrefix(f, "addr="); ok && !l.found {
				l.found = true
				l.serving <- addr
			}
		}
	}
	return len(p), nil
}

func (l *serverLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestBadConfig refuses a load that cannot run, instead of dividing by zero.
func TestBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Addr: "127.0.0.1:1", Conns: 0, Rate: 10, Duration: time.Second},
		{Addr: "127.0.0.1:1", Conns: 1, Rate: 0, Duration: time.Second},
		{Addr: "127.0.0.1:1", Conns: 1, Rate: 10, Duration: 0},
		{Addr: "127.0.0.1:1", Conns: 1, Rate: 10, Duration: time.Second, Churn: -1},
	} {
		if _, err := Connect(cfg); err == nil || !strings.Contains(err.Error(), "above 0") {
			t.Errorf("%+v: %v, want refused", cfg, err)
		}
	}
}
