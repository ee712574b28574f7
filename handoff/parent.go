package handoff

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// sendWindow is how many CONNS frames may wait for PROGRESS. Unreceived
// fds count against the sender's limits (ETOOMANYREFS, shared/LIMITS.md);
// 8 frames hold at most 2024.
const sendWindow = 8

// upgrade runs the old process's side of an upgrade. The caller holds
// u.busy; upgrade releases it once tableflip's part has ended too.
func (u *Upgrader) upgrade(ctx context.Context) error {
	began := time.Now()
	ctx, cancel := context.WithTimeout(ctx, u.opts.UpgradeTimeout)
	defer cancel()
	if err := u.waitForParent(ctx); err != nil {
		u.busy.Unlock()
		return err
	}
	ln, cleanup, err := listenChannel(u.opts.SocketDir)
	if err != nil {
		u.busy.Unlock()
		return err
	}
	defer cleanup()
	os.Setenv(envSocket, ln.Addr().String())
	f := startFlip(u.tf)

	s, err := u.acceptChild(ctx, ln, f, began)
	os.Unsetenv(envSocket)
	if err != nil {
		u.endFailed(f)
		return err
	}
	if err := s.run(ctx); err != nil {
		s.abort(err)
		u.reg.resumeAll()
		u.endFailed(f)
		return err
	}
	return u.finishUpgrade(s, f)
}

// flip is tableflip's part of an upgrade: it starts the new process and
// ends when that process is ready, has exited, or was killed on timeout.
type flip struct {
	done chan struct{}
	err  error
}

