package server

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/wshandoff"
)

// historyLen is how many of its last messages a room keeps, for a member
// that joined the old process after its snapshot and arrives here later.
const historyLen = 1024

// msg is one numbered message of a room.
type msg struct {
	ID   uint64 `json:"id"`
	From string `json:"from"`
	Text string `json:"text"`
}

func (m msg) line() []byte { return fmt.Appendf(nil, "%d %s %s", m.ID, m.From, m.Text) }

// Hub holds the rooms; every field of every room and member is guarded by mu.
type Hub struct {
	log    *slog.Logger
	ws     wshandoff.Upgrader
	count  func(kind string) // counts messages received, by kind
	mu     sync.Mutex
	rooms  map[string]*room
	frozen bool // an upgrade took a state: nothing is numbered until it ends
	up     *handoff.Upgrader
	// askWait holds the writers waiting for their connection's park to
	// end; nil while none does (recheck runs while it is not).
	askWait map[*member]bool
}

type room struct {
	name    string
	last    uint64
	members map[uint64]*member
	history []msg // the last historyLen messages numbered here
}

// member is a client in a room. conn is nil while it has not arrived
// (loaded from the old process's snapshot; its connection is moving).
type member struct {
	key        uint64
	nick, room string
	conn       *websocket.Conn
	wake       sync.Cond // on Hub.mu: queue grew, or gone
	queue      []msg     // numbered, not yet written
	last       uint64    // the id of the last message written
	outbox     []string  // said while frozen
	inflight   bool      // the writer is in WriteMessage, of queue[0]
	written    uint64    // wshandoff.MessagesWritten before that write
	gone       bool      // closed or handed over: the writer ends
}

// New returns an empty hub; count, if set, is called for every message
// a client sends, with its kind (chat or echo).
func New(log *slog.Logger, count func(kind string)) *Hub {
	if count == nil {
		count = func(string) {}
	}
	return &Hub{log: log, count: count, rooms: map[string]*room{}}
}

func (h *Hub) roomLocked(name string) *room {
	r := h.rooms[name]
	if r == nil {
		r = &room{name: name, members: map[uint64]*member{}}
		h.rooms[name] = r
	}
	return r
}

// addLocked puts a member in its room, detached.
func (h *Hub) addLocked(key uint64, nick, roomName string) *member {
	m := &member{key: key, nick: nick, room: roomName}
	m.wake.L = &h.mu
	h.roomLocked(roomName).members[key] = m
	return m
}

// join adds a new member and returns it with the id of its room's last
// message: the first it will be written is the next.
func (h *Hub) join(nick, roomName string) (*member, uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.roomLocked(roomName)
	key := rand.Uint64() | 1 // never 0
	for r.members[key] != nil {
		key = rand.Uint64() | 1
	}
	m := h.addLocked(key, nick, roomName)
	m.last = r.last
	return m, r.last
}

// sayLocked numbers text in m's room and queues it for every member; while
// frozen it waits in m's outbox instead.
func (h *Hub) sayLocked(m *member, text string) {
	if h.frozen {
		m.outbox = append(m.outbox, text)
		return
	}
	r := h.roomLocked(m.room)
	r.last++
	ms := msg{ID: r.last, From: m.nick, Text: text}
	if len(r.history) == historyLen {
		r.history = append(r.history[:0], r.history[1:]...)
	}
	r.history = append(r.history, ms)
	for _, o := range r.members {
		o.queue = append(o.queue, ms)
		o.wake.Signal()
	}
}

// leaveLocked drops m from its room here: its client left, or it moved.
func (h *Hub) leaveLocked(m *member) {
	r := h.rooms[m.room]
	if r != nil && r.members[m.key] == m {
		// The room stays, empty: its numbering goes on for whoever joins
		// or arrives late (a member moving when dropDetached ran).
		delete(r.members, m.key)
	}
	m.gone = true
	m.wake.Broadcast()
}

