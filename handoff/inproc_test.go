//go:build linux

package handoff

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/handoff/internal/wire"
)

// A chain of servers in one process: each "process" is a goroutine with
// its own Upgrader, whose env is a fakeOS's. Its handoff channel is a real
// socketpair and its listeners and connections real duplicated fds, as
// across exec; what the kernel does to processes (pids, parents, signals,
// death) the fakeOS does. The upgrade's phases, stops and rollbacks are
// tested so, many times under -count; what only the OS shows (exec,
// CLOEXEC, process groups, real signals, fd leaks, hung binaries) keeps
// its multi-process tests.

// fakePidBase is above any Linux pid (pid_max is at most 2^22): a fake
// pid never names a real process.
const fakePidBase = 1 << 23

// fakeOS is the kernel of one in-process chain.
type fakeOS struct {
	h     *harness
	vars  map[string]string // every server's environment
	mu    sync.Mutex
	next  int
	procs map[int]*fakeProc
}

// fakeProc is one server of the chain.
type fakeProc struct {
	fos         *fakeOS
	pid         int
	ppid        int                              // guarded by fos.mu; -1 once it is dead
	sigs        map[chan<- os.Signal][]os.Signal // guarded by fos.mu
	dead        chan struct{}                    // closed by die
	done        chan struct{}                    // closed when its main has returned
	status      int                              // exit code; read after done
	bySignal    bool                             // it died of a signal; read after done
	p           *proc                            // how its server sees itself
	chanFd      int                              // a dup of its end of the handoff channel; -1 for the first
	endOnce     sync.Once                        // the first end decides bySignal: a kill, or its main returning
	deathOnce   sync.Once
	mu          sync.Mutex
	onDeath     []func()        // guarded by mu
	lastOnDeath []func()        // guarded by mu; run after onDeath
	ends        []*net.UnixConn // its ends of its new processes' channels; guarded by mu
}

// startInProcess starts the first server of an in-process chain; env adds
// to the environment of every server of it, as startServer's does.
func startInProcess(t *testing.T, env ...string) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), events: make(chan string, 256), env: env, paused: map[string]int{}}
	fos := &fakeOS{h: h, next: fakePidBase, procs: map[int]*fakeProc{}, vars: map[string]string{}}
	for _, kv := range append(testVars(h), env...) {
		k, v, _ := strings.Cut(kv, "=")
		fos.vars[k] = v
	}
	h.fake = fos
	t.Cleanup(func() {
		fos.killAll()
		if t.Failed() || os.Getenv("HANDOFF_TEST_LOGS") != "" {
			t.Logf("server logs:\n%s", h.logs.String())
		}
	})
	fos.spawn(0, nil, -1)
	f := h.expect("ready")
	h.pid = atoi(f[1])
	h.addr = f[2]
	return h
}

// spawn starts a server whose old process is ppid (0: none), with the
// inheritance in, and the dup chanFd of its channel's end.
func (fos *fakeOS) spawn(ppid int, in *inheritance, chanFd int, env ...string) *fakeProc {
	fos.mu.Lock()
	fos.next++
	fp := &fakeProc{fos: fos, pid: fos.next, ppid: ppid, sigs: map[chan<- os.Signal][]os.Signal{},
		dead: make(chan struct{}), done: make(chan struct{}), chanFd: chanFd}
	fos.procs[fp.pid] = fp
	fos.mu.Unlock()
	fp.p = fp.proc(in, env)
	fp.atDeath(in.closeUnused) // what it inherited and never took
	go func() {
		defer close(fp.done)
		defer fp.die()
		serverMain(fp.p)
	}()
	return fp
}

