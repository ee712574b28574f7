package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/handoff/internal/wire"
)

// Defaults for zero Options fields.
const (
	DefaultUpgradeTimeout = 30 * time.Second
	DefaultPauseTimeout   = 5 * time.Second
	DefaultParkTimeout    = 2 * time.Second
	DefaultMaxBuffered    = 64 << 10
)

// Sentinel errors, each a decision a caller can make (and, in machine.go,
// the refusals of an upgrade).
var (
	// ErrNotChild: the handoff peer is not this process's parent.
	ErrNotChild = errors.New("handoff: peer is not the expected process")
	// ErrRejected: the other process refused the handoff and said why.
	ErrRejected = wire.ErrRejected
	// ErrNotSupported: upgrades need Linux. Everything else works.
	ErrNotSupported = errors.New("handoff: upgrades are not supported on this platform")
)

// Options configure an Upgrader. Zero values mean the documented default.
type Options struct {
	// Binary is the executable an upgrade starts, with this process's
	// arguments (os.Args[1:]) and in the working directory New saw.
	// Default: the path this process was started from (os.Args[0], made
	// absolute), so that both replacing the file in place and switching a
	// "current" symlink deploy the new version.
	Binary string
	// Version names the application's version; it is exchanged in HELLO and
	// logged.
	Version string
	// App names the application. The new process says it in HELLO, and
	// the old one refuses a new binary whose App differs from its own: the
	// upgrade rolls back (cause CauseOtherApp), so that another program
	// built on this library cannot take over the connections and the
	// state by mistake. To switch applications on purpose, name the new
	// one for that upgrade (UpgradeRequest.App, handoffctl upgrade -app).
	// Every binary of one application must have the same App: set it when
	// they are built from different main packages (the pdf example's
	// pdf-v1 and pdf-v2 say "pdf"). At most 256 bytes, without spaces or
	// control characters, so that an operator can type it. Default: the
	// import path of the main package (runtime/debug.ReadBuildInfo's
	// Path, such as example.com/shop/cmd/shopd); empty for a binary
	// without build information. A binary built from files (go build
	// main.go) says command-line-arguments, as every such binary does:
	// set App there.
	App string
	// PIDFile, if set, receives the pid of the process that serves: the
	// first process once Ready returns, a new one once it has committed.
	// A failed upgrade never changes it. A new process writes its pid to
	// a file beside it before it says READY and renames that into place
	// at the commit: if it cannot (a full disk, a read-only directory),
	// the upgrade rolls back with that cause.
	PIDFile string
	// UpgradeTimeout bounds an upgrade from its start to the moment the
	// old process commits it. Default DefaultUpgradeTimeout.
	UpgradeTimeout time.Duration
	// PauseTimeout bounds the part of an upgrade during which connections
	// are not served: from asking them to park until the new process is
	// ready. Past it, the upgrade is rolled back. Default
	// DefaultPauseTimeout.
	PauseTimeout time.Duration
	// ParkTimeout bounds how long connections may take to reach a message
	// boundary and park, inside PauseTimeout. Default DefaultParkTimeout.
	ParkTimeout time.Duration
	// MaxBuffered bounds the bytes a Conn buffers without a complete message.
	// Default DefaultMaxBuffered.
	MaxBuffered int
	// SaveState writes the application's global state to the new process.
	// It runs in the old process while every connection is parked. Nil: no
	// state. Write a state file (statefile.Set.Save): the new binary may
	// hold its state in another schema, and the file says which one this is.
	SaveState func(w io.Writer) error
	// LoadState reads what SaveState wrote, in the new process. An error
	// rejects the upgrade: the old process resumes and the new one exits.
	// With statefile.Set.Load, a damaged stream, an unknown schema, a
	// missing migration step and a failing or panicking migration are all
	// such errors, and the state is installed only once it is whole. Nil:
	// the new process refuses an upgrade from an old one that has
	// SaveState, at its start, rather than take over and drop the state.
	LoadState func(r io.Reader) error
	// Resume serves a connection handed over from the old process, with the
	// state its handler gave to Park. It runs in the new process after commit,
	// one goroutine per connection. In Rolling mode, apply what state
	// carries to the process's global state before the handler's first
	// Next, Read, Write or Park on c (or before Resume returns): a
	// connection has moved, for the end of the move and for a Stop that
	// waits for it, only once its handler has got that far (at most
	// MoveTimeout after the last one arrived), so that the state saved at a
	// stop holds what every moved connection carried.
	Resume func(c *Conn, state []byte)
	// Mode is how an upgrade moves the connections: AllAtOnce (the
	// default), Rolling or ListenersOnly; see Mode. It is the old process's
	// choice: the new process takes part if it can serve what the mode
	// brings (a ListenersOnly process refuses connections and state, one
	// without Resume refuses connections, one without LoadState refuses
	// state), so that a service can switch modes with an upgrade.
	Mode Mode
	// MoveTimeout bounds, in Rolling mode, the move of the connections
	// after the commit: when it ends, the connections still in the old
	// process are drained or closed, as Stragglers says. A Stop of the old
	// process during the move ends it ParkTimeout later at the latest.
	// Default DefaultMoveTimeout.
	MoveTimeout time.Duration
	// Stragglers is what Rolling mode does with the connections that did
	// not reach a message boundary within MoveTimeout. Default
	// DrainStragglers.
	Stragglers Stragglers
	// NoSignal disables the SIGHUP trigger.
	NoSignal bool
	// Logger receives the upgrade's log lines. Default slog.Default().
	Logger *slog.Logger
	// ListenConfig makes new listening sockets. Default: an empty one.
	ListenConfig *net.ListenConfig
	// ControlSocket, if set, is the path of a Unix socket on which an
	// operator (handoffctl status, handoffctl upgrade) asks this process
	// for its Status or to upgrade; CONTROL.md describes the protocol. It
	// is inherited across upgrades like a ListenPlain listener, so it never
	// disappears during one. A first process makes it in New: a missing
	// directory is made 0700; an existing one must not be writable by
	// others unless it is sticky and owned by this uid or root; a socket
	// file nothing answers on (a crash left it) is replaced; the socket is
	// made 0600. Only peers of this process's uid, or root, are served.
	// A first process answers from New on (an upgrade is refused with
	// ErrNotReady until Ready); a process started by an upgrade answers
	// once its Ready has returned nil, so that before the commit the old
	// process answers. Stop closes it. Linux only: elsewhere New fails
	// with an error wrapping ErrNotSupported. Default: none.
	ControlSocket string
	// Supervisor, if set, is the service manager this process runs under
	// (systemd.New for systemd): it is told when the process serves,
	// upgrades, rolls back and stops; Listen adopts the listening sockets
	// it passed a first process (socket activation); and it may keep a
	// copy of every listener and connection so that they outlive a crash,
	// Ready resuming in a first process the connections it kept. Default:
	// none.
	Supervisor Supervisor
}

