package handoff

import (
	"fmt"
	"net"
	"syscall"
	"time"
)

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