// proc is how fp's server sees itself.
func (fp *fakeProc) proc(in *inheritance, env []string) *proc {
	h := fp.fos.h
	own := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		own[k] = v
	}
	getenv := func(k string) string {
		if v, ok := own[k]; ok {
			return v
		}
		return fp.fos.vars[k]
	}
	return &proc{
		pid: fp.pid, getenv: getenv, env: fp.env(in), inh: in, peer: own[envPeer] != "",
		report: func(format string, args ...any) { fp.send(fmt.Sprintf(format, args...)) },
		hold: func(step string) {
			fp.send(fmt.Sprintf("paused %d %s", fp.pid, step))
			select {
			case <-h.gate(step):
			case <-fp.dead:
			}
		},
		exit: func(code int) {
			// As os.Exit: the server dies at once, whichever goroutine
			// calls it, and this goroutine ends; its others see dead and
			// unwind. The test process goes on.
			fp.endOnce.Do(func() { fp.status = code })
			fp.die()
			runtime.Goexit()
		},
		dead:    fp.dead,
		atDeath: fp.atDeath,
		logs:    deadSilent{fp, &h.logs},
		fake:    true,
	}
}

// deadSilent drops what a dead process would still log: nothing it
// says after its death is heard.
type deadSilent struct {
	fp *fakeProc
	w  io.Writer
}

func (d deadSilent) Write(b []byte) (int, error) {
	if !d.fp.alive() {
		return len(b), nil
	}
	return d.w.Write(b)
}

// send sends an event to the test, unless fp is dead: nothing it says
// then is heard, nor does it wait to say it.
func (fp *fakeProc) send(ev string) {
	if !fp.alive() {
		return
	}
	select {
	case fp.fos.h.events <- ev:
	case <-fp.dead:
	}
}

// alive reports whether fp has not begun to die.
func (fp *fakeProc) alive() bool {
	fp.fos.mu.Lock()
	defer fp.fos.mu.Unlock()
	return fp.ppid != -1
}

func (fp *fakeProc) atDeath(f func()) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	fp.onDeath = append(fp.onDeath, f)
}

// atDeathLast is atDeath for what must close after everything atDeath
// closes: a peer's channel, whose end tells the old process of the death.
func (fp *fakeProc) atDeathLast(f func()) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	fp.lastOnDeath = append(fp.lastOnDeath, f)
}

// sigkill ends fp by a signal.
func (fp *fakeProc) sigkill() {
	fp.endOnce.Do(func() { fp.bySignal = true })
	fp.die()
}

// die is the kernel's part of a process's end: it stops hearing
// signals, its ends of handoff channels close for their peers, what it
// holds is closed, and its new processes are orphans. Its goroutines see
// dead and unwind without a word, and act on no other process.
func (fp *fakeProc) die() {
	fp.endOnce.Do(func() {})
	fp.deathOnce.Do(func() {
		fp.fos.mu.Lock()
		fp.ppid = -1
		clear(fp.sigs)
		for _, c := range fp.fos.procs {
			if c.ppid == fp.pid {
				c.ppid = 1 // init adopts them
			}
		}
		fp.fos.mu.Unlock()
		// Its new processes see its channels closed before its goroutines
		// see dead: what they do after is not heard.
		fp.mu.Lock()
		ends := fp.ends
		fp.mu.Unlock()
		for _, c := range ends {
			c.Close()
		}
		close(fp.dead)
		if fp.chanFd >= 0 {
			_ = unix.Shutdown(fp.chanFd, unix.SHUT_RDWR)
			_ = unix.Close(fp.chanFd)
		}
		fp.mu.Lock()
		fs := append(slices.Clone(fp.onDeath), fp.lastOnDeath...)
		fp.mu.Unlock()
		for _, f := range fs {
			f()
		}
	})
}

// signal delivers sig to pid as the kernel does: to every channel that
// asked for it, or, if none did, SIGKILL's end.
func (fos *fakeOS) signal(pid int, sig syscall.Signal) error {
	fos.mu.Lock()
	fp := fos.procs[pid]
	if fp == nil || fp.ppid == -1 {
		fos.mu.Unlock()
		return os.NewSyscallError("kill", syscall.ESRCH)
	}
	caught := false
	for c, sigs := range fp.sigs {
		for _, s := range sigs {
			if s == sig && sig != syscall.SIGKILL {
				caught = true
				select {
				case c <- sig:
				default: // as signal.Notify: a full channel misses it
				}
			}
		}
	}
	fos.mu.Unlock()
	if !caught {
		fp.sigkill()
	}
	return nil
}

