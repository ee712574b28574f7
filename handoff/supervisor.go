package handoff

import (
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Supervisor is the service manager a process runs under, as the Upgrader
// sees it: the Upgrader tells it where the process stands, adopts the
// sockets it passed at start, and may ask it to keep a copy of every socket
// so that the sockets outlive a crash of the process. Package
// github.com/handoff-dev/handoff/systemd implements it for systemd.
//
// The Upgrader calls every method from whatever goroutine an event happens
// on (Keep from the accepting one, Release from the closing one); they must
// be safe for concurrent use and return quickly. None of them may call the
// Upgrader back but for Status.
type Supervisor interface {
	// Sockets returns what the supervisor passed this process at start:
	// listening sockets (socket activation, or kept by Keep before a crash)
	// and connections kept by Keep. New calls it once, in a first process
	// only: a process started by an upgrade gets its sockets from the old
	// process. The Upgrader owns the files from then on.
	Sockets() ([]SupervisedSocket, error)
	// Keep asks the supervisor to hold a copy of a socket this process has
	// just made (a listener) or accepted (a connection), under a name
	// derived from the socket itself and kind, so that every process of
	// the chain derives the same one. The fd behind s is borrowed for the
	// call only. An error is logged and the socket is served anyway.
	Keep(s syscall.RawConn, kind string, listening bool) error
	// Release drops the supervisor's copy of a socket the application is
	// closing. It is called before this process's copy is closed: while
	// the supervisor holds one, closing ours closes nothing for the peer.
	// A socket handed to the next process is not released.
	Release(s syscall.RawConn, kind string, listening bool) error
	// Notify tells the supervisor what the process is doing.
	Notify(n Notice)
}

// SupervisedSocket is a socket a supervisor passed at start.
type SupervisedSocket struct {
	File      *os.File
	Listening bool
	// Kind is the kind given to Keep for a socket kept by this library:
	// Listen's "network addr" key for a listener, the Conn's kind for a
	// connection. Empty for a socket the supervisor made (socket
	// activation): Listen adopts those by address.
	Kind string
}

// Notice is what a process tells its Supervisor.
type Notice struct {
	Event NoticeEvent
	// Status is the process as Status reports it when the notice is sent.
	Status Status
	// From is, for NoticeServing in a process started by an upgrade, the
	// pid of the old process; 0 in a first process.
	From int
	// To is, for NoticeCommitting, the pid of the process taking over.
	To int
	// Result is, for NoticeRolledBack, how the upgrade ended.
	Result *UpgradeResult
}

// NoticeEvent is a moment of a process's life.
type NoticeEvent int

const (
	// NoticeServing: Ready has made this process the one that serves: a
	// first process, or one that took over (sent after the old process
	// committed, before it is told that this one serves, so before it
	// exits).
	NoticeServing NoticeEvent = iota + 1
	// NoticeUpgrading: this process has started an upgrade.
	NoticeUpgrading
	// NoticeCommitting: this process has decided to hand everything to
	// Notice.To and is about to tell it so; it exits soon after.
	NoticeCommitting
	// NoticeRolledBack: the upgrade failed; this process serves on.
	NoticeRolledBack
	// NoticeStopping: Stop was called on a process that serves.
	NoticeStopping
	// NoticeStatus: nothing happened, but Status has moved on (its
	// connections, say); sent every StatusInterval while the process
	// serves.
	NoticeStatus
)

// StatusInterval is how often a serving process sends NoticeStatus.
const StatusInterval = 10 * time.Second

func (e NoticeEvent) String() string {
	switch e {
	case NoticeServing:
		return "serving"
	case NoticeUpgrading:
		return "upgrading"
	case NoticeCommitting:
		return "committing"
	case NoticeRolledBack:
		return PhaseRolledBack
	case NoticeStopping:
		return "stopping"
	case NoticeStatus:
		return "status"
	}
	return "unknown"
}

// reportStatus sends NoticeStatus every StatusInterval while this process
// serves, from the moment it serves until it exits or stops.
func (u *core) reportStatus() {
	if u.opts.Supervisor == nil {
		return
	}
	go func() {
		t := time.NewTicker(StatusInterval)
		defer t.Stop()
		for {
			select {
			case <-u.exitC:
				return
			case <-t.C:
			}
			if u.m.serving() {
				u.notify(Notice{Event: NoticeStatus})
			}
		}
	}()
}

// notify sends a notice to the supervisor, if there is one.
func (u *core) notify(n Notice) {
	if u.opts.Supervisor == nil {
		return
	}
	n.Status = u.status()
	u.opts.Supervisor.Notify(n)
}

// rawConn returns the syscall.RawConn of a socket, or nil.
func rawConn(v any) syscall.RawConn {
	s, ok := v.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := s.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// keep asks the supervisor to hold a copy of a new socket.
func (u *core) keep(v any, kind string, listening bool) {
	u.toSupervisor(Supervisor.Keep, v, kind, listening, "handoff: the supervisor does not keep a socket")
}

// release asks the supervisor to drop its copy of a socket about to be
// closed.
func (u *core) release(v any, kind string, listening bool) {
	u.toSupervisor(Supervisor.Release, v, kind, listening,
		"handoff: the supervisor may still hold a closed socket open")
}

// toSupervisor calls op (Keep or Release) for socket v, if there is a
// supervisor, and logs failure if it fails: the socket is served anyway.
func (u *core) toSupervisor(op func(Supervisor, syscall.RawConn, string, bool) error,
	v any, kind string, listening bool, failure string) {
	sup := u.opts.Supervisor
	if sup == nil {
		return
	}
	rc := rawConn(v)
	if rc == nil {
		return
	}
	if err := op(sup, rc, kind, listening); err != nil {
		u.log.Warn(failure, "kind", kind, "err", err)
	}
}

// supervised holds the sockets a supervisor passed a first process until
// Listen adopts the listeners and Ready the connections.
type supervised struct {
	mu        sync.Mutex
	listeners []supervisedListener
	conns     []SupervisedSocket
}

type supervisedListener struct {
	ln   net.Listener
	kind string // set if this library kept it: its key
}

// takeSupervised takes the sockets the supervisor passed a first process.
func (u *core) takeSupervised() error {
	if u.opts.Supervisor == nil || u.parent != nil {
		return nil
	}
	socks, err := u.opts.Supervisor.Sockets()
	if err != nil {
		return fmt.Errorf("handoff: sockets passed by the supervisor: %w", err)
	}
	s := &supervised{}
	for _, ss := range socks {
		if !ss.Listening {
			s.conns = append(s.conns, ss)
			continue
		}
		ln, err := net.FileListener(ss.File)
		if err != nil {
			u.release(ss.File, ss.Kind, true)
			u.log.Warn("handoff: a socket passed by the supervisor is not a listener", "name", ss.File.Name(), "err", err)
		} else {
			s.listeners = append(s.listeners, supervisedListener{ln: ln, kind: ss.Kind})
		}
		_ = ss.File.Close()
	}
	u.sup = s
	if len(socks) > 0 {
		u.log.Info("handoff: sockets passed by the supervisor", "listeners", len(s.listeners), "conns", len(s.conns))
	}
	return nil
}

// takeListener returns the listener the supervisor passed for network and
// addr: the one this library kept under that key, else one it made (socket
// activation) bound to that address. The caller owns it.
func (s *supervised) takeListener(network, addr string) (net.Listener, bool) {
	if s == nil {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := listenerKey(network, addr)
	for pass := 0; pass < 2; pass++ {
		for i, l := range s.listeners {
			if pass == 0 && l.kind == key || pass == 1 && l.kind == "" && sameAddr(l.ln.Addr(), network, addr) {
				s.listeners = append(s.listeners[:i], s.listeners[i+1:]...)
				return l.ln, l.kind != ""
			}
		}
	}
	return nil, false
}

// sameAddr reports whether a listener bound to a serves Listen(network, addr).
func sameAddr(a net.Addr, network, addr string) bool {
	switch network {
	case "tcp", "tcp4", "tcp6":
		want, err := net.ResolveTCPAddr(network, addr)
		got, ok := a.(*net.TCPAddr)
		if err != nil || !ok || got.Port != want.Port {
			return false
		}
		if len(want.IP) == 0 || want.IP.IsUnspecified() {
			return len(got.IP) == 0 || got.IP.IsUnspecified()
		}
		return want.IP.Equal(got.IP)
	case "unix":
		got, ok := a.(*net.UnixAddr)
		return ok && got.Name == addr
	}
	return false
}

// settleSupervised ends what the supervisor passed once Ready has run:
// connections it kept are resumed (their handler state did not survive
// the crash: Resume gets nil), and sockets nobody asked for are dropped.
func (u *core) settleSupervised() {
	s := u.sup
	if s == nil {
		return
	}
	s.mu.Lock()
	lns, conns := s.listeners, s.conns
	s.listeners, s.conns = nil, nil
	s.mu.Unlock()
	for _, l := range lns {
		if l.kind != "" {
			u.release(l.ln, l.kind, true)
		}
		u.log.Warn("handoff: no Listen for a socket the supervisor passed; closed", "addr", l.ln.Addr().String(), "kind", l.kind)
		_ = l.ln.Close()
	}
	resumed := 0
	for _, ss := range conns {
		if u.resumeKept(ss) {
			resumed++
		}
	}
	if len(conns) > 0 {
		u.log.Info("handoff: resumed the connections the supervisor kept", "conns", resumed, "dropped", len(conns)-resumed)
	}
}

// resumeKept serves a connection the supervisor kept across a crash, or
// drops it (released first, or its peer would never see it close).
func (u *core) resumeKept(ss SupervisedSocket) bool {
	defer ss.File.Close()
	nc, err := net.FileConn(ss.File)
	if err != nil || ss.Kind == "" || u.opts.Resume == nil || !u.opts.Mode.servesConns() {
		u.release(ss.File, ss.Kind, false)
		u.log.Warn("handoff: a connection the supervisor kept is dropped", "kind", ss.Kind, "err", err)
		if nc != nil {
			_ = nc.Close()
		}
		return false
	}
	c := u.reg.track(nc, ss.Kind, nil)
	go u.opts.Resume(c, nil)
	return true
}
