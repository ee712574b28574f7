//go:build linux

package handoff

import (
	"net"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/handoff/internal/wire"
)

// Two steps of a new process's takeover have no effect on the OS or the
// application near them, only traffic on the handoff channel: "hello"
// (the old process's HELLO has come) and "first-batch" (the first batch
// of early connections is adopted: the new process's first PROGRESS is
// sent). To reach them without a hook in the library, a new server that
// the test wants stopped there puts a tap between its Upgrader and the
// channel, in a real process as in one: a relay that passes every packet
// and its fds on, and runs the step as its frame goes by.

// tapSteps are the steps a tap reaches.
var tapSteps = []string{"hello", "first-batch"}

// tap relays the handoff channel between the old process (outer) and
// this process's Upgrader (inner's peer).
type tap struct {
	p            *proc
	outer, inner *net.UnixConn
	batched      chan struct{} // closed once the step "first-batch" has run
	stepping     atomic.Bool   // a step runs: its exit is at once
}

// tapChannel puts a tap on p's inherited channel if the test wants a
// pause, a probe or a fault at one of tapSteps; it is called before New.
func (p *proc) tapChannel() {
	if p.inh == nil || !p.wantsAny(tapSteps) {
		return
	}
	fc, err := net.FileConn(p.inh.channel)
	if err != nil {
		p.report("error %d tap: %v", p.pid, err)
		p.exit(1)
	}
	p.inh.channel.Close()
	inner, theirs, err := socketpair()
	if err != nil {
		p.report("error %d tap: %v", p.pid, err)
		p.exit(1)
	}
	t := &tap{p: p, outer: fc.(*net.UnixConn), inner: inner, batched: make(chan struct{})}
	p.inh.channel = theirs
	if !p.fake {
		// The Upgrader's channel is the tap's: the old process is the
		// peer of the one the tap holds.
		e := *p.env
		e.checkParent = func(*net.UnixConn) error { return peerIsParent(t.outer) }
		p.env = &e
	}
	p.atDeath(t.close) // as the kernel closes a dead process's sockets
	upDone := make(chan struct{})
	exit := p.exit
	p.exit = func(code int) {
		// What the Upgrader said last (its ABORT: why it failed) is the
		// old process's before this one exits, as it would be without a
		// tap; the Upgrader has closed its end by then. A step's own
		// exit is at once.
		if !t.stepping.Load() {
			select {
			case <-upDone:
			case <-time.After(10 * time.Second):
			}
		}
		exit(code)
	}
	go t.relay(t.outer, t.inner, t.down())
	go func() {
		defer close(upDone)
		t.relay(t.inner, t.outer, t.up())
	}()
}

// reach runs step in the tap.
func (t *tap) reach(step string) {
	t.stepping.Store(true)
	defer t.stepping.Store(false)
	t.p.reach(step)
}

// wantsAny reports whether the test asks for a pause, a probe or a fault
// of this process at one of steps.
func (p *proc) wantsAny(steps []string) bool {
	_, at, _ := strings.Cut(p.fault(), ":")
	for _, s := range steps {
		if at == s || listed(p.getenv(envPause), s) || listed(p.getenv(envProbe), s) {
			return true
		}
	}
	return false
}

// listed reports whether the comma-separated list holds item.
func listed(list, item string) bool {
	return strings.Contains(","+list+",", ","+item+",")
}

func (t *tap) close() {
	t.outer.Close()
	t.inner.Close()
}

// relay passes each packet and its fds from src to dst, calling at
// first with the packet's header and fds: at may hold the packet back,
// and returns what to do once it went on. The end of either side closes
// both, as the peer's end would.
func (t *tap) relay(src, dst *net.UnixConn, at func(typ wire.Type, last bool, fds []int) (after func())) {
	defer t.close()
	buf, oob := make([]byte, 128<<10), make([]byte, unix.CmsgSpace(4*wire.MaxFdsPerMsg))
	for {
		n, oobn, flags, _, err := src.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 || flags&unix.MSG_CTRUNC != 0 {
			return
		}
		fds := rightsOf(oob[:oobn])
		after := at(wire.Type(buf[0]), n > 1 && buf[1]&1 == 0, fds) // flag 1: more packets follow
		var rights []byte
		if len(fds) > 0 {
			rights = unix.UnixRights(fds...)
		}
		_, _, err = dst.WriteMsgUnix(buf[:n], rights, nil)
		wire.CloseFds(fds)
		if err != nil {
			return
		}
		after()
	}
}

// rightsOf returns the fds a packet's control messages carry.
func rightsOf(oob []byte) []int {
	msgs, _ := unix.ParseSocketControlMessage(oob)
	var fds []int
	for i := range msgs {
		got, _ := unix.ParseUnixRights(&msgs[i])
		fds = append(fds, got...)
	}
	return fds
}

// down is the old process's side: "hello" is reached once its HELLO has
// gone on; every packet after the first CONNS frame waits for the step
// "first-batch", which the new process's PROGRESS reaches. A fault
// "fdlimit:first-batch" lowers the fd limit then, so that the fds of
// the packet held, which the tap gives up as it passes them on, do not
// fit but for 3.
func (t *tap) down() func(wire.Type, bool, []int) func() {
	hello, conns := false, false
	return func(typ wire.Type, last bool, fds []int) func() {
		if conns {
			select {
			case <-t.batched:
			case <-t.p.dead:
			}
			if t.p.fault() == "fdlimit:first-batch" && len(fds) > 0 {
				lowerFdLimit(3, fds...)
			}
		}
		switch {
		case typ == wire.TypeHello && last && !hello:
			hello = true
			return func() { t.reach("hello") }
		case typ == wire.TypeConns && last:
			conns = true
		}
		return func() {}
	}
}

// up is the new process's side: its first PROGRESS reaches
// "first-batch" before it goes on.
func (t *tap) up() func(wire.Type, bool, []int) func() {
	return func(typ wire.Type, last bool, fds []int) func() {
		if typ == wire.TypeProgress && !isClosed(t.batched) {
			t.reach("first-batch")
			close(t.batched)
		}
		return func() {}
	}
}