// Upgrader runs one process's part in the chain of upgrades: it hands
// listeners, connections and state to the next process, or takes them over
// from the previous one. There is one per process. Its methods are the
// application's API; what they share with the two sides of an upgrade
// (parent.go, child.go) is its core.
type Upgrader struct {
	*core
	sigC chan os.Signal
	ctl  *controlServer // nil without Options.ControlSocket
}

// New creates the process's Upgrader. Only the first call in a process
// succeeds: the process has one chain of upgrades. New changes nothing
// global but SIGHUP's handling (unless Options.NoSignal).
func New(opts Options) (*Upgrader, error) { return newUpgrader(opts, processEnv) }

// newUpgrader is New acting on the OS through e.
func newUpgrader(opts Options, e *env) (*Upgrader, error) {
	if !e.claim() {
		return nil, errTwice
	}
	dir, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("handoff: working directory: %w", err)
	}
	if err := applyDefaults(&opts); err != nil {
		return nil, err
	}
	u := &Upgrader{core: newCore(opts, dir, e)}
	if err := u.takeSupervised(); err != nil {
		return nil, err
	}
	if !opts.NoSignal {
		u.sigC = make(chan os.Signal, 1)
		e.notify(u.sigC, syscall.SIGHUP)
		go u.onSignal()
	}
	if err := u.openControl(); err != nil {
		if u.sigC != nil {
			e.stopNotify(u.sigC)
		}
		return nil, err
	}
	return u, nil
}

