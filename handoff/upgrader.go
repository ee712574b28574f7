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
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

// Defaults for zero Options fields.
const (
	DefaultUpgradeTimeout = 30 * time.Second
	DefaultParkTimeout    = 5 * time.Second
	DefaultMaxBuffered    = 64 << 10
)

// envSocket tells the new process where the old one waits for it.
const envSocket = "HANDOFF_SOCKET"

// Sentinel errors, each a decision a caller can make.
var (
	// ErrUpgradeInProgress: an upgrade was triggered while another runs.
	ErrUpgradeInProgress = errors.New("handoff: an upgrade is already in progress")
	// ErrNotChild: the handoff peer is not this process's child (or parent).
	ErrNotChild = errors.New("handoff: peer is not the expected process")
	// ErrRejected: the other process refused the handoff and said why.
	ErrRejected = errors.New("handoff: rejected by peer")
)

// Options configure an Upgrader. Zero values mean the documented default.
type Options struct {
	// Binary is the executable an upgrade starts. Default: the path this
	// process was started from (os.Args[0], made absolute), looked up again
	// at each upgrade, so both replacing the file in place and switching a
	// "current" symlink deploy the new version.
	Binary string
	// Version names the application's version; it is exchanged in HELLO and
	// logged.
	Version string
	// PIDFile, if set, receives the pid of the process that is ready.
	PIDFile string
	// UpgradeTimeout bounds an upgrade from the start of the new process to
	// commit. Default DefaultUpgradeTimeout.
	UpgradeTimeout time.Duration
	// ParkTimeout bounds how long connections may take to reach a message
	// boundary and park. Default DefaultParkTimeout.
	ParkTimeout time.Duration
	// MaxBuffered bounds the bytes a Conn buffers without a complete message.
	// Default DefaultMaxBuffered.
	MaxBuffered int
	// SocketDir holds the handoff socket, in a fresh directory only this
	// user can enter. Default os.TempDir().
	SocketDir string
	// SaveState writes the application's global state to the new process.
	// It runs in the old process while every connection is parked. Nil: no
	// state. Write a state file (statefile.Set.Save): the new binary may
	// hold its state in another schema, and the file says which one this is.
	SaveState func(w io.Writer) error
	// LoadState reads what SaveState wrote, in the new process. An error
	// rejects the upgrade: the old process resumes and the new one exits.
	// With statefile.Set.Load, a damaged stream, an unknown schema, a
	// missing migration step and a failing or panicking migration are all
	// such errors, and the state is installed only once it is whole.
	LoadState func(r io.Reader) error
	// Resume serves a connection handed over from the old process, with the
	// state its handler gave to Park. It runs in the new process after commit,
	// one goroutine per connection.
	Resume func(c *Conn, state []byte)
	// ListenersOnly hands over the listeners alone, as tableflip does. The
	// old process parks nothing and keeps accepting until the new process
	// is ready; then it closes its listeners and Exit is closed, but its
	// connections stay with it, running: they are never handed over, and
	// the application owns them (Upgrader.Conns lists them) and must close
	// them itself, typically after letting them drain. SaveState and
	// LoadState are not called: the new process gets no state from the old
	// one. Both processes must set it: a new process that sets it refuses
	// connections or state, and one that does not set it gets an empty
	// state stream to load.
	ListenersOnly bool
	// NoSignal disables the SIGHUP trigger.
	NoSignal bool
	// Logger receives the upgrade's log lines. Default slog.Default().
	Logger *slog.Logger
	// ListenConfig makes new listening sockets. Default: an empty one.
	ListenConfig *net.ListenConfig
}

// Upgrader runs one process's part in the chain of upgrades: it hands
// listeners, connections and state to the next process, or takes them over
// from the previous one. There is one per process.
type Upgrader struct {
	opts Options
	log  *slog.Logger
	tf   *tableflip.Upgrader
	reg  *registry

	parentSock string // set in a process started by an upgrade

	busy     sync.Mutex // held for the whole of an upgrade
	statsMu  sync.Mutex
	stats    UpgradeStats // of the last upgrade that handed over
	exitC    chan struct{}
	exitOnce sync.Once
	stopOnce sync.Once
	sigC     chan os.Signal
}

// New creates the process's Upgrader. Only the first call in a process
// succeeds (a tableflip rule).
func New(opts Options) (*Upgrader, error) {
	if err := applyDefaults(&opts); err != nil {
		return nil, err
	}
	// tableflip starts os.Args[0]; this is how the binary is chosen.
	os.Args[0] = opts.Binary
	tf, err := tableflip.New(tableflip.Options{
		UpgradeTimeout: opts.UpgradeTimeout,
		PIDFile:        opts.PIDFile,
		ListenConfig:   opts.ListenConfig,
	})
	if err != nil {
		return nil, fmt.Errorf("handoff: %w", err)
	}
	u := &Upgrader{
		opts:  opts,
		log:   opts.Logger.With("pid", os.Getpid()),
		tf:    tf,
		reg:   newRegistry(opts.MaxBuffered),
		exitC: make(chan struct{}),
	}
	if tf.HasParent() {
		u.parentSock = os.Getenv(envSocket)
	}
	// Our own children must not find the socket.
	os.Unsetenv(envSocket)
	go u.watchExit()
	if !opts.NoSignal {
		u.sigC = make(chan os.Signal, 1)
		signal.Notify(u.sigC, syscall.SIGHUP)
		go u.onSignal()
	}
	return u, nil
}

