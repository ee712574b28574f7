package load

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// client is one chat or echo client; it redials when its connection drops.
type client struct {
	cfg   *Config
	st    *stats
	id    int
	echo  bool
	room  string
	nick  string
	since atomic.Int64 // unix ns at which the current connection was made; 0 while disconnected

	mu      sync.Mutex
	ws      *websocket.Conn
	seq     uint64               // own messages sent
	pending map[uint64]time.Time // own messages not yet back
	expect  uint64               // the room id due next; 0 before the first join
	lastGot time.Time            // when the last message came
	count   uint64               // echo: the count the next reply must say
}

func newClient(cfg *Config, st *stats, id int, echo bool) *client {
	c := &client{cfg: cfg, st: st, id: id, echo: echo, pending: map[uint64]time.Time{}}
	c.nick = "c" + strconv.Itoa(id)
	c.room = "r" + strconv.Itoa(id/cfg.RoomSize)
	return c
}

func (c *client) url() string {
	if c.echo {
		return c.cfg.URL + "/ws/echo"
	}
	return c.cfg.URL + "/ws?" + url.Values{"room": {c.room}, "nick": {c.nick}}.Encode()
}

// dial connects once, and for a chat client reads its "joined" line.
func (c *client) dial(ctx context.Context) error {
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second}
	ws, _, err := d.DialContext(ctx, c.url(), nil)
	if err != nil {
		return err
	}
	if !c.echo {
		if err := c.join(ws); err != nil {
			ws.Close()
			return err
		}
	}
	c.mu.Lock()
	c.ws = ws
	c.count = 1
	if c.lastGot.IsZero() { // after a reconnect the gap runs on: the outage is part of it
		c.lastGot = time.Now()
	}
	c.mu.Unlock()
	c.since.Store(time.Now().UnixNano())
	return nil
}

// join reads "joined ROOM LAST": the room's next message is LAST+1.
func (c *client) join(ws *websocket.Conn) error {
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, p, err := ws.ReadMessage()
	_ = ws.SetReadDeadline(time.Time{})
	if err != nil {
		return err
	}
	var roomName string
	var last uint64
	if _, err := fmt.Sscanf(string(p), "joined %s %d", &roomName, &last); err != nil || roomName != c.room {
		return fmt.Errorf("load: %s: want a joined line for %s, got %q", c.nick, c.room, p)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.expect == 0:
	case last+1 >= c.expect: // the same numbering: what was said meanwhile is missed
		c.st.missed.Add(int64(last + 1 - c.expect))
	default: // numbered from scratch (a restarted server): all of it is missed
		c.st.resets.Add(1)
		c.st.missed.Add(int64(last))
	}
	c.expect = last + 1
	return nil
}

// run keeps the client connected until ctx ends, reading on this
// goroutine; first, connected, is closed once the first dial is over.
func (c *client) run(ctx context.Context, first chan<- error) {
	attempt := 0
	for ctx.Err() == nil {
		err := c.dial(ctx)
		if first != nil {
			first <- err
			first = nil
			if err != nil {
				return
			}
		}
		if err != nil {
			c.st.dialFailures.Add(1)
			attempt++
			c.sleep(ctx, attempt)
			continue
		}
		attempt = 0
		c.read()
		c.since.Store(0)
		c.mu.Lock()
		c.ws.Close()
		c.ws = nil
		c.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		c.st.reconnect(time.Now())
		attempt++
		c.sleep(ctx, attempt)
	}
}

// sleep waits a jittered exponential backoff: a uniform delay up to
// MinBackoff × 2^(attempt-1), at most MaxBackoff (full jitter).
func (c *client) sleep(ctx context.Context, attempt int) {
	ceil := c.cfg.MinBackoff << min(attempt-1, 20)
	ceil = min(ceil, c.cfg.MaxBackoff)
	t := time.NewTimer(rand.N(ceil) + 1)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// read reads until the connection fails.
func (c *client) read() {
	c.mu.Lock()
	ws := c.ws
	c.mu.Unlock()
	for {
		_, p, err := ws.ReadMessage()
		if err != nil {
			return
		}
		now := time.Now()
		if c.echo {
			c.gotEcho(p)
		} else {
			c.got(p, now)
		}
	}
}

// got checks one room message "ID NICK TEXT".
func (c *client) got(p []byte, now time.Time) {
	f := strings.SplitN(string(p), " ", 3)
	id, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil || len(f) != 3 {
		c.st.reordered.Add(1) // not a message of the protocol: counted as out of order
		return
	}
	c.st.received.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.gap(now.Sub(c.lastGot))
	c.lastGot = now
	switch {
	case id == c.expect:
	case id > c.expect:
		c.st.missed.Add(int64(id - c.expect))
	case id+1 == c.expect:
		c.st.duplicates.Add(1) // the last one again: dropped, as a client that tracks ids does
		return
	default:
		c.st.reordered.Add(1)
		return
	}
	c.expect = id + 1
	var seq uint64
	var sentNs int64
	if _, err := fmt.Sscanf(f[2], "%d %d", &seq, &sentNs); err != nil {
		return
	}
	c.st.latency(now.Sub(time.Unix(0, sentNs)))
	if _, ok := c.pending[seq]; ok && f[1] == c.nick {
		delete(c.pending, seq)
		c.st.delivered.Add(1)
	}
}

// gotEcho checks one echo reply "N TEXT".
func (c *client) gotEcho(p []byte) {
	n, _, _ := strings.Cut(string(p), " ")
	c.mu.Lock()
	defer c.mu.Unlock()
	if n == strconv.FormatUint(c.count, 10) {
		c.st.echoOK.Add(1)
	} else {
		c.st.echoBad.Add(1)
	}
	c.count++
}

// send sends the client's next message, if it is connected.
func (c *client) send() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ws == nil {
		c.st.unsent.Add(1)
		return
	}
	c.seq++
	now := time.Now()
	text := fmt.Appendf(nil, "%d %d", c.seq, now.UnixNano())
	_ = c.ws.SetWriteDeadline(now.Add(10 * time.Second))
	if err := c.ws.WriteMessage(websocket.TextMessage, text); err != nil {
		c.ws.NetConn().Close() // the reader sees it and redials
		return
	}
	if c.echo {
		c.st.echoSent.Add(1)
		return
	}
	c.st.sent.Add(1)
	c.pending[c.seq] = now
}

// sendEvery sends every d, from a random phase, until ctx ends.
func (c *client) sendEvery(ctx context.Context, d time.Duration) {
	t := time.NewTimer(rand.N(d))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.send()
			t.Reset(d)
		}
	}
}

// unechoed is how many own sends never came back.
func (c *client) unechoed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}
