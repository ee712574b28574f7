package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/examples/pdf/internal/server"
	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/systemd"
)

// Upgrade modes, as -upgrade-mode names them. A benchmark compares them on
// otherwise identical servers.
const (
	// modeFull hands listeners, connections and state to the new process.
	modeFull = "full"
	// modeRolling hands over the listeners and a snapshot of the ledger
	// taken while serving, then each connection at its own next request,
	// carrying the accounts it changed. Exact only while each account is
	// used by one connection at a time (server.RollingUpgrades).
	modeRolling = "rolling"
	// modeListeners hands over the listeners only, as tableflip-style
	// libraries do: the state travels through the -state file, and the old
	// process drains its connections, then closes them.
	modeListeners = "listeners"
	// modeRestart stops, writes the state file and executes the binary
	// again in the same process.
	modeRestart = "restart"
)

// config is what the flags say.
type config struct {
	listen           string
	pidfile          string
	state            string
	stateReset       bool
	stateAcceptStale bool
	upgradeTimeout   time.Duration
	upgradeMode      string
	drainTimeout     time.Duration
	control          string
	metrics          string
	snapshot         time.Duration
	fdstore          bool
	fdstoreMax       int
	args             []string // after the flags: there must be none
}

// usage is what -h prints before the flags.
const usage = `Usage: %[1]s [flags]

%[1]s is the PDF charging server, the example application of the handoff
library: it keeps account balances (in cents) in memory and serves them
over TCP, one request per line and one reply line per request, in order:
HELLO, TOPUP, CHARGE, BALANCE, WHOAMI, VERSION and, from v2 on, STATS (for
example "TOPUP r1 alice 100" is answered "OK r1 100"). examples/pdf/README.md
describes every command and reply, the state file and the upgrade modes.

Signals:
  SIGHUP           upgrade to the binary now at the path this one was
                   started from, in the -upgrade-mode.
  SIGTERM, SIGINT  stop: save the ledger to -state, if set, and exit 0. If
                   the save fails (a full or read-only disk), the server
                   keeps serving and logs "state not saved; still serving":
                   fix the cause and send SIGTERM again (SIGKILL loses the
                   changes since the last save). A stop during or after an
                   upgrade is saved by the process that owns the ledger: once
                   the upgrade has committed, that is the successor, and the
                   old process exits without saving.

State: a cold start restores -state FILE. While a server runs, FILE.running
says that the ledger is not saved yet; a cold start that finds it (the last
server was killed, crashed or could not save) refuses, since FILE is older
than what clients were told, unless -state-accept-stale. A corrupt FILE is
moved aside to FILE.corrupt-TIME and the start refuses, unless -state-reset.
Neither flag acts in the new process of an upgrade or a restart.

Exit status: 0 after a stop that saved the ledger or found it handed over;
1 if the server refused to start or failed; 2 for a usage error.

Flags:
`

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet(os.Args[0], flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), usage, filepath.Base(os.Args[0]))
		fs.PrintDefaults()
	}
	fs.StringVar(&c.listen, "listen", "127.0.0.1:7070", "`address` to serve on")
	fs.StringVar(&c.pidfile, "pidfile", "", "`file` to write the ready process's pid to")
	fs.StringVar(&c.state, "state", "", "`file` for the ledger across a cold restart (and FILE.running beside it)")
	fs.BoolVar(&c.stateReset, "state-reset", false,
		"start with an empty ledger on purpose: a file at -state is moved aside to FILE.reset-TIME, not read")
	fs.BoolVar(&c.stateAcceptStale, "state-accept-stale", false,
		"serve the -state file even though FILE.running says the last server did not save at its end "+
			"(balances may be below what clients were told); with no file, start empty")
	fs.DurationVar(&c.upgradeTimeout, "upgrade-timeout", 0, "bound on an upgrade (0: the library default)")
	fs.StringVar(&c.upgradeMode, "upgrade-mode", modeFull,
		"what SIGHUP does: `mode` full (hand over listeners, connections and state), "+
			"rolling (hand over listeners and a snapshot of the ledger taken while serving, then each connection "+
			"at its own next request with the balances it changed; exact only if each account is used by one "+
			"connection at a time), "+
			"listeners (hand over listeners; state through -state; drain, then close the old connections) "+
			"or restart (save -state, stop, execute the binary again)")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 5*time.Second,
		"in listeners mode, how long the old process serves its connections after an upgrade")
	fs.StringVar(&c.control, "control", "", "control socket `path` for handoffctl status and upgrade")
	fs.StringVar(&c.metrics, "metrics", "", "`address` to serve /metrics, /alive and /ready on (HTTP; none if empty)")
	fs.DurationVar(&c.snapshot, "snapshot", 0,
		"write the ledger to -state every `interval` while serving, so that a crash loses at most that much; "+
			"a start after a crash then serves the last snapshot (as -state-accept-stale would) instead of refusing")
	fs.BoolVar(&c.fdstore, "fdstore", false,
		"under systemd, keep the listener and every connection in the service's file descriptor store "+
			"(FileDescriptorStoreMax=), so that clients keep their connections when the process crashes "+
			"and Restart= starts it again; needs -snapshot")
	fs.IntVar(&c.fdstoreMax, "fdstore-max", systemd.DefaultMaxKept,
		"with -fdstore, keep at most `n` connections in the store (more are served, not kept); "+
			"set FileDescriptorStoreMax= to n plus the listeners")
	err := fs.Parse(args)
	c.args = fs.Args()
	return c, err
}