func applyDefaults(o *Options) error {
	if o.Binary == "" {
		o.Binary = os.Args[0]
		if !strings.Contains(o.Binary, string(filepath.Separator)) {
			p, err := exec.LookPath(o.Binary)
			if err != nil {
				return fmt.Errorf("handoff: find own binary: %w", err)
			}
			o.Binary = p
		}
	}
	abs, err := filepath.Abs(o.Binary)
	if err != nil {
		return fmt.Errorf("handoff: binary path: %w", err)
	}
	o.Binary = abs
	if o.App == "" {
		o.App = defaultApp()
	}
	if err := checkAppName(o.App); err != nil {
		return fmt.Errorf("handoff: Options.App: %w", err)
	}
	if o.ControlSocket != "" {
		if o.ControlSocket, err = filepath.Abs(o.ControlSocket); err != nil {
			return fmt.Errorf("handoff: control socket path: %w", err)
		}
	}
	if o.UpgradeTimeout <= 0 {
		o.UpgradeTimeout = DefaultUpgradeTimeout
	}
	if o.PauseTimeout <= 0 {
		o.PauseTimeout = DefaultPauseTimeout
	}
	if o.ParkTimeout <= 0 {
		o.ParkTimeout = DefaultParkTimeout
	}
	if o.MoveTimeout <= 0 {
		o.MoveTimeout = DefaultMoveTimeout
	}
	if o.Mode >= modes {
		return fmt.Errorf("handoff: unknown Options.Mode %d", uint8(o.Mode))
	}
	if o.MaxBuffered <= 0 {
		o.MaxBuffered = DefaultMaxBuffered
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// LastUpgrade returns the phases of the last upgrade this process handed
// over, for an application's metrics; zero before one.
func (u *Upgrader) LastUpgrade() UpgradeStats {
	_, last, _ := u.m.snapshot()
	if last == nil || !last.Committed {
		return UpgradeStats{}
	}
	return last.Stats
}

// HasParent reports whether this process was started by an upgrade.
func (u *Upgrader) HasParent() bool { return u.parent != nil }

// Binary is the executable an upgrade starts: Options.Binary, or the
// absolute path this process was started from.
func (u *Upgrader) Binary() string { return u.opts.Binary }

// Listen returns a listener inherited from the previous process, or a new
// one made with Options.ListenConfig. Closing it closes this process's
// copy only: the process it is handed to has its own.
//
// In a first process with a Supervisor, a listening socket the supervisor
// passed for this address (socket activation, or kept across a crash) is
// adopted rather than a new one made; a new one is given to the supervisor
// to keep, if it keeps sockets.
func (u *Upgrader) Listen(network, addr string) (*Listener, error) {
	ln, fresh, err := u.listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("handoff: listen %s %s: %w", network, addr, err)
	}
	key := listenerKey(network, addr)
	if fresh {
		u.keep(ln, key, true)
	}
	l := &Listener{Listener: ln, reg: u.reg, kind: network + ":" + addr, network: network, addr: addr}
	u.reg.addListener(l)
	return l, nil
}

// listen returns an inherited listener, one the supervisor passed, or a
// new one (fresh).
func (u *Upgrader) listen(network, addr string) (ln net.Listener, fresh bool, err error) {
	if f := u.parent.takeListener(network, addr); f != nil {
		defer f.Close()
		// An inherited Unix listener leaves its file alone on close (the
		// old process serves it) until this process has taken over.
		ln, err = net.FileListener(f)
		return ln, false, err
	}
	if ln, _ := u.sup.takeListener(network, addr); ln != nil {
		return ln, false, nil
	}
	lc := u.opts.ListenConfig
	if lc == nil {
		lc = &net.ListenConfig{}
	}
	ln, err = lc.Listen(context.Background(), network, addr)
	return ln, true, err
}

// passedListeners returns every listener the next process inherits: those
// of Listen and of ListenPlain.
func (u *core) passedListeners() []passed {
	var out []passed
	for _, l := range u.reg.listenerList() {
		out = append(out, passed{l.Listener, listenerKey(l.network, l.addr)})
	}
	return append(out, u.plain.list()...)
}

// ListenPlain returns a listener inherited across upgrades as Listen's
// are, whose connections are the application's alone: never tracked,
// parked or handed over. It suits an HTTP endpoint (metrics, health
// checks) or a control socket, whose open connections end with the
// process while the listening socket goes on. After this process hands
// over, its copy is closed; the new process has its own.
func (u *Upgrader) ListenPlain(network, addr string) (net.Listener, error) {
	ln, _, err := u.listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("handoff: listen %s %s: %w", network, addr, err)
	}
	u.plain.add(passed{ln, listenerKey(network, addr)})
	return ln, nil
}