func applyDefaults(o *Options) error {
	if o.Binary == "" {
		o.Binary = os.Args[0]
		if !strings.Contains(o.Binary, "/") {
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
	if o.UpgradeTimeout <= 0 {
		o.UpgradeTimeout = DefaultUpgradeTimeout
	}
	if o.ParkTimeout <= 0 {
		o.ParkTimeout = DefaultParkTimeout
	}
	if o.MaxBuffered <= 0 {
		o.MaxBuffered = DefaultMaxBuffered
	}
	if o.SocketDir == "" {
		o.SocketDir = os.TempDir()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// LastUpgrade returns the phases of the last upgrade this process handed
// over, for an application's metrics; zero before one.
func (u *Upgrader) LastUpgrade() UpgradeStats {
	u.statsMu.Lock()
	defer u.statsMu.Unlock()
	return u.stats
}

func (u *Upgrader) setStats(s UpgradeStats) {
	u.statsMu.Lock()
	u.stats = s
	u.statsMu.Unlock()
}

// HasParent reports whether this process was started by an upgrade.
func (u *Upgrader) HasParent() bool { return u.tf.HasParent() }

// Listen returns a listener inherited from the previous process, or a new
// one. Closing it closes this process's copy only.
func (u *Upgrader) Listen(network, addr string) (*Listener, error) {
	ln, err := u.tf.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("handoff: listen %s %s: %w", network, addr, err)
	}
	l := &Listener{Listener: ln, reg: u.reg, kind: network + ":" + addr}
	u.reg.mu.Lock()
	u.reg.listeners = append(u.reg.listeners, l)
	u.reg.mu.Unlock()
	return l, nil
}

// Wrap tracks a connection this process made or accepted itself, so that it
// is handed over too. The Conn takes ownership of nc. kind travels with it.
func (u *Upgrader) Wrap(nc net.Conn, kind string) *Conn {
	return u.reg.track(nc, kind, nil)
}

// Ready finishes starting this process. In a process started by an upgrade,
// it takes over the old process's connections and state: it receives them,
// calls LoadState, commits, and starts Resume for every connection; on error
// the old process carries on, and this one must exit. In a first process it
// only writes the PID file.
func (u *Upgrader) Ready(ctx context.Context) error {
	if u.parentSock != "" {
		if err := u.takeOver(ctx); err != nil {
			u.log.Error("handoff: takeover failed; the old process carries on", "err", err)
			return err
		}
		return nil
	}
	if err := u.tf.Ready(); err != nil {
		return fmt.Errorf("handoff: ready: %w", err)
	}
	return nil
}

// Binary is the executable an upgrade starts: Options.Binary, or the
// absolute path this process was started from.
func (u *Upgrader) Binary() string { return u.opts.Binary }

// Conns returns the connections this process serves now: accepted through
// its Listeners, wrapped or resumed, and neither closed nor handed over. The
// Upgrader still owns them: closing one closes it for its peer. With
// Options.ListenersOnly, these are what the application has to close after
// Exit is closed.
func (u *Upgrader) Conns() []*Conn {
	u.reg.mu.Lock()
	defer u.reg.mu.Unlock()
	return u.reg.snapshotLocked()
}

// Exit is closed when this process should exit: it has handed everything to
// its successor (with Options.ListenersOnly, its listeners; its connections
// are still its own), or Stop was called.
func (u *Upgrader) Exit() <-chan struct{} { return u.exitC }

// Stop ends the Upgrader for a stop of the service: no more upgrades, and
// Exit is closed. Safe to call more than once.
//
// It returns nil if this process owns its state and connections: the
// application saves what it must and exits. It returns ErrHandedOver if a
// successor owns them (an upgrade committed): the application must not
// save its state, which is stale.
func (u *Upgrader) Stop() error {
	u.stopOnce.Do(func() {
		if u.sigC != nil {
			signal.Stop(u.sigC)
		}
		u.tf.Stop()
	})
	return nil
}

func (u *Upgrader) watchExit() {
	<-u.tf.Exit()
	// After a successful upgrade, Exit closes only once the handover is
	// done; see finishUpgrade.
	u.busy.Lock()
	defer u.busy.Unlock()
	u.exitOnce.Do(func() { close(u.exitC) })
}

func (u *Upgrader) onSignal() {
	for range u.sigC {
		u.log.Info("handoff: SIGHUP: upgrading", "binary", u.opts.Binary)
		go func() { _ = u.Upgrade(context.Background()) }()
	}
}

// Upgrade starts the binary and hands it this process's listeners,
// connections and state (with Options.ListenersOnly, its listeners only).
// It returns nil once the new process has committed; this process should
// then exit (Exit is closed), with Options.ListenersOnly once it has closed
// the connections it still serves. On error, nothing was
// handed over and every connection carries on here. A call made while an
// upgrade runs returns ErrUpgradeInProgress.
func (u *Upgrader) Upgrade(ctx context.Context) error {
	if !u.busy.TryLock() {
		u.log.Warn("handoff: upgrade refused: another upgrade is in progress")
		return ErrUpgradeInProgress
	}
	start := time.Now()
	err := u.upgrade(ctx)
	if err != nil {
		u.log.Error("handoff: upgrade failed; this process carries on", "err", err, "took", time.Since(start))
		return err
	}
	u.log.Info("handoff: upgrade committed; exiting", "took", time.Since(start))
	return nil
}