// Attach gives the hub the process's upgrader, before Ready: an upgrade
// freezes the rooms until it ends.
func (h *Hub) Attach(up *handoff.Upgrader) { h.up = up }

// freezeLocked freezes the rooms as an upgrade takes the first state
// (the snapshot in rolling mode, the first connection's park in full
// mode: the others are still served meanwhile), until the upgrade ends.
func (h *Hub) freezeLocked() {
	if !h.frozen {
		h.frozen = true
		go h.thawWhenDone()
	}
}

// Save is handoff.Options.SaveState: the rooms, their last ids and their
// members.
func (h *Hub) Save(w io.Writer) error {
	h.mu.Lock()
	h.freezeLocked()
	h.mu.Unlock()
	return states.Save(w, snapshotOf(h), 1)
}

// snapshotOf is the hub's rooms and members.
func snapshotOf(h *Hub) roomsV1 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var st roomsV1
	for _, r := range h.rooms {
		rs := roomV1{Name: r.name, Last: r.last}
		for _, m := range r.members {
			rs.Members = append(rs.Members, memberV1{Key: m.key, Nick: m.nick})
		}
		st.Rooms = append(st.Rooms, rs)
	}
	return st
}

// thawWhenDone waits for the upgrade to end: after a handover the rooms
// stay frozen (what waits moves with each connection); if this process
// serves on, what its clients said meanwhile is said now.
func (h *Hub) thawWhenDone() {
	up := h.up
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-up.Exit():
			if up.Status().Phase == handoff.ProcessHandedOver {
				return
			}
		case <-t.C:
		}
		if up.Status().Phase == handoff.ProcessServing {
			h.thaw()
			return
		}
	}
}

func (h *Hub) thaw() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.frozen = false
	for _, r := range h.rooms {
		for _, m := range r.members {
			out := m.outbox
			m.outbox = nil
			for _, t := range out {
				h.sayLocked(m, t)
			}
		}
	}
	h.log.Info("rooms thawed: the upgrade did not hand over")
}

// Load is handoff.Options.LoadState: the old process's rooms, with every
// member detached until its connection arrives. Members that never do
// (their client left during the move) are dropped after forget.
func (h *Hub) Load(r io.Reader, forget time.Duration) error {
	v, _, err := states.Load(r, schema)
	if err != nil {
		return err
	}
	st := v.(roomsV1)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, rs := range st.Rooms {
		rm := h.roomLocked(rs.Name)
		rm.last = rs.Last
		for _, ms := range rs.Members {
			h.addLocked(ms.Key, ms.Nick, rs.Name)
		}
	}
	time.AfterFunc(forget, h.dropDetached)
	return nil
}

// dropDetached drops the members loaded from the snapshot whose
// connection never arrived.
func (h *Hub) dropDetached() {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.rooms {
		for _, m := range r.members {
			if m.conn == nil && !m.gone {
				h.leaveLocked(m)
				n++
			}
		}
	}
	if n > 0 {
		h.log.Warn("dropped members whose connection never arrived", "members", n)
	}
}

// Members returns how many members the rooms have, and how many rooms.
func (h *Hub) Members() (members, rooms int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.rooms {
		members += len(r.members)
	}
	return members, len(h.rooms)
}

// validName: room names and nicknames are one word of printable ASCII.
func validName(s string) bool {
	return s != "" && len(s) <= 64 && !strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r > '~' })
}

// CloseAll closes every member's connection with a close frame of code
// (1001 going away, 1012 service restart) and returns how many there were.
func (h *Hub) CloseAll(code int) int {
	h.mu.Lock()
	var conns []*websocket.Conn
	for _, r := range h.rooms {
		for _, m := range r.members {
			if m.conn != nil && !m.gone {
				conns = append(conns, m.conn)
			}
		}
	}
	h.mu.Unlock()
	deadline := time.Now().Add(time.Second)
	for _, ws := range conns {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), deadline)
		ws.NetConn().Close()
	}
	return len(conns)
}