// killAll ends every server of the chain and waits for their ends.
func (fos *fakeOS) killAll() {
	fos.mu.Lock()
	var all []*fakeProc
	for _, fp := range fos.procs {
		all = append(all, fp)
	}
	fos.mu.Unlock()
	for _, fp := range all {
		fp.sigkill()
	}
	for _, fp := range all {
		select {
		case <-fp.done:
		case <-time.After(60 * time.Second):
			fos.h.t.Errorf("in-process server %d did not end", fp.pid)
		}
	}
}

// env is fp's operating system.
func (fp *fakeProc) env(in *inheritance) *env {
	fos := fp.fos
	return &env{
		claim:      claimOnce(),
		fromParent: func() *inheritance { return in },
		getpid:     func() int { return fp.pid },
		getppid: func() int {
			fos.mu.Lock()
			defer fos.mu.Unlock()
			return fp.ppid
		},
		notify:       fp.notify,
		stopNotify:   fp.stopNotify,
		kill:         fp.kill,
		start:        fp.start,
		checkParent:  fp.checkParent,
		dialTakeover: fp.dialTakeover,
		joinGroup:    func(int) error { return nil }, // one process group: the test's
	}
}

// notify is signal.Notify; a watch of the stops to pass on (SIGTERM with
// SIGINT, watchStops) is made by the old process just after it commits:
// there it pauses at the step "committed" if the test asked.
func (fp *fakeProc) notify(c chan<- os.Signal, sig ...os.Signal) {
	fp.fos.mu.Lock()
	fp.sigs[c] = append(fp.sigs[c], sig...)
	fp.fos.mu.Unlock()
	for _, s := range sig {
		if s == syscall.SIGINT {
			fp.p.barrier("committed")
		}
	}
}

// stopNotify is signal.Stop; the end of the watch of the stops to pass
// on (unwatchStops) is where an exiting old process pauses at the step
// "exiting" if the test asked: it has stopped catching stops, and waits
// for those caught to be passed on.
func (fp *fakeProc) stopNotify(c chan<- os.Signal) {
	fp.fos.mu.Lock()
	sigs := fp.sigs[c]
	delete(fp.sigs, c)
	fp.fos.mu.Unlock()
	if slices.Contains(sigs, os.Signal(syscall.SIGINT)) {
		fp.p.barrier("exiting")
	}
}

// kill is kill(2) from fp: a stop passed on to its successor, which it
// holds at the step "passing" if the test asked (received, not passed on
// yet).
func (fp *fakeProc) kill(pid int, sig syscall.Signal) error {
	fp.p.barrier("passing")
	if !fp.alive() {
		return nil
	}
	return fp.fos.signal(pid, sig)
}

// checkParent is checkParent for a chain in one process: the peer is
// this process, as the kernel says. The new process has its channel
// then, and says nothing on it yet: the takeover's step "connected",
// where the test's fault makes it exit, hang, or send garbage or a
// truncated packet before its HELLO.
func (fp *fakeProc) checkParent(c *net.UnixConn) error {
	cred, err := wire.PeerCred(c)
	if err != nil {
		return err
	}
	if int(cred.Pid) != os.Getpid() || int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("handoff: socket belongs to pid %d uid %d: %w", cred.Pid, cred.Uid, ErrNotChild)
	}
	switch f := fp.p.fault(); f {
	case "exit:connected":
		fp.p.exit(7)
	case "hang:connected":
		<-fp.dead
		return errors.New("killed")
	case "garbage:connected", "truncated:connected":
		c.Write(badPacket(f))
	}
	return nil
}