// check refuses flag combinations that cannot work.
func (c config) check() error {
	if len(c.args) > 0 {
		return fmt.Errorf("unexpected argument %q: the server takes flags only (see -h)", c.args[0])
	}
	if c.state == "" && (c.stateReset || c.stateAcceptStale) {
		return errors.New("-state-reset and -state-accept-stale need -state")
	}
	if c.snapshot != 0 && (c.state == "" || c.snapshot < 0) {
		return errors.New("-snapshot needs -state and a positive interval")
	}
	if c.fdstore && c.snapshot == 0 {
		return errors.New("-fdstore needs -snapshot: a process that takes the connections back after a crash " +
			"must also find the ledger they were served from")
	}
	if c.stateReset && c.stateAcceptStale {
		return errors.New("-state-reset and -state-accept-stale exclude each other: start empty, or serve the stale file")
	}
	switch c.upgradeMode {
	case modeFull, modeRolling:
		return nil
	case modeListeners, modeRestart:
		if c.state == "" {
			return fmt.Errorf("-upgrade-mode %s needs -state: the ledger reaches the next process only through that file", c.upgradeMode)
		}
		return nil
	}
	return fmt.Errorf("-upgrade-mode %q: want %s, %s, %s or %s", c.upgradeMode,
		modeFull, modeRolling, modeListeners, modeRestart)
}

// Run runs a PDF server process to its end and returns its exit code: 0
// after a stop that saved the ledger or found it handed over, or for -h; 1
// if the server refused to start or failed; 2 for a usage error.
// version answers VERSION; led is the empty ledger of that version.
func Run(version string, led server.Ledger, args []string) int {
	cfg, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2 // the flag package has said why
	}
	// The handoff library adds the pid to its own lines.
	base := slog.New(slog.NewTextHandler(os.Stderr, nil))
	log := base.With("pid", os.Getpid())
	if err := cfg.check(); err != nil {
		log.Error("refusing to start", "err", err)
		return 2
	}
	srv := server.New(version, led, log)
	p, err := start(cfg, version, srv, base, log)
	if err != nil {
		log.Error("refusing to start", "err", err)
		return 1
	}
	if err := p.run(); err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

// start makes the process ready to serve: signals, the upgrader, the
// ledger, the listener. An error means that it must exit without having
// served; in a process started by an upgrade, the old process carries on.
func start(cfg config, version string, srv *server.Server, base, log *slog.Logger) (*process, error) {
	// Before anything can take long, so that a stop request is never lost.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	// The application triggers the upgrade in every mode, so that every
	// mode logs its start and end alike.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	if cfg.upgradeMode == modeRolling {
		srv.RollingUpgrades()
	}
	up, err := handoff.New(upgraderOptions(cfg, version, srv, base))
	if err != nil {
		return nil, err
	}
	st, err := openState(cfg, up.HasParent(), srv, log)
	if err != nil {
		return nil, err
	}
	ln, err := up.Listen("tcp", cfg.listen)
	if err != nil {
		return nil, err
	}
	obs, err := newObserver(up, cfg.metrics, srv)
	if err != nil {
		return nil, err
	}
	if err := up.Ready(context.Background()); err != nil {
		return nil, fmt.Errorf("ready: %w", err)
	}
	obs.serve(log)
	if st.path != "" {
		if err := st.claim(version); err != nil {
			if !up.HasParent() {
				return nil, fmt.Errorf("state file %s: %w", st.path, err)
			}
			// Too late to refuse: the old process has handed over and
			// exits. Its marker stays, which is all a cold start needs.
			log.Error("marker not rewritten; it still names the old process", "err", err)
		}
	}
	log.Info("serving", "version", version, "addr", ln.Addr().String(), "upgraded", up.HasParent(),
		"upgrade_mode", cfg.upgradeMode)
	logRestarted(log)
	go srv.Serve(ln)
	return &process{cfg: cfg, version: version, state: st, srv: srv, up: up, ln: ln, log: log,
		stop: stop, hup: hup}, nil
}

