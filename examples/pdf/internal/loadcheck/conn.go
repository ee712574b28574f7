package loadcheck

import (
	"bufio"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// conn is one client connection: the writer side (whoever calls send)
// owns the model, a reader goroutine matches replies to the queue of
// outstanding requests.
type conn struct {
	cfg   *Config
	st    *stats
	gw    string
	nc    net.Conn
	w     *bufio.Writer
	m     *model
	rng   *rand.Rand
	slots chan struct{} // one token per request allowed in flight

	mu sync.Mutex
	q  []pending // outstanding requests, oldest first

	dead     chan struct{} // closed when the connection failed
	failOnce sync.Once
	closing  atomic.Bool   // set before the client closes on purpose
	done     chan struct{} // closed when the reader exits
	errs     atomic.Uint64 // failures seen on this connection
	sawV2    atomic.Bool   // the latest VERSION reply said v2: STATS may be sent

	// Reader-only state.
	pids         map[int]struct{}
	lastProgress time.Time
	lastVer      versionSeen
	suspect      uint64 // rid of a STATS answered unknown-command while lastVer was v2
}

type versionSeen struct {
	v2  bool
	pid int
}

// dial connects and starts the reader. A failed dial is counted as
// refused unless ctx ended, which is the run stopping, not the server.
func dial(ctx context.Context, cfg *Config, st *stats, m *model) (*conn, error) {
	d := net.Dialer{Timeout: cfg.StallTimeout}
	nc, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		if ctx.Err() == nil {
			st.fail(&st.refused, "%s: dial %s: %v", m.gw, cfg.Addr, err)
		}
		return nil, err
	}
	c := &conn{
		cfg: cfg, st: st, gw: m.gw, nc: nc, w: bufio.NewWriter(nc), m: m,
		slots: make(chan struct{}, cfg.Pipeline), dead: make(chan struct{}),
		done: make(chan struct{}), pids: map[int]struct{}{},
	}
	for range cfg.Pipeline {
		c.slots <- struct{}{}
	}
	go c.readLoop()
	return c, nil
}

// send waits for a pipeline slot, then generates the next request with
// gen and writes it. gen runs only once the slot is held so the model
// never counts a request that was not written. It reports false if the
// connection failed, stop closed, or expire fired (a stall) first.
func (c *conn) send(stop <-chan struct{}, expire <-chan time.Time, gen func() pending) bool {
	if !c.acquire(stop, expire) {
		return false
	}
	p := gen()
	p.sent = time.Now()
	c.mu.Lock()
	c.q = append(c.q, p)
	c.mu.Unlock()
	c.st.sent.Add(1)
	c.nc.SetWriteDeadline(p.sent.Add(c.cfg.StallTimeout))
	c.w.WriteString(p.req)
	c.w.WriteByte('\n')
	if err := c.w.Flush(); err != nil {
		c.ioFailed("write", err)
		return false
	}
	return true
}

func (c *conn) acquire(stop <-chan struct{}, expire <-chan time.Time) bool {
	select {
	case <-c.slots:
		return true
	case <-c.dead:
	case <-stop:
	case <-expire:
		c.stall("replies still outstanding after %v at the end of the run", c.cfg.DrainTimeout)
	}
	return false
}

// drain waits until every outstanding request has its reply, or declares
// a stall after Config.DrainTimeout.
func (c *conn) drain() bool {
	t := time.NewTimer(c.cfg.DrainTimeout)
	defer t.Stop()
	for range cap(c.slots) {
		if !c.acquire(nil, t.C) {
			return false
		}
	}
	for range cap(c.slots) {
		c.slots <- struct{}{}
	}
	return true
}

// close ends the connection on the client's terms and waits for the reader.
func (c *conn) close() {
	c.closing.Store(true)
	c.nc.Close()
	<-c.done
}

// die records the first failure of the connection only, so a connection
// counts once however many goroutines notice it failing.
func (c *conn) die(record func(outstanding []pending)) {
	c.failOnce.Do(func() {
		c.mu.Lock()
		q := c.q
		c.q = nil
		c.mu.Unlock()
		record(q)
		c.errs.Add(1)
		close(c.dead)
		c.nc.Close()
	})
}

func (c *conn) stall(format string, args ...any) {
	c.die(func(q []pending) {
		if len(q) > 0 {
			// The oldest request never got its reply: its wait is a stall
			// at least this long.
			storeMax(&c.st.maxStall, int64(time.Since(q[0].sent)))
		}
		c.st.fail(&c.st.stalled, "%s: stalled with %d outstanding: "+format, append([]any{c.gw, len(q)}, args...)...)
		c.st.missing.Add(uint64(len(q)))
	})
}

// ioFailed classifies a read or write error; the client's own close is no
// failure.
func (c *conn) ioFailed(op string, err error) {
	if c.closing.Load() {
		return
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.stall("%s: nothing for %v", op, c.cfg.StallTimeout)
		return
	}
	c.die(func(q []pending) {
		c.st.fail(&c.st.dropped, "%s: connection lost with %d outstanding: %s: %v", c.gw, len(q), op, err)
		c.st.lostInDrops.Add(uint64(len(q)))
	})
}