// Wrap tracks a connection this process made or accepted itself, so that it
// is handed over too. The Conn takes ownership of nc. kind travels with it.
//
// During an upgrade, once every connection has parked, Wrap waits for the
// upgrade's outcome (so SaveState must not call it). If the upgrade rolls
// back, the Conn is tracked as usual. If it hands over, nc was not sent:
// the Conn serves it in this process but is untracked: it is never
// parked, Conns does not list it, and the application owns it and must
// close it. The same holds for Wrap after a handover.
func (u *Upgrader) Wrap(nc net.Conn, kind string) *Conn {
	c := u.reg.track(nc, kind, nil)
	if c.reg != nil {
		u.keep(nc, kind, false)
	}
	return c
}

// Ready finishes starting this process. In a first process it writes the
// PID file. In a process started by an upgrade, it takes over the old
// process's connections and state: it receives them, calls LoadState and
// waits for the old process to commit; then it writes the PID file and
// starts Resume for every connection. On error nothing was taken over (the
// old process carries on, unless it died) and this process must exit
// without saving any state. Cancelling ctx, or calling Stop, before the
// new process has said it is ready aborts the takeover; after that, the
// old process decides and Ready waits for its word.
func (u *Upgrader) Ready(ctx context.Context) error {
	if u.parent == nil {
		u.m.ready()
		if err := u.pid.write(); err != nil {
			return err
		}
		u.settleSupervised()
		u.m.serves(0)
		u.reportStatus()
		return nil
	}
	err := u.takeOver(ctx)
	u.parent.closeUnused()
	if err != nil {
		u.ctl.close(true) // the old process still serves the socket file
		u.log.Error("handoff: takeover failed; exit without saving state", "err", err)
		return err
	}
	ownSocketFiles(u.passedListeners())
	u.ctl.open()
	u.reportStatus()
	return nil
}

// Conns returns the connections this process serves now: accepted through
// its Listeners, wrapped or resumed, and neither closed nor handed over
// (nor wrapped after a handover, see Wrap). The
// Upgrader still owns them: closing one closes it for its peer. With
// ListenersOnly mode, these are what the application has to close after
// Exit is closed.
func (u *Upgrader) Conns() []*Conn {
	return u.reg.live()
}

// Exit is closed when this process should exit: it has handed everything to
// its successor (with ListenersOnly mode, its listeners; its connections
// are still its own), its takeover failed, or Stop was called. Call
// Exiting just before the process exits.
func (u *Upgrader) Exit() <-chan struct{} { return u.exitC }

// Exiting is the last call of a process that exits because Exit was
// closed: call it just before the process exits (returns from main, or
// os.Exit). From the commit of an upgrade on, a stop signal (SIGTERM,
// SIGINT) that reaches this process is passed on to the successor, which
// stops the service and saves its state; Exiting returns once every stop
// signal that reached this process has been passed on, so that none is
// lost if the process exits the moment one arrives. A stop signal that
// arrives after Exiting has returned is not passed on: send stops to the
// pid in Options.PIDFile, which names the successor from the commit on.
// In a process that has not handed over (or with ListenersOnly mode,
// which passes no stop on) Exiting does nothing.
func (u *Upgrader) Exiting() { u.passPendingStops() }

// Stop ends the Upgrader for a stop of the service: no more upgrades, and
// Exit is closed. Safe to call more than once, from any goroutine.
//
// An upgrade in progress is resolved first. If the old process has not
// committed it yet, it is rolled back: the new process is killed and this
// process keeps everything. If it has committed, it completes.
//
// Stop returns nil if this process owns its state and connections: the
// application saves what it must and exits. It returns ErrHandedOver if a
// successor owns them (an upgrade committed, now or before): the
// application must not save its state, which is stale, and Stop has passed
// the stop on to the successor as SIGTERM, so that the service stops and
// the successor saves. With ListenersOnly mode nothing is passed on:
// the successor owns the listeners only.
func (u *Upgrader) Stop() error {
	handed := u.m.stop()
	if u.sigC != nil {
		u.env.stopNotify(u.sigC)
	}
	u.closeExit()
	u.ctl.close(handed)
	if !handed {
		return nil
	}
	if u.opts.Mode.passesStop() {
		u.passStop(syscall.SIGTERM)
	}
	return ErrHandedOver
}

func (u *Upgrader) onSignal() {
	for range u.sigC {
		u.log.Info("handoff: SIGHUP: upgrading", "binary", u.opts.Binary)
		go func() { _ = u.Upgrade(context.Background()) }()
	}
}

