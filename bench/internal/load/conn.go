package load

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// pconn is one persistent connection and the account it owns.
type pconn struct {
	idx  uint32
	acct string
	run  *runner

	mu          sync.Mutex
	c           net.Conn // nil while down
	outstanding []int    // record indices, oldest first
	queue       []int    // due while the connection was down; sent on redial
	balance     int64    // the account's balance as the server last said it
	wasDropped  bool
}

// dial connects and says HELLO; it returns once WELCOME came back.
func (r *runner) dialHello(gw string) (net.Conn, *bufio.Reader, error) {
	c, err := net.DialTimeout("tcp", r.cfg.Addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(c, 512)
	if _, err := fmt.Fprintf(c, "HELLO %s\n", gw); err != nil {
		c.Close()
		return nil, nil, err
	}
	line, err := br.ReadSlice('\n')
	if err != nil || !bytes.HasPrefix(line, []byte("WELCOME ")) {
		c.Close()
		return nil, nil, fmt.Errorf("no WELCOME (%q, %v)", line, err)
	}
	c.SetDeadline(time.Time{})
	return c, br, nil
}

// connect (re)establishes the connection, retrying until the run ends,
// then sends what queued up while it was down and reads replies.
func (p *pconn) connect(first bool) error {
	for {
		c, br, err := p.run.dialHello(p.acct)
		if err == nil {
			p.mu.Lock()
			if p.run.finished() {
				// Run has stopped and returned the records: a connection
				// made now would outlive it and send into them.
				p.mu.Unlock()
				c.Close()
				return nil
			}
			p.c = c
			queued := p.queue
			p.queue = nil
			for _, rid := range queued {
				p.sendLocked(rid)
			}
			p.mu.Unlock()
			go p.read(c, br)
			return nil
		}
		if first || p.run.finished() {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}

// send sends request rid now, or queues it until the connection is back.
func (p *pconn) send(rid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.c == nil {
		p.queue = append(p.queue, rid)
		return
	}
	p.sendLocked(rid)
}

func (p *pconn) sendLocked(rid int) {
	p.outstanding = append(p.outstanding, rid)
	p.run.sent(rid)
	var b [64]byte
	// A failed write shows up in the reader too, which handles the drop.
	p.c.Write(AppendTopUp(b[:0], rid, p.acct, 1))
}

// AppendTopUp appends the pdf request "TOPUP <rid> <acct> <amount>\n" to b,
// which the server answers "OK <rid> <balance>".
func AppendTopUp(b []byte, rid int, acct string, amount int64) []byte {
	b = append(b, "TOPUP "...)
	b = strconv.AppendInt(b, int64(rid), 10)
	b = append(b, ' ')
	b = append(b, acct...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, amount, 10)
	return append(b, '\n')
}

// read matches replies to outstanding requests until the connection
// fails, then hands it to down.
func (p *pconn) read(c net.Conn, br *bufio.Reader) {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			p.down(c)
			return
		}
		p.reply(line)
	}
}

// reply handles "OK <rid> <balance>" (or any other reply line naming a rid).
func (p *pconn) reply(line []byte) {
	now := p.run.now()
	f := bytes.Fields(line)
	rid, bal := -1, int64(-1)
	if len(f) >= 2 {
		if n, err := strconv.Atoi(string(f[1])); err == nil {
			rid = n
		}
	}
	ok := len(f) == 3 && string(f[0]) == "OK"
	if ok {
		bal, _ = strconv.ParseInt(string(f[2]), 10, 64)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	i := index(p.outstanding, rid)
	if i < 0 {
		p.run.duplicate()
		return
	}
	for _, skipped := range p.outstanding[:i] {
		p.run.finish(skipped, Lost, 0)
	}
	p.outstanding = p.outstanding[i+1:]
	outcome := Failed
	if ok && bal == p.balance+1 {
		outcome = OK
	}
	if ok {
		p.balance = bal // resynchronise, so that one loss counts once
	}
	p.run.finish(rid, outcome, now)
}

// down marks c gone: what was outstanding on it is lost, and a new
// connection replaces it.
func (p *pconn) down(c net.Conn) {
	c.Close()
	p.mu.Lock()
	if p.c != c {
		p.mu.Unlock()
		return
	}
	p.c = nil
	for _, rid := range p.outstanding {
		p.run.finish(rid, Lost, 0)
	}
	p.outstanding = nil
	// Count the drop before unlocking: once nothing is outstanding, Run
	// may stop and take the totals at any moment.
	stopped := p.run.finished()
	if !stopped {
		p.run.dropped(!p.wasDropped)
		p.wasDropped = true
	}
	p.mu.Unlock()
	if !stopped {
		go p.connect(false)
	}
}

func index(s []int, v int) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}