// dialTakeover is dialPacket in one process: the kernel closes a dead
// peer's end of its channel, as a copy of it closed at its death does
// here.
func (fp *fakeProc) dialTakeover(path string) (*net.UnixConn, error) {
	c, err := dialPacket(path)
	if err != nil {
		return nil, err
	}
	f, err := c.File()
	if err != nil {
		c.Close()
		return nil, err
	}
	// Closed after what the peer holds (atDeath): a dead process accepts
	// nothing, so by the time the old process learns of the death from
	// the channel and takes the listeners back, the peer's copies must
	// accept no more. Closed first, a connection dialled at the take-back
	// could be accepted by the peer's still-running accept loop and closed
	// with its connections (seen once in make test: EOF).
	fp.atDeathLast(func() {
		_ = unix.Shutdown(int(f.Fd()), unix.SHUT_RDWR)
		f.Close()
	})
	fp.p.garble = func() { _, _ = f.Write(badPacket("garbage")) }
	return c, nil
}

// start is execProcess in one process: the new server gets the other end
// of a real socketpair and duplicates of the listeners, as fd 3 and up
// would be.
func (fp *fakeProc) start(binary, dir string, lns []handedListener) (*newProcess, *net.UnixConn, error) {
	ours, theirs, err := socketpair()
	if err != nil {
		return nil, nil, err
	}
	chanFd, err := dupFile(theirs)
	if err != nil {
		ours.Close()
		theirs.Close()
		return nil, nil, fmt.Errorf("handoff: %w: %w", errStart, err)
	}
	files, keys := listenerFiles(lns)
	in := &inheritance{channel: theirs, listeners: make(map[string]*os.File, len(keys))}
	for i, k := range keys {
		in.listeners[k] = files[i]
	}
	child := fp.fos.spawn(fp.pid, in, chanFd)
	fp.mu.Lock()
	fp.ends = append(fp.ends, ours)
	fp.mu.Unlock()
	sigkill := func() {
		if fp.alive() {
			child.sigkill()
		}
	}
	p := &newProcess{pid: child.pid, exited: make(chan struct{}), sigkill: sigkill}
	go func() {
		<-child.done
		switch {
		case child.bySignal:
			p.err, p.byKill = errors.New("signal: killed"), true
		case child.status != 0:
			p.err = fmt.Errorf("exit status %d", child.status)
		}
		close(p.exited)
	}()
	return p, ours, nil
}

// dupFile duplicates f's fd without Fd, which would make the socket
// blocking.
func dupFile(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	cerr := rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	if cerr != nil {
		return -1, cerr
	}
	return fd, err
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// gate is closed when the test releases step.
func (h *harness) gate(step string) chan struct{} {
	h.gatesMu.Lock()
	defer h.gatesMu.Unlock()
	if h.gates == nil {
		h.gates = map[string]chan struct{}{}
	}
	g, ok := h.gates[step]
	if !ok {
		g = make(chan struct{})
		h.gates[step] = g
	}
	return g
}

// kill sends sig to a server of the chain.
func (h *harness) kill(pid int, sig syscall.Signal) error {
	if h.fake != nil {
		return h.fake.signal(pid, sig)
	}
	return syscall.Kill(pid, sig)
}

// alive reports whether the server pid runs.
func (h *harness) alive(pid int) bool {
	if h.fake == nil {
		return processAlive(pid)
	}
	h.fake.mu.Lock()
	fp := h.fake.procs[pid]
	h.fake.mu.Unlock()
	return fp != nil && !isClosed(fp.done)
}

// requireGone waits until the server pid has exited, bounded.
func (h *harness) requireGone(pid int) {
	h.t.Helper()
	if h.fake == nil {
		requireGone(h.t, pid)
		return
	}
	h.fake.mu.Lock()
	fp := h.fake.procs[pid]
	h.fake.mu.Unlock()
	if fp == nil {
		h.t.Fatalf("no server %d", pid)
	}
	select {
	case <-fp.done:
	case <-time.After(60 * time.Second):
		h.t.Fatalf("server %d is still running", pid)
	}
}