// Upgrade starts the binary and hands it this process's listeners,
// connections and state (with ListenersOnly mode, its listeners only).
// It returns nil once the upgrade has committed; this process should then
// exit (Exit is closed), with ListenersOnly mode once it has closed
// the connections it still serves. On error, nothing was handed over and
// every connection carries on here. A call made while an upgrade runs
// returns ErrUpgradeInProgress; before Ready, ErrNotReady; after Stop,
// ErrStopped; after an upgrade committed, ErrHandedOver. Cancelling ctx
// rolls the upgrade back, unless it has committed.
func (u *Upgrader) Upgrade(ctx context.Context) error {
	_, err := u.UpgradeWith(ctx, UpgradeRequest{})
	return err
}

// UpgradeRequest sets one upgrade apart from Options; zero fields mean
// Options'.
type UpgradeRequest struct {
	Binary   string        // the executable to start, made absolute
	Timeout  time.Duration // bounds the upgrade up to its commit
	Progress func(Event)   // called as each phase ends, on the upgrade's goroutine
	// App is the application the new binary must be (its Options.App):
	// set it to switch this service to another application. Default:
	// this process's Options.App.
	App string

	// finish, if set, is called with the outcome before Exit is closed,
	// so that the control socket's answer goes out before the process
	// exits.
	finish func(UpgradeResult)
}

// UpgradeWith is Upgrade with per-call settings, reporting each phase to
// req.Progress as it ends. It returns how the upgrade ended, and the same
// error Upgrade would. Exit is closed only after Progress has returned for
// the final event (committed or rolled_back), so that what Progress reports
// can leave the process before it exits.
func (u *Upgrader) UpgradeWith(ctx context.Context, req UpgradeRequest) (UpgradeResult, error) {
	req = req.withDefaults(&u.opts)
	res := UpgradeResult{From: u.env.getpid(), Binary: req.Binary, Began: time.Now()}
	ctx, run, err := u.m.beginUpgrade(ctx)
	if err != nil {
		res.Err, res.Cause = err, CauseRefused
		u.log.Warn("handoff: upgrade refused", "err", err)
		if req.finish != nil {
			req.finish(res)
		}
		return res, err
	}
	err = u.upgrade(ctx, run, req, &res)
	res.Stats.Mode = u.opts.Mode // Pause and the metrics tell the modes apart
	res.Took = time.Since(res.Began)
	res.Committed, res.Err = err == nil, err
	if err != nil {
		res.Cause = causeOf(err)
	}
	u.chain.count(res)
	next := phaseServing
	if err == nil {
		next = phaseHandedOver
	}
	last := res
	next = u.m.end(run, next, &last) // tells the supervisor of a rollback
	defer func() {
		if req.finish != nil {
			req.finish(res)
		}
		if next != phaseServing {
			u.closeExit()
		}
	}()
	if err != nil {
		u.event(req, Event{Phase: PhaseRolledBack, PID: res.To, Took: res.Took, Err: err})
		u.log.Error("handoff: upgrade failed; this process carries on", "err", err, "cause", res.Cause,
			"generation", u.generation(), "to", res.To, "took", res.Took)
		return res, err
	}
	u.event(req, Event{Phase: PhaseCommitted, PID: res.To, Took: res.Took, Conns: res.Stats.Conns})
	u.log.Info("handoff: upgrade committed; exiting", "generation", u.generation(), "to", res.To, "took", res.Took)
	return res, nil
}

// withDefaults fills the request's zero fields from opts.
func (req UpgradeRequest) withDefaults(opts *Options) UpgradeRequest {
	if req.Binary == "" {
		req.Binary = opts.Binary
	} else if abs, err := filepath.Abs(req.Binary); err == nil {
		req.Binary = abs
	}
	if req.Timeout <= 0 {
		req.Timeout = opts.UpgradeTimeout
	}
	if req.App == "" {
		req.App = opts.App
	}
	return req
}

// event reports a phase of an upgrade to the caller's Progress, and logs it.
func (u *core) event(req UpgradeRequest, e Event) {
	if req.Progress != nil {
		req.Progress(e)
	}
	if e.Phase == PhaseCommitted || e.Phase == PhaseRolledBack {
		return // logged by UpgradeWith with the reason
	}
	u.log.Info("handoff: upgrade phase", "phase", e.Phase, "generation", u.generation(), "to", e.PID,
		"took", e.Took, "conns", e.Conns, "bytes", e.Bytes)
}

// generation is the chain's count of committed upgrades before this
// process served.
func (u *core) generation() uint64 {
	u.chain.mu.Lock()
	defer u.chain.mu.Unlock()
	return u.chain.generation
}