// upgraderOptions are the handoff library's options for cfg.
func upgraderOptions(cfg config, version string, srv *server.Server, base *slog.Logger) handoff.Options {
	return handoff.Options{
		// pdf-v1 and pdf-v2 are two main packages of one application:
		// each upgrades into the other.
		App:            "pdf",
		Version:        version,
		PIDFile:        cfg.pidfile,
		UpgradeTimeout: cfg.upgradeTimeout,
		SaveState:      srv.SaveState,
		LoadState:      srv.LoadState,
		Resume:         srv.Resume,
		Mode:           libraryMode(cfg.upgradeMode),
		// A connection that cannot move (its handler is stuck in a write
		// to a client that does not read) cannot carry its accounts
		// either: served on here, it would change a ledger nobody reads
		// again. Closed, its client at least learns that something went
		// wrong.
		Stragglers:    handoff.CloseStragglers,
		NoSignal:      true, // SIGHUP is run's: see start
		Logger:        base,
		ControlSocket: cfg.control,
		Supervisor:    systemd.New(systemd.Options{KeepSockets: cfg.fdstore, MaxKept: cfg.fdstoreMax, Logger: base}),
	}
}

// openState loads the ledger from -state as this start must. A process
// upgraded in full or rolling mode gets the ledger from its parent; in the
// other modes the file is the only way. The image a restart executes has
// the same flags but, like the new process of an upgrade, takes over a
// ledger saved a moment ago: the operator's -state-reset or
// -state-accept-stale was for a cold start.
func openState(cfg config, upgraded bool, srv *server.Server, log *slog.Logger) (stateFile, error) {
	st := stateFile{path: cfg.state}
	if st.path == "" {
		return st, nil
	}
	if err := st.probe(); err != nil {
		return st, err
	}
	if upgraded {
		return st, st.openUpgraded(srv, stateByFile(cfg.upgradeMode), log)
	}
	opts := coldStart{reset: cfg.stateReset, acceptStale: cfg.stateAcceptStale, snapshots: cfg.snapshot > 0}
	if os.Getenv(envRestartedAt) != "" {
		opts = coldStart{}
	}
	return st, st.openCold(srv, opts, log)
}

// run serves until the process hands over or stops.
func (p *process) run() error {
	exit := p.up.Exit()
	stopping := false // a stop's final save failed: the process serves on
	endSnapshots := p.startSnapshots()
	defer endSnapshots()
	for {
		select {
		case <-exit:
			p.upgrades.Wait() // its last log line first
			// A stop that reached this process from the commit on goes
			// to the successor, which saves: none is lost as it exits.
			defer p.up.Exiting()
			if p.cfg.upgradeMode == modeListeners {
				p.drain(p.stop)
				return nil
			}
			// The successor owns the connections now; closing them here
			// would close them for the clients.
			p.log.Info("handed over; exiting")
			return nil
		case sig := <-p.stop:
			p.log.Info("stopping", "signal", sig.String())
			endSnapshots()
			done, err := shutdown(p.state, p.srv, p.up.Stop, p.log)
			if done {
				return err
			}
			// Stop has closed Exit, but this process still owns the
			// ledger and serves it until a save succeeds.
			exit, stopping = nil, true
		case <-p.hup:
			if stopping {
				p.log.Warn("upgrade refused: the state is not saved", "mode", p.cfg.upgradeMode,
					"todo", "fix the cause, then send SIGTERM again")
				continue
			}
			if p.cfg.upgradeMode == modeRestart {
				if err := p.restart(); err != nil {
					return err
				}
				continue // it did not start: this process carries on
			}
			p.upgrades.Add(1)
			go p.upgrade()
		}
	}
}

// libraryMode is the library's mode for an -upgrade-mode. Restart mode
// does not use the library's upgrades at all.
func libraryMode(mode string) handoff.Mode {
	switch mode {
	case modeListeners:
		return handoff.ListenersOnly
	case modeRolling:
		return handoff.Rolling
	}
	return handoff.AllAtOnce
}

// stateByFile says whether the ledger reaches the next process through
// the -state file in mode, rather than from the old process.
func stateByFile(mode string) bool {
	return mode == modeListeners || mode == modeRestart
}