func startFlip(tf interface{ Upgrade() error }) *flip {
	f := &flip{done: make(chan struct{})}
	go func() {
		defer close(f.done)
		for range 100 {
			f.err = tf.Upgrade()
			// tableflip notes its parent's exit in its own goroutine, a
			// moment after WaitForParent returns.
			if f.err == nil || f.err.Error() != "parent hasn't exited" {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return f
}

// waitForParent lets an upgrade that follows another closely wait until
// the previous process is gone: tableflip refuses to upgrade before that.
func (u *Upgrader) waitForParent(ctx context.Context) error {
	if !u.tf.HasParent() {
		return nil
	}
	err := u.tf.WaitForParent(ctx)
	if ctx.Err() != nil {
		return fmt.Errorf("handoff: previous process has not exited: %w", ctx.Err())
	}
	if err != nil {
		u.log.Warn("handoff: previous process exited uncleanly", "err", err)
	}
	return nil
}

// finishUpgrade waits for the new process's tableflip readiness, the
// point of no return, then gives every connection away, or with
// ListenersOnly stops accepting and keeps the connections.
func (u *Upgrader) finishUpgrade(s *parentSession, f *flip) error {
	<-f.done // bounded by tableflip's own UpgradeTimeout
	s.stats.Commit = time.Since(s.committed)
	if f.err != nil {
		s.ch.close()
		killProcess(s.pid)
		u.reg.resumeAll()
		u.busy.Unlock()
		return fmt.Errorf("handoff: new process %d failed after commit, before it served: %w", s.pid, f.err)
	}
	if u.opts.ListenersOnly {
		kept := u.reg.releaseListeners()
		s.ch.close()
		u.log.Info("handoff: handed over the listeners; connections stay", "to", s.pid, "conns_kept", kept,
			"start", s.stats.Start, "adopt", s.stats.Adopt, "commit", s.stats.Commit)
		u.setStats(s.stats)
		u.busy.Unlock() // lets watchExit close Exit
		return nil
	}
	released := time.Now()
	u.reg.handover(s.parked)
	s.ch.close()
	s.stats.Release = time.Since(released)
	u.log.Info("handoff: handed over", "to", s.pid, "conns", s.stats.Conns, "early", s.stats.Early,
		"start", s.stats.Start, "fds", s.stats.Fds, "park", s.stats.Park, "parked", s.stats.Parked,
		"state", s.stats.State, "adopt", s.stats.Adopt,
		"commit", s.stats.Commit, "pause", s.stats.Pause(), "release", s.stats.Release)
	u.setStats(s.stats)
	u.busy.Unlock() // lets watchExit close Exit
	return nil
}

// endFailed waits until tableflip has seen the failed new process go (the
// connections already carry on), so that the next upgrade can start.
func (u *Upgrader) endFailed(f *flip) {
	<-f.done
	if f.err == nil {
		u.log.Error("handoff: the new process reported ready without taking over; was it built with this library?")
	}
	u.busy.Unlock()
}

// acceptChild waits for the new process to connect. Connections from any
// other process are refused and logged; the wait goes on.
func (u *Upgrader) acceptChild(ctx context.Context, ln *net.UnixListener, f *flip, began time.Time) (*parentSession, error) {
	got := make(chan *parentSession, 1)
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			pid, err := checkChild(c)
			if err != nil {
				u.log.Warn("handoff: refused a connection to the handoff socket", "err", err)
				c.Close()
				continue
			}
			got <- &parentSession{u: u, ch: newChannel(c), pid: pid, began: began}
			return
		}
	}()
	select {
	case s := <-got:
		return s, nil
	case <-f.done:
		ln.Close()
		err := f.err
		if err == nil {
			err = errors.New("it reported ready without connecting")
		}
		return nil, fmt.Errorf("handoff: new process: %w", err)
	case <-ctx.Done():
		ln.Close()
		return nil, fmt.Errorf("handoff: new process did not connect: %w", ctx.Err())
	}
}

// UpgradeStats times the phases of the last upgrade, as the old process saw
// them. The connections are paused from the start of Park to the end of
// Commit: the new process resumes them as it reports ready. Fds, before
// the park, costs the clients nothing.
type UpgradeStats struct {
	Conns   int           // connections handed over
	Early   int           // of them, sent before the park (the others were accepted since)
	Start   time.Duration // from the upgrade's start to the new process's HELLO
	Fds     time.Duration // sending every running connection's fd until the new process had adopted it
	Park    time.Duration // from asking to park to all parked
	Parked  time.Duration // sending the parked connections' unread bytes and state (and late fds)
	State   time.Duration // sending the global state
	Adopt   time.Duration // from the last byte sent to the new process's READY
	Commit  time.Duration // from COMMIT to the new process's readiness
	Release time.Duration // closing this process's copies of the connections
}

// Pause is how long the connections were not served.
func (s UpgradeStats) Pause() time.Duration {
	return s.Park + s.Parked + s.State + s.Adopt + s.Commit
}

// parentSession is the old process's end of one handoff.
type parentSession struct {
	u         *Upgrader
	ch        *channel
	pid       int
	peer      hello
	events    chan event
	seq       uint32 // CONNS and PARKED frames sent
	acked     uint32 // of them, acknowledged by PROGRESS
	stats     UpgradeStats
	began     time.Time // the upgrade's start
	committed time.Time
	parked    []parkedConn // sent; handed over at the commit
}

// event is a frame from the child, or the error that ended reading.
type event struct {
	typ     byte
	payload []byte
	err     error
}

func (s *parentSession) run(ctx context.Context) error {
	if dl, ok := ctx.Deadline(); ok {
		s.ch.setDeadline(dl)
	}
	defer context.AfterFunc(ctx, func() { s.ch.setDeadline(aLongTimeAgo) })()
	if err := s.hello(); err != nil {
		return err
	}
	s.stats.Start = time.Since(s.began)
	s.events = make(chan event, sendWindow+4)
	go s.readEvents()
	early, err := s.sendEarly()
	if err != nil {
		return err
	}
	hook("early", s.ch)
	parked, err := s.park(ctx, early)
	if err != nil {
		return err
	}
	s.parked = parked
	steps := []func() error{
		func() error { return s.sendParked(parked, early) },
		s.sendState,
		s.awaitReady,
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	s.committed = time.Now()
	return s.ch.send(frameCommit, nil, nil)
}

func (s *parentSession) hello() error {
	typ, p, err := recvNoFds(s.ch)
	if err != nil {
		return fmt.Errorf("handoff: waiting for HELLO from pid %d: %w", s.pid, err)
	}
	if typ != frameHello {
		return protoErr("expected HELLO from pid %d, got %s", s.pid, frameName(typ))
	}
	if s.peer, err = decodeHello(p); err != nil {
		return err
	}
	if s.peer.version != protocolVersion {
		return protoErr("new process speaks protocol version %d, this one %d", s.peer.version, protocolVersion)
	}
	s.u.log.Info("handoff: new process connected", "child", s.pid, "version", s.peer.appVersion)
	return s.ch.send(frameHello, ownHello(s.u.opts.Version).encode(), nil)
}

func ownHello(appVersion string) hello {
	open, _, limit, _ := fdUsage()
	return hello{version: protocolVersion, pid: uint32(os.Getpid()), fdLimit: uint32(min(limit, 1<<31)), fdOpen: uint32(open), appVersion: appVersion}
}

// sendEarly sends the fd of every live connection while this process
// still serves them all: the new process turns each into a connection (the
// slow part, shared/LIMITS.md) outside the pause. Which bytes are unread
// and the handlers' state wait for the park. It returns the ids sent. With
// ListenersOnly it sends PLAN 0 and nothing else.
func (s *parentSession) sendEarly() (map[uint64]bool, error) {
	if s.u.opts.ListenersOnly {
		return nil, s.ch.send(framePlan, u32Frame(0), nil)
	}
	start := time.Now()
	conns := s.u.reg.live()
	if err := s.checkRoom(len(conns)); err != nil {
		return nil, err
	}
	if err := s.ch.send(framePlan, u32Frame(uint32(len(conns))), nil); err != nil {
		return nil, err
	}
	sent := make(map[uint64]bool, len(conns))
	for len(conns) > 0 {
		n := min(len(conns), maxFdsPerMsg)
		if err := s.sendEarlyBatch(conns[:n], sent); err != nil {
			return nil, err
		}
		conns = conns[n:]
	}
	// Every early connection adopted before parking: none of that work
	// may fall into the pause.
	err := s.waitAcked(s.seq, 0)
	s.stats.Fds, s.stats.Early = time.Since(start), len(sent)
	return sent, err
}

// sendEarlyBatch sends one CONNS frame of running connections. Each fd is
// a duplicate, made while the connection cannot be closed under it: its
// handler still runs and may close it, and a bare fd number could by then
// name another socket. A connection already closed is left out.
func (s *parentSession) sendEarlyBatch(conns []*Conn, sent map[uint64]bool) error {
	recs := make([]record, 0, len(conns))
	fds := make([]int, 0, len(conns))
	defer func() { closeFds(fds) }()
	for _, c := range conns {
		fd, err := dupConnFd(c.Conn)
		if err != nil {
			continue
		}
		recs, fds = append(recs, record{id: c.id, kind: c.kind}), append(fds, fd)
	}
	if len(recs) == 0 {
		return nil
	}
	if err := s.waitAcked(s.seq, sendWindow-1); err != nil {
		return err
	}
	if err := s.ch.send(frameConns, encodeConns(s.seq, recs), fds); err != nil {
		return err
	}
	s.seq++
	for _, r := range recs {
		sent[r.id] = true
	}
	return nil
}

// checkRoom checks that the child can hold n more fds than it has now.
func (s *parentSession) checkRoom(n int) error {
	if need := n + int(s.peer.fdOpen) + fdHeadroom; need > int(s.peer.fdLimit) {
		return fmt.Errorf("handoff: new process can hold %d fds, needs %d for %d connections",
			s.peer.fdLimit, need, n)
	}
	return nil
}

// park parks every connection and sends FINAL: how many parked
// connections follow, and how many of them bring their fd now (accepted
// after the early fds went). With ListenersOnly nothing is parked: FINAL 0.
func (s *parentSession) park(ctx context.Context, early map[uint64]bool) ([]parkedConn, error) {
	if s.u.opts.ListenersOnly {
		return nil, s.ch.send(frameFinal, final{}.encode(), nil)
	}
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, s.u.opts.ParkTimeout)
	defer cancel()
	parked, err := s.u.reg.parkAll(pctx)
	if err != nil {
		return nil, fmt.Errorf("handoff: park: %w", err)
	}
	s.stats.Park, s.stats.Conns = time.Since(start), len(parked)
	late := 0
	for _, p := range parked {
		if !early[p.c.id] {
			late++
		}
	}
	if err := s.checkRoom(len(early) + late); err != nil {
		return nil, err
	}
	return parked, s.ch.send(frameFinal, final{conns: uint32(len(parked)), late: uint32(late)}.encode(), nil)
}

// readEvents forwards the child's frames until the channel fails.
func (s *parentSession) readEvents() {
	for {
		typ, p, err := recvNoFds(s.ch)
		s.events <- event{typ, p, err}
		if err != nil {
			return
		}
	}
}

// nextEvent returns the child's next frame, counting PROGRESS frames.
func (s *parentSession) nextEvent() (byte, []byte, error) {
	ev := <-s.events
	if ev.err != nil {
		return 0, nil, ev.err
	}
	if ev.typ == frameProgress {
		seq, err := decodeU32(ev.payload[:min(4, len(ev.payload))], "PROGRESS")
		if err != nil || len(ev.payload) != 8 || seq != s.acked {
			return 0, nil, protoErr("PROGRESS out of order: got %d, want %d", seq, s.acked)
		}
		s.acked++
	}
	return ev.typ, ev.payload, nil
}

// next returns the child's next frame other than PROGRESS.
func (s *parentSession) next() (byte, []byte, error) {
	for {
		typ, p, err := s.nextEvent()
		if err != nil || typ != frameProgress {
			return typ, p, err
		}
	}
}

// waitAcked waits until at most window of sent frames are unacknowledged.
func (s *parentSession) waitAcked(sent, window uint32) error {
	for sent-s.acked > window {
		typ, _, err := s.nextEvent()
		if err != nil {
			return err
		}
		if typ != frameProgress {
			return protoErr("unexpected %s while sending connections", frameName(typ))
		}
	}
	return nil
}

// sendParked sends every parked connection's unread bytes and state: in
// PARKED frames, by id, for those whose fd went early; in CONNS frames,
// fds attached, for the late ones.
func (s *parentSession) sendParked(parked []parkedConn, early map[uint64]bool) error {
	start := time.Now()
	var known, late []parkedConn
	for _, p := range parked {
		if early[p.c.id] {
			known = append(known, p)
		} else {
			late = append(late, p)
		}
	}
	if err := s.sendRecords(frameParked, known); err != nil {
		return err
	}
	if err := s.sendRecords(frameConns, late); err != nil {
		return err
	}
	// No wait for their PROGRESS: the state follows at once, and READY
	// says the child has them all.
	s.stats.Parked = time.Since(start)
	return nil
}

// sendRecords sends parked connections in frames of typ, at most
// maxRecords(typ) and about maxBatchBytes each; CONNS frames carry the fds.
func (s *parentSession) sendRecords(typ byte, parked []parkedConn) error {
	for len(parked) > 0 {
		n, size := 0, 0
		for n < len(parked) && n < maxRecords(typ) && (n == 0 || size+parked[n].size() <= maxBatchBytes) {
			size += parked[n].size()
			n++
		}
		if err := s.waitAcked(s.seq, sendWindow-1); err != nil {
			return err
		}
		if err := s.sendBatch(typ, parked[:n]); err != nil {
			return err
		}
		s.seq++
		parked = parked[n:]
	}
	return nil
}

func (p parkedConn) size() int { return p.record().size() }

func (p parkedConn) record() record {
	return record{id: p.c.id, kind: p.c.kind, unread: p.unread, state: p.state}
}

// sendBatch sends one frame of parked connections. Their handlers are
// blocked in Park, so nothing closes them and their fd numbers hold.
func (s *parentSession) sendBatch(typ byte, batch []parkedConn) error {
	recs := make([]record, len(batch))
	var fds []int
	for i, p := range batch {
		recs[i] = p.record()
		if typ != frameConns {
			continue
		}
		fd, err := connFd(p.c.Conn)
		if err != nil {
			return err
		}
		fds = append(fds, fd)
	}
	return s.ch.send(typ, encodeConns(s.seq, recs), fds)
}

func (s *parentSession) sendState() error {
	start := time.Now()
	w := newStateWriter(s.ch)
	if save := s.u.opts.SaveState; save != nil && !s.u.opts.ListenersOnly {
		if err := callSafely("save state", func() error { return save(w) }); err != nil {
			return err
		}
	}
	if err := w.close(); err != nil {
		return err
	}
	s.stats.State = time.Since(start)
	return nil
}

func (s *parentSession) awaitReady() error {
	start := time.Now()
	typ, p, err := s.next()
	if err != nil {
		return fmt.Errorf("handoff: waiting for READY: %w", err)
	}
	if typ != frameReady || len(p) != 12 {
		return protoErr("expected READY, got %s of %d bytes", frameName(typ), len(p))
	}
	if got := binary.BigEndian.Uint32(p); int(got) != s.stats.Conns {
		return protoErr("new process adopted %d connections, %d were sent", got, s.stats.Conns)
	}
	s.stats.Adopt = time.Since(start)
	return nil
}

// abort tells the child why the upgrade ends, and makes sure it exits.
func (s *parentSession) abort(cause error) {
	s.ch.setDeadline(time.Now().Add(100 * time.Millisecond))
	_ = s.ch.send(frameAbort, abortPayload(cause), nil)
	s.ch.close()
	killProcess(s.pid)
}

// recvNoFds receives a frame that must carry no fds, and turns ABORT into
// an error wrapping ErrRejected.
func recvNoFds(ch *channel) (byte, []byte, error) {
	typ, p, fds, err := ch.recv()
	if err != nil {
		return 0, nil, err
	}
	if len(fds) > 0 {
		closeFds(fds)
		return 0, nil, protoErr("%d unexpected fds on %s", len(fds), frameName(typ))
	}
	if typ == frameAbort {
		d := decoder{b: p}
		return 0, nil, fmt.Errorf("%w: %s", ErrRejected, d.str())
	}
	return typ, p, nil
}

func abortPayload(cause error) []byte {
	msg := cause.Error()
	if len(msg) > maxString {
		msg = msg[:maxString]
	}
	return appendString(nil, msg)
}

// callSafely runs an application callback, turning a panic into an error.
func callSafely(what string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handoff: %s panicked: %v", what, r)
		}
	}()
	if err := f(); err != nil {
		return fmt.Errorf("handoff: %s: %w", what, err)
	}
	return nil
}
