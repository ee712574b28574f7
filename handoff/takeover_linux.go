package handoff

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/handoff/internal/wire"
)

// The new side of the peer transport (PROTOCOL.md, "Peer transport"): in
// New, a process with Options.TakeoverSocket either takes over from the
// process that serves there or, if none does, becomes the first and
// listens there. takeover_server.go is the serving side.

// joinTakeover is New's look at the takeover socket. A serving process
// that is busy (not ready, upgrading) is asked again, backing off, until
// timeout; a refusal (uid, token, application, version) is final.
func joinTakeover(opts *Options, e *env, log *slog.Logger) (joined, error) {
	deadline := time.Now().Add(opts.UpgradeTimeout)
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		j, busy, err := tryTakeover(opts, e)
		if err != nil || busy == nil {
			return j, err
		}
		if time.Now().Add(wait).After(deadline) {
			return joined{}, fmt.Errorf("handoff: takeover socket %s: the serving process stayed busy for %s: %w",
				opts.TakeoverSocket, opts.UpgradeTimeout, busy)
		}
		log.Info("handoff: the serving process is busy; asking again", "in", wait, "reason", busy)
		time.Sleep(wait)
	}
}

// errBusy is wrapped by a serving process's BUSY.
var errBusy = errors.New("busy")

// tryTakeover connects once. Under the directory's lock, so that two
// processes starting together cannot both take a missing or stale socket
// for theirs: the loser connects to the winner.
func tryTakeover(opts *Options, e *env) (j joined, busy, err error) {
	path := opts.TakeoverSocket
	unlock, err := lockTakeoverDir(filepath.Dir(path))
	if err != nil {
		return joined{}, nil, fmt.Errorf("handoff: takeover socket %s: %w", path, err)
	}
	c, err := e.dialTakeover(path)
	if err != nil {
		defer unlock()
		j.ln, err = listenTakeover(path, err)
		return j, nil, err
	}
	unlock()
	in, err := greet(wire.NewChannel(c), opts)
	if errors.Is(err, errBusy) {
		return joined{}, err, nil
	}
	if err != nil {
		return joined{}, nil, fmt.Errorf("handoff: take over through %s: %w", path, err)
	}
	return joined{in: in}, nil, nil
}

