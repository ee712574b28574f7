package handoff

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"
)

// testHook, when set by a test, is called at each step of a takeover, so
// that the test can make the new process fail exactly there.
var testHook func(step string, ch *channel)

func hook(step string, ch *channel) {
	if testHook != nil {
		testHook(step, ch)
	}
}

// adopted is a connection received from the old process, not yet served.
type adopted struct {
	nc  net.Conn
	rec record
}

// childSession is the new process's end of one handoff.
type childSession struct {
	u     *Upgrader
	ch    *channel
	conns []adopted
}

// takeOver runs the new process's side. Until COMMIT it never reads or
// writes a received connection, so that the old process can resume every
// one of them exactly where it stopped.
func (u *Upgrader) takeOver(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, u.opts.UpgradeTimeout)
	defer cancel()
	hook("start", nil)
	c, err := dialChannel(u.parentSock)
	if err != nil {
		return err
	}
	if err := checkParent(c); err != nil {
		c.Close()
		return err
	}
	s := &childSession{u: u, ch: newChannel(c)}
	defer s.ch.close()
	if dl, ok := ctx.Deadline(); ok {
		s.ch.setDeadline(dl)
	}
	defer context.AfterFunc(ctx, func() { s.ch.setDeadline(aLongTimeAgo) })()
	hook("connected", s.ch)
	if err := s.receive(); err != nil {
		s.closeConns()
		if !errors.Is(err, ErrRejected) {
			s.ch.setDeadline(time.Now().Add(100 * time.Millisecond))
			_ = s.ch.send(frameAbort, abortPayload(err), nil)
		}
		return err
	}
	return s.commit()
}

// receive runs the handoff up to READY.
func (s *childSession) receive() error {
	if err := s.ch.send(frameHello, ownHello(s.u.opts.Version).encode(), nil); err != nil {
		return err
	}
	if err := s.hello(); err != nil {
		return err
	}
	hook("hello", s.ch)
	n, err := s.plan()
	if err != nil {
		return err
	}
	if err := s.receiveConns(n); err != nil {
		return err
	}
	hook("conns", s.ch)
	stateBytes, err := s.loadState()
	if err != nil {
		return err
	}
	hook("state", s.ch)
	ready := binary.BigEndian.AppendUint32(nil, uint32(len(s.conns)))
	ready = binary.BigEndian.AppendUint64(ready, stateBytes)
	return s.ch.send(frameReady, ready, nil)
}

func (s *childSession) hello() error {
	typ, p, err := recvNoFds(s.ch)
	if err != nil {
		return fmt.Errorf("handoff: waiting for HELLO: %w", err)
	}
	if typ != frameHello {
		return protoErr("expected HELLO, got %s", frameName(typ))
	}
	h, err := decodeHello(p)
	if err != nil {
		return err
	}
	if h.version != protocolVersion {
		return protoErr("old process speaks protocol version %d, this one %d", h.version, protocolVersion)
	}
	s.u.log.Info("handoff: taking over", "from", h.pid, "from_version", h.appVersion)
	return nil
}

// plan reads how many connections come and makes room for them.
func (s *childSession) plan() (int, error) {
	typ, p, err := recvNoFds(s.ch)
	if err != nil {
		return 0, err
	}
	if typ != framePlan {
		return 0, protoErr("expected PLAN, got %s", frameName(typ))
	}
	n, err := decodeU32(p, "PLAN")
	if err != nil {
		return 0, err
	}
	if n > 0 && s.u.opts.ListenersOnly {
		return 0, fmt.Errorf("handoff: %d connections offered but Options.ListenersOnly is set", n)
	}
	if n > 0 && s.u.opts.Resume == nil {
		return 0, fmt.Errorf("handoff: %d connections offered but Options.Resume is not set", n)
	}
	return int(n), growFdTable(int(n))
}

func (s *childSession) receiveConns(n int) error {
	for seq := uint32(0); len(s.conns) < n; seq++ {
		typ, p, fds, err := s.ch.recv()
		if err != nil {
			return err
		}
		if err := s.adoptBatch(seq, typ, p, fds); err != nil {
			return err
		}
		if seq == 0 {
			hook("first-batch", s.ch)
		}
		progress := binary.BigEndian.AppendUint32(nil, seq)
		progress = binary.BigEndian.AppendUint32(progress, uint32(len(s.conns)))
		if err := s.ch.send(frameProgress, progress, nil); err != nil {
			return err
		}
	}
	if len(s.conns) != n {
		return protoErr("%d connections received, PLAN said %d", len(s.conns), n)
	}
	return nil
}

// adoptBatch turns one CONNS frame into connections; it owns fds.
func (s *childSession) adoptBatch(seq uint32, typ byte, p []byte, fds []int) error {
	if typ != frameConns {
		closeFds(fds)
		return protoErr("expected CONNS, got %s", frameName(typ))
	}
	got, recs, err := decodeConns(p)
	if err == nil && (got != seq || len(recs) != len(fds) || len(recs) == 0) {
		err = protoErr("CONNS %d with %d records and %d fds, expected frame %d", got, len(recs), len(fds), seq)
	}
	if err != nil {
		closeFds(fds)
		return err
	}
	for i, fd := range fds {
		nc, err := fdConn(fd)
		if err != nil {
			closeFds(fds[i+1:])
			return fmt.Errorf("handoff: adopt connection %d: %w", recs[i].id, err)
		}
		s.conns = append(s.conns, adopted{nc: nc, rec: recs[i]})
	}
	return nil
}

// loadState hands the state stream to the application and checks it whole.
// With ListenersOnly the stream must be empty.
func (s *childSession) loadState() (uint64, error) {
	r := newStateReader(s.ch)
	if load := s.u.opts.LoadState; load != nil && !s.u.opts.ListenersOnly {
		if err := callSafely("load state", func() error { return load(r) }); err != nil {
			return 0, err
		}
	}
	if err := r.drain(); err != nil {
		return 0, err
	}
	if s.u.opts.ListenersOnly && r.total > 0 {
		return 0, fmt.Errorf("handoff: %d bytes of state offered but Options.ListenersOnly is set", r.total)
	}
	return r.total, nil
}

// commit waits for the old process's word, tells tableflip (the point of no
// return: the old process now exits) and starts serving.
func (s *childSession) commit() error {
	typ, _, err := recvNoFds(s.ch)
	if err == nil && typ != frameCommit {
		err = protoErr("expected COMMIT, got %s", frameName(typ))
	}
	if err != nil {
		s.closeConns()
		return fmt.Errorf("handoff: waiting for COMMIT: %w", err)
	}
	hook("commit", s.ch)
	if err := s.u.tf.Ready(); err != nil {
		s.closeConns()
		return fmt.Errorf("handoff: tell the old process: %w", err)
	}
	for _, a := range s.conns {
		c := s.u.reg.track(a.nc, a.rec.kind, a.rec.unread)
		go s.u.opts.Resume(c, a.rec.state)
	}
	s.u.log.Info("handoff: took over", "conns", len(s.conns))
	return nil
}

// closeConns drops this process's copies of connections it will not serve;
// the old process still holds them, so no peer notices.
func (s *childSession) closeConns() {
	for _, a := range s.conns {
		_ = a.nc.Close()
	}
	s.conns = nil
}
