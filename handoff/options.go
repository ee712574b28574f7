package handoff

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Defaults for zero Options fields.
const (
	DefaultUpgradeTimeout = 30 * time.Second
	DefaultPauseTimeout   = 5 * time.Second
	DefaultParkTimeout    = 2 * time.Second
	DefaultMaxBuffered    = 64 << 10
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
	// Precopy, if set, moves the application's state in two parts in an
	// AllAtOnce upgrade, so that the pause holds only what changed: the
	// bulk (Precopy.Save) goes to the new process, and is loaded there
	// (Precopy.Load), while every connection is still served; then, once
	// they are all parked, only what changed since (Precopy.SaveChanges,
	// Precopy.LoadChanges) instead of the whole state (SaveState,
	// LoadState). For a large state that changes little in the moment of
	// an upgrade, such as a ledger of a million accounts, it takes the
	// saving and loading of the bulk out of the pause.
	//
	// SaveState and LoadState must be set too: the other modes and an
	// upgrade whose new process does not pre-copy use them. In
	// Rolling mode (which sends its state while serving anyway) and
	// ListenersOnly mode (no state) Precopy is never called. The old
	// process offers the pre-copy (PROTOCOL.md); a new process with
	// Precopy takes it, one without declines it, and the upgrade runs as
	// without a pre-copy: SaveState in the pause, then LoadState. The new
	// binary must be built with this release of the library or a later
	// one: an earlier one refuses the offer, and the upgrade rolls back
	// (cause CauseRejected), the old process serving on.
	//
	// The pre-copy counts in UpgradeTimeout, not in PauseTimeout. An
	// error or a panic of Save or Load rolls the upgrade back (a Load
	// error with cause CauseRejected): the old process serves on with its
	// state as it was, and the new one exits; a failing SaveChanges or
	// LoadChanges does what a failing SaveState or LoadState does.
	// Precopy with any of its functions nil is an error of New.
	Precopy *Precopy
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
	// BeforeUpgrade, if set, is called in the old process as each upgrade
	// begins, whatever triggered it (Upgrade, SIGHUP, the control socket,
	// a peer), before the new process is started or let in: for what the
	// new process needs from outside the handoff, such as a state file it
	// reads in ListenersOnly mode, where no state travels. An error (or a
	// panic) refuses the upgrade: nothing is started, the process serves
	// on, the result's Cause is CauseRefused, and a peer is told BUSY and
	// asks again.
	BeforeUpgrade func() error
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
	// TakeoverSocket, if set, lets a process this one did not start take
	// over from it: another container of a pod, started from a new image
	// while this one serves (kubernetes/README.md). New connects to it:
	// if a process serves there, this one takes over from it exactly as
	// an exec'd new process does (Ready commits or fails; HasParent is
	// true); if nothing does, this process is the first, and listens
	// there for the next one. Either way it hands the socket on, so that
	// it never stops answering. It is a SOCK_SEQPACKET socket, made
	// 0600, in a directory made 0700 if missing (as ControlSocket's),
	// which both processes must see: a volume they share. Only a peer of
	// this process's uid is let in, checked on both ends. The old process
	// cannot stop or kill a peer: a failed takeover is refused with ABORT
	// and the peer's Ready returns the error; the peer must exit. After a
	// peer commits, no stop is passed on to it (Stop returns
	// ErrHandedOver). Linux only: elsewhere New fails with an error
	// wrapping ErrNotSupported. Default: none.
	TakeoverSocket string
	// TakeoverTokenFile, if set, holds a secret (a mounted Secret, say)
	// that a peer taking over through TakeoverSocket must present; both
	// sides read it, the serving one at each connection. A trailing
	// newline is ignored. Default: none (the uid check alone).
	TakeoverTokenFile string
	// Supervisor, if set, is the service manager this process runs under
	// (systemd.New for systemd): it is told when the process serves,
	// upgrades, rolls back and stops; Listen adopts the listening sockets
	// it passed a first process (socket activation); and it may keep a
	// copy of every listener and connection so that they outlive a crash,
	// Ready resuming in a first process the connections it kept. Default:
	// none.
	Supervisor Supervisor
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
	for _, p := range []*string{&o.TakeoverSocket, &o.TakeoverTokenFile} {
		if *p != "" {
			if *p, err = filepath.Abs(*p); err != nil {
				return fmt.Errorf("handoff: takeover path: %w", err)
			}
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
	if o.Precopy != nil {
		if err := o.Precopy.check(o); err != nil {
			return err
		}
	}
	if o.MaxBuffered <= 0 {
		o.MaxBuffered = DefaultMaxBuffered
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Precopy is Options.Precopy: how the application's state moves in two
// parts. Save and then SaveChanges run in the old process, on the
// upgrade's goroutine; Load and then LoadChanges in the new one, in Ready.
// An error or a panic of any of them fails the upgrade.
type Precopy struct {
	// Save writes the bulk of the state to the new process, in the old
	// process, while every connection is still served: after the early
	// fds and before anything is parked. The application begins tracking
	// what it changes from the moment Save reads it, so that SaveChanges
	// can tell. If the upgrade then fails, SaveChanges is not called: the
	// application may find its tracking on at the next Save, which begins
	// it again.
	Save func(w io.Writer) error
	// SaveChanges writes, in the old process, in the pause (every
	// connection parked), what changed since Save read the state. It
	// replaces SaveState in an upgrade whose Save ran.
	SaveChanges func(w io.Writer) error
	// Load reads what Save wrote, in the new process, while the old one
	// still serves. The old process parks nothing until Load has
	// returned, so the pause never includes it. An error rejects the
	// upgrade, as one of LoadState does.
	Load func(r io.Reader) error
	// LoadChanges reads what SaveChanges wrote, in the new process, in
	// the pause, and applies it on what Load read. It replaces LoadState
	// in such an upgrade. An error rejects the upgrade, as one of
	// LoadState does.
	LoadChanges func(r io.Reader) error
}

// check says what is missing from p for Options.Precopy.
func (p *Precopy) check(o *Options) error {
	for _, f := range []struct {
		name string
		set  bool
	}{{"Save", p.Save != nil}, {"SaveChanges", p.SaveChanges != nil}, {"Load", p.Load != nil},
		{"LoadChanges", p.LoadChanges != nil}} {
		if !f.set {
			return fmt.Errorf("handoff: Options.Precopy.%s is nil: a pre-copy needs all four functions", f.name)
		}
	}
	if o.SaveState == nil || o.LoadState == nil {
		return errors.New("handoff: Options.Precopy is set without SaveState and LoadState, " +
			"which the other modes and a new process that does not pre-copy need")
	}
	return nil
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

	// peer, if set, is the process that asked to take over through the
	// takeover socket: the upgrade starts no process.
	peer *peerConn

	// finish, if set, is called with the outcome before Exit is closed,
	// so that the control socket's answer goes out before the process
	// exits.
	finish func(UpgradeResult)
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

// The environment variables TakeoverFromEnv reads: one place
// (kubernetes/takeover.yaml, a ConfigMap) sets them for every container
// of a pod, where flags could not take their values on every runtime.
const (
	EnvTakeoverSocket    = "HANDOFF_TAKEOVER_SOCKET"     // Options.TakeoverSocket
	EnvTakeoverTokenFile = "HANDOFF_TAKEOVER_TOKEN_FILE" // Options.TakeoverTokenFile
	EnvTakeoverTimeout   = "HANDOFF_TAKEOVER_TIMEOUT"    // Options.UpgradeTimeout, a time.ParseDuration string
	// EnvTakeoverUID is the uid both containers must run as: a process
	// of another uid fails here, at its start, rather than at its first
	// takeover.
	EnvTakeoverUID = "HANDOFF_TAKEOVER_UID"
)

// TakeoverFromEnv sets opts' takeover fields from the environment
// variables Env*: those unset or empty leave opts as they are.
func TakeoverFromEnv(opts *Options) error {
	if v := os.Getenv(EnvTakeoverSocket); v != "" {
		opts.TakeoverSocket = v
	}
	if v := os.Getenv(EnvTakeoverTokenFile); v != "" {
		opts.TakeoverTokenFile = v
	}
	if v := os.Getenv(EnvTakeoverTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("handoff: %s=%q: not a positive duration", EnvTakeoverTimeout, v)
		}
		opts.UpgradeTimeout = d
	}
	if v := os.Getenv(EnvTakeoverUID); v != "" {
		uid, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("handoff: %s=%q: not a uid", EnvTakeoverUID, v)
		}
		if uid != os.Getuid() {
			return fmt.Errorf("handoff: %s says uid %d, this process runs as uid %d: a peer of another uid is never let in",
				EnvTakeoverUID, uid, os.Getuid())
		}
	}
	return nil
}
