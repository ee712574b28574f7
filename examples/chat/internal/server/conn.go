package server

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/websocket"

	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/wshandoff"
)

// writeTimeout bounds each write, so that a client that does not read
// cannot hold its connection's park (and a rolling move) for long.
const writeTimeout = 10 * time.Second

// ServeChat is GET /ws?room=R&nick=N.
func (h *Hub) ServeChat(w http.ResponseWriter, r *http.Request) {
	roomName, nick := r.URL.Query().Get("room"), r.URL.Query().Get("nick")
	if !validName(roomName) || !validName(nick) {
		http.Error(w, "room and nick: one word of printable ASCII each, at most 64 bytes", http.StatusBadRequest)
		return
	}
	ws, err := h.ws.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	m, last := h.join(nick, roomName)
	_ = ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := ws.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, "joined %s %d", roomName, last)); err != nil {
		h.mu.Lock()
		h.leaveLocked(m)
		h.mu.Unlock()
		ws.Close()
		return
	}
	h.serveMember(m, ws)
}

// ServeEcho is GET /ws/echo.
func (h *Hub) ServeEcho(w http.ResponseWriter, r *http.Request) {
	ws, err := h.ws.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	h.serveEcho(ws, 0)
}

// Resume is handoff.Options.Resume for the WebSocket connections: IsState
// tells them from the HTTP ones.
func (h *Hub) Resume(c *handoff.Conn, state []byte) {
	ws, app, err := h.ws.Resume(c, state)
	if err != nil {
		h.log.Error("closing a moved connection", "err", err)
		c.Close()
		return
	}
	st, err := decodeConnState(app)
	if err != nil {
		h.log.Error("closing a moved connection", "err", err)
		ws.Close()
		return
	}
	if st.Kind == kindEcho {
		h.serveEcho(ws, st.Count)
		return
	}
	h.serveMember(h.arrive(st), ws)
}

// IsState reports whether a moved connection's state is a WebSocket's.
func IsState(state []byte) bool { return wshandoff.IsWebSocket(state) }

// arrive attaches a moved member: what it carried goes before what was
// numbered here meanwhile, which is newer, and what it said while the
// old process was frozen is said now.
func (h *Hub) arrive(st connState) *member {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.roomLocked(st.Room)
	m := r.members[st.Key]
	if m == nil || m.conn != nil { // joined after the snapshot: catch up from the history
		m = h.addLocked(st.Key, st.Nick, st.Room)
		seen := st.Last
		if n := len(st.Queue); n > 0 {
			seen = st.Queue[n-1].ID
		}
		for _, ms := range r.history {
			if ms.ID > seen {
				m.queue = append(m.queue, ms)
			}
		}
	}
	m.queue = append(st.Queue, m.queue...)
	m.last = st.Last
	for _, t := range st.Outbox {
		h.sayLocked(m, t)
	}
	return m
}

// serveMember reads what m's client says until it leaves or moves, and
// writes its queue on a goroutine of its own.
func (h *Hub) serveMember(m *member, ws *websocket.Conn) {
	h.mu.Lock()
	m.conn = ws
	h.mu.Unlock()
	wshandoff.OnPark(ws, func() []byte { return h.park(m) })
	go h.writeLoop(m, ws)
	for {
		typ, p, err := ws.ReadMessage()
		if err != nil {
			break
		}
		if typ != websocket.TextMessage {
			continue
		}
		h.count(kindChat)
		h.mu.Lock()
		h.sayLocked(m, string(p))
		h.mu.Unlock()
	}
	h.mu.Lock()
	h.leaveLocked(m)
	h.mu.Unlock()
	ws.Close() // after a handover it closes nothing
}

// asked reports whether an upgrade asks ws to park.
func asked(ws *websocket.Conn) bool {
	c, ok := ws.NetConn().(interface{ Handoff() *handoff.Conn })
	return ok && c.Handoff().Asked()
}

// writeLoop writes m's queue in order. It begins no write while an
// upgrade asks the connection to park, so that the park sees what was
// written; the message it writes is dropped from the queue only once
// written.
func (h *Hub) writeLoop(m *member, ws *websocket.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for {
		for !m.gone && len(m.queue) == 0 {
			m.wake.Wait()
		}
		if m.gone {
			return
		}
		if asked(ws) {
			h.awaitUnaskedLocked(m)
			continue
		}
		next := m.queue[0]
		m.inflight, m.written = true, wshandoff.MessagesWritten(ws)
		h.mu.Unlock()
		_ = ws.SetWriteDeadline(time.Now().Add(writeTimeout))
		err := ws.WriteMessage(websocket.TextMessage, next.line())
		h.mu.Lock()
		m.inflight = false
		if err != nil {
			if !errors.Is(err, handoff.ErrHandedOver) {
				ws.NetConn().Close() // the reader sees it and leaves
			}
			return
		}
		m.queue = m.queue[1:]
		m.last = next.ID
	}
}

// awaitUnaskedLocked waits for a wake of m: a message queued, its
// connection gone, or the next tick of the hub's recheck, which runs
// while writers wait for their connection's park to end.
func (h *Hub) awaitUnaskedLocked(m *member) {
	if h.askWait == nil {
		h.askWait = map[*member]bool{}
		go h.recheck()
	}
	h.askWait[m] = true
	m.wake.Wait()
}

// recheck wakes the writers that wait for a park to end, every few
// milliseconds, until none waits: a park that rolls back says so to
// nobody but the reader.
func (h *Hub) recheck() {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for range t.C {
		h.mu.Lock()
		for m := range h.askWait {
			m.wake.Signal()
		}
		done := len(h.askWait) == 0
		if done {
			h.askWait = nil
		}
		clear(h.askWait)
		h.mu.Unlock()
		if done {
			return
		}
	}
}

// park is m's state at an upgrade, called inside its ReadMessage.
func (h *Hub) park(m *member) []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.freezeLocked()
	queue, last := m.queue, m.last
	// The message in flight either was written before the park (the
	// count moved: it is not to be sent again) or waits at wshandoff's
	// gate, unsent, and moves in the queue.
	if m.inflight && wshandoff.MessagesWritten(m.conn) > m.written {
		queue, last = queue[1:], queue[0].ID
	}
	return connState{Kind: kindChat, Key: m.key, Nick: m.nick, Room: m.room, Last: last,
		Queue: queue, Outbox: m.outbox}.encode()
}

// serveEcho answers each text message T with "N T"; n, the count so
// far, moves with the connection.
func (h *Hub) serveEcho(ws *websocket.Conn, n uint64) {
	wshandoff.OnPark(ws, func() []byte { return connState{Kind: kindEcho, Count: n}.encode() })
	for {
		typ, p, err := ws.ReadMessage()
		if err != nil {
			break
		}
		if typ != websocket.TextMessage {
			continue
		}
		h.count(kindEcho)
		n++
		_ = ws.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := ws.WriteMessage(websocket.TextMessage, append(strconv.AppendUint(nil, n, 10), append([]byte(" "), p...)...)); err != nil {
			break
		}
	}
	ws.Close()
}