// listenFresh makes the takeover socket where nobody serves it.
func listenFresh(path string, e *env) (net.Listener, error) {
	unlock, err := lockTakeoverDir(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	defer unlock()
	c, err := e.dialTakeover(path)
	if err == nil {
		c.Close()
		return nil, errors.New("another process serves it")
	}
	return listenTakeover(path, err)
}

// lockTakeoverDir makes the socket's directory (0700) if missing, checks
// it as the control socket's, and locks it for this process.
func lockTakeoverDir(dir string) (unlock func(), err error) {
	if err := prepareControlDir(dir); err != nil {
		return nil, err
	}
	fd, err := unix.Open(filepath.Join(dir, ".lock"), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, os.NewSyscallError("open lock", err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("flock", err)
	}
	return func() { unix.Close(fd) }, nil
}

// listenTakeover listens on the takeover socket in a first process, after
// dialErr said nobody serves there: no file, or a file nothing listens on
// (a process that died left it). Any other failure is the caller's, never
// a reason to start fresh beside a process that serves.
func listenTakeover(path string, dialErr error) (net.Listener, error) {
	switch {
	case errors.Is(dialErr, syscall.ENOENT):
	case errors.Is(dialErr, syscall.ECONNREFUSED):
		if err := removeStale(path); err != nil {
			return nil, fmt.Errorf("handoff: takeover socket %s: %w", path, err)
		}
	default:
		return nil, fmt.Errorf("handoff: takeover socket %s: %w", path, dialErr)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("handoff: takeover socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("handoff: takeover socket: %w", err)
	}
	return ln, nil
}

// greet asks the serving process on ch to let this one take over: the
// uid of both ends, TAKEOVER, HELLO both ways, then the listeners. It
// returns the peer's inheritance; ch is the inheritance's, or closed.
func greet(ch *wire.Channel, opts *Options) (in *inheritance, err error) {
	defer func() {
		if err != nil {
			ch.Close()
		}
	}()
	if err := checkPeerUid(ch.Conn()); err != nil {
		return nil, err
	}
	token, err := readToken(opts.TakeoverTokenFile)
	if err != nil {
		return nil, err
	}
	ch.SetDeadline(time.Now().Add(greetTimeout))
	sent := ch.Send(wire.Takeover{Version: protocolVersion, Token: token}, nil)
	if sent == nil {
		sent = ch.Send(ownHello(*opts), nil)
	}
	// A refusal may have come before this process's HELLO went out: it
	// is the answer, not the broken pipe.
	h, err := peerHello(ch)
	if err != nil {
		return nil, errors.Join(err, sent)
	}
	in, err = receiveListeners(ch)
	if err != nil {
		return nil, err
	}
	ch.SetDeadline(time.Time{})
	if in.channel, err = ch.Conn().File(); err != nil {
		in.closeUnused()
		return nil, err
	}
	ch.Close() // in.channel is a copy
	in.greeted = &greeting{pid: int(h.PID), version: h.AppVersion, app: h.App}
	return in, nil
}

// peerHello reads the serving process's answer to TAKEOVER: its HELLO,
// BUSY, or ABORT (an error wrapping ErrRejected).
func peerHello(ch *wire.Channel) (wire.Hello, error) {
	var h wire.Hello
	m, err := ch.RecvNoFds()
	if err != nil {
		return h, fmt.Errorf("waiting for HELLO: %w", err)
	}
	if m.Type == wire.TypeBusy {
		var b wire.Busy
		_ = m.Expect(&b) // a reason cut short is still a BUSY
		return h, fmt.Errorf("%w: %s", errBusy, b.Reason)
	}
	if err := m.Expect(&h); err != nil {
		return h, err
	}
	if h.Version != protocolVersion {
		return h, protoErr("the serving process speaks protocol version %d, this one %d", h.Version, protocolVersion)
	}
	return h, nil
}

// receiveListeners reads the LISTENERS frames into an inheritance.
func receiveListeners(ch *wire.Channel) (*inheritance, error) {
	in := &inheritance{listeners: map[string]*os.File{}}
	for total := -1; total != len(in.listeners); {
		m, err := ch.Recv()
		if err == nil {
			total, err = addListeners(in, m, total)
		}
		if err != nil {
			in.closeUnused()
			return nil, fmt.Errorf("waiting for LISTENERS: %w", err)
		}
	}
	return in, nil
}

// addListeners takes one LISTENERS frame's fds into in and returns the
// set's total; m's fds are closed if it is not the frame that follows
// those before it (total: -1 before the first).
func addListeners(in *inheritance, m wire.Msg, total int) (int, error) {
	var l wire.Listeners
	err := m.Refusal()
	switch {
	case err != nil:
	case m.Expect(&l) != nil:
		err = m.Expect(&l)
	case len(m.Fds) != len(l.Keys):
		err = protoErr("LISTENERS with %d keys and %d fds", len(l.Keys), len(m.Fds))
	case int(l.First) != len(in.listeners) || (total >= 0 && int(l.Total) != total):
		err = protoErr("LISTENERS %d of %d after %d of %d", l.First, l.Total, len(in.listeners), total)
	}
	if err != nil {
		wire.CloseFds(m.Fds)
		return 0, err
	}
	for i, k := range l.Keys {
		if old := in.listeners[k]; old != nil {
			old.Close() // a key twice: the last one counts
		}
		in.listeners[k] = inheritFd(m.Fds[i], k)
	}
	return int(l.Total), nil
}

// checkPeerUid admits the other end of c only if it runs as this
// process's uid: a takeover moves every connection and the state.
func checkPeerUid(c *net.UnixConn) error {
	cred, err := wire.PeerCred(c)
	if err != nil {
		return fmt.Errorf("peer credentials: %w", err)
	}
	if int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("the other end runs as uid %d, this process as uid %d", cred.Uid, os.Getuid())
	}
	return nil
}

// ownHello is the HELLO this process says, to its old process or to a
// peer it takes over from.
func ownHello(opts Options) wire.Hello {
	open, _, limit, _ := fdUsage()
	return wire.Hello{Version: protocolVersion, PID: uint32(os.Getpid()), FdLimit: uint32(min(limit, 1<<31)), FdOpen: uint32(open),
		AppVersion: opts.Version, App: opts.App}
}

// sendListeners hands a peer the listeners an exec'd child gets at fd 4
// on, at most wire.MaxFdsPerMsg a frame.
func sendListeners(ch *wire.Channel, lns []handedListener) error {
	var fds []int
	var keys []string
	defer func() { wire.CloseFds(fds) }()
	for _, l := range lns {
		if fd, err := dupConnFd(l.ln); err == nil { // a listener the application closed is left out
			fds, keys = append(fds, fd), append(keys, l.key)
		}
	}
	if len(keys) == 0 || len(keys) > wire.MaxListeners {
		return fmt.Errorf("handoff: %d listeners to hand a peer, 1 to %d allowed", len(keys), wire.MaxListeners)
	}
	for first := 0; first < len(keys); first += wire.MaxFdsPerMsg {
		end := min(first+wire.MaxFdsPerMsg, len(keys))
		l := wire.Listeners{First: uint16(first), Total: uint16(len(keys)), Keys: keys[first:end]}
		if err := ch.Send(l, fds[first:end]); err != nil {
			return err
		}
	}
	return nil
}

// withoutControl is lns without the control socket's listener: a peer
// (another container) has a file system of its own, where the socket's
// path names nothing, and opens its own.
func withoutControl(lns []handedListener, controlSocket string) []handedListener {
	control := listenerKey("unix", controlSocket)
	var out []handedListener
	for _, l := range lns {
		if l.key != control {
			out = append(out, l)
		}
	}
	return out
}