func (c *conn) outstanding() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.q)
}

func (c *conn) readLoop() {
	defer close(c.done)
	r := bufio.NewReader(c.nc)
	var partial string
	for {
		c.nc.SetReadDeadline(time.Now().Add(c.cfg.StallTimeout))
		s, err := r.ReadString('\n')
		if err == nil {
			c.handle(strings.TrimRight(partial+s, "\r\n"), time.Now())
			partial = ""
			continue
		}
		// A timed-out read returns what it had; keep it for the next one.
		partial += s
		idle := errors.Is(err, os.ErrDeadlineExceeded) && c.outstanding() == 0 && !c.closing.Load()
		if !idle {
			c.ioFailed("read", err)
			return
		}
	}
}

func (c *conn) handle(line string, now time.Time) {
	f := strings.Fields(line)
	p, skipped, ok := c.take(f)
	if !ok {
		c.errs.Add(1)
		c.st.fail(&c.st.unexpected, "%s: reply to no outstanding request: %q", c.gw, line)
		return
	}
	for _, s := range skipped {
		c.errs.Add(1)
		c.st.fail(&c.st.missing, "%s: no reply to %q before the reply %q", c.gw, s.req, line)
	}
	for range len(skipped) + 1 {
		c.slots <- struct{}{}
	}
	storeMax(&c.st.maxStall, int64(now.Sub(later(c.lastProgress, p.sent))))
	c.lastProgress = now
	c.st.lat.record(now.Sub(p.sent))
	c.check(p, line, f)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// take removes the request a reply answers, and any older ones it skipped
// over. A reply without a readable rid is charged to the oldest request,
// where it will fail the check.
func (c *conn) take(f []string) (p pending, skipped []pending, ok bool) {
	rid, parsed := replyRID(f)
	c.mu.Lock()
	defer c.mu.Unlock()
	i := -1
	if parsed {
		i = slices.IndexFunc(c.q, func(p pending) bool { return p.rid == rid })
	} else if len(c.q) > 0 {
		i = 0
	}
	if i < 0 {
		return pending{}, nil, false
	}
	skipped = slices.Clone(c.q[:i])
	p = c.q[i]
	c.q = c.q[i+1:]
	return p, skipped, true
}

// replyRID reads a reply's rid; WELCOME, which has none, answers HELLO's 0.
func replyRID(f []string) (uint64, bool) {
	if len(f) > 0 && f[0] == "WELCOME" {
		return 0, true
	}
	if len(f) < 2 {
		return 0, false
	}
	rid, err := strconv.ParseUint(f[1], 10, 64)
	return rid, err == nil
}

func (c *conn) check(p pending, line string, f []string) {
	switch {
	case p.kind == kindVersion:
		c.checkVersion(p, line, f)
	case p.kind == kindStats:
		c.checkStats(p, line)
	case line == p.want:
		c.st.ok.Add(1)
	default:
		c.mismatch(p, line)
	}
}

func (c *conn) mismatch(p pending, got string) {
	c.errs.Add(1)
	c.st.fail(&c.st.mismatches, "%s: %q got %q, want %q", c.gw, p.req, got, p.want)
}

func (c *conn) checkVersion(p pending, line string, f []string) {
	v, ok := parseVersion(p.rid, f)
	if !ok {
		c.mismatch(p, line)
		return
	}
	c.st.ok.Add(1)
	c.st.sawVersion(f[2], v.pid)
	c.pids[v.pid] = struct{}{}
	c.sawV2.Store(v.v2)
	// Replies come in order, so two v2 replies from one pid around a STATS
	// prove the server was v2 when it called STATS unknown, where a pid
	// names one process (not across containers, where each is pid 1).
	if c.suspect != 0 && v.v2 && v == c.lastVer && !c.cfg.SharedPIDs {
		c.errs.Add(1)
		c.st.fail(&c.st.mismatches, "%s: STATS %d answered unknown-command between two v2 VERSION replies of pid %d",
			c.gw, c.suspect, v.pid)
	}
	c.suspect = 0
	c.lastVer = v
}

func parseVersion(rid uint64, f []string) (versionSeen, bool) {
	if len(f) != 4 || f[0] != "VERSION" || f[1] != strconv.FormatUint(rid, 10) {
		return versionSeen{}, false
	}
	v2 := strings.HasPrefix(f[2], "v2")
	pid, err := strconv.Atoi(f[3])
	if err != nil || pid <= 0 || !(v2 || strings.HasPrefix(f[2], "v1")) {
		return versionSeen{}, false
	}
	return versionSeen{v2: v2, pid: pid}, true
}

func (c *conn) checkStats(p pending, line string) {
	switch line {
	case p.want:
		c.st.ok.Add(1)
		c.st.statsOK.Add(1)
	case "ERR " + strconv.FormatUint(p.rid, 10) + " unknown-command":
		c.st.ok.Add(1)
		c.st.statsV1.Add(1)
		if c.lastVer.v2 {
			c.suspect = p.rid
		}
	default:
		c.mismatch(p, line)
	}
}
