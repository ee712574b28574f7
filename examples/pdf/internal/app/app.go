package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/examples/pdf/internal/server"
	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/statefile"
)

// Upgrade modes, as -upgrade-mode names them. A benchmark compares them on
// otherwise identical servers.
const (
	// modeFull hands listeners, connections and state to the new process.
	modeFull = "full"
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
	listen         string
	pidfile        string
	state          string
	upgradeTimeout time.Duration
	upgradeMode    string
	drainTimeout   time.Duration
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet(os.Args[0], flag.ContinueOnError)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:7070", "`address` to serve on")
	fs.StringVar(&c.pidfile, "pidfile", "", "`file` to write the ready process's pid to")
	fs.StringVar(&c.state, "state", "", "`file` for the ledger across a cold restart")
	fs.DurationVar(&c.upgradeTimeout, "upgrade-timeout", 0, "bound on an upgrade (0: the library default)")
	fs.StringVar(&c.upgradeMode, "upgrade-mode", modeFull,
		"what SIGHUP does: `mode` full (hand over listeners, connections and state), "+
			"listeners (hand over listeners; state through -state; drain, then close the old connections) "+
			"or restart (stop, save -state, execute the binary again)")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 5*time.Second,
		"in listeners mode, how long the old process serves its connections after an upgrade")
	return c, fs.Parse(args)
}

// check refuses flag combinations that cannot work.
func (c config) check() error {
	switch c.upgradeMode {
	case modeFull:
		return nil
	case modeListeners, modeRestart:
		if c.state == "" {
			return fmt.Errorf("-upgrade-mode %s needs -state: the ledger reaches the next process only through that file", c.upgradeMode)
		}
		return nil
	}
	return fmt.Errorf("-upgrade-mode %q: want %s, %s or %s", c.upgradeMode, modeFull, modeListeners, modeRestart)
}

// Run runs a PDF server process to its end and returns its exit code.
// version answers VERSION; led is the empty ledger of that version.
func Run(version string, led server.Ledger, args []string) int {
	cfg, err := parseFlags(args)
	if err != nil {
		return 2
	}
	// The handoff library adds the pid to its own lines.
	base := slog.New(slog.NewTextHandler(os.Stderr, nil))
	log := base.With("pid", os.Getpid())
	if err := cfg.check(); err != nil {
		log.Error("refusing to start", "err", err)
		return 2
	}
	srv := server.New(version, led, log)
	if err := run(cfg, version, srv, base, log); err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

func run(cfg config, version string, srv *server.Server, base, log *slog.Logger) error {
	// Before anything can take long, so that a stop request is never lost.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	// The application triggers the upgrade in every mode, so that every
	// mode logs its start and end alike.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)

	up, err := handoff.New(handoff.Options{
		Version:        version,
		PIDFile:        cfg.pidfile,
		UpgradeTimeout: cfg.upgradeTimeout,
		SaveState:      srv.SaveState,
		LoadState:      srv.LoadState,
		Resume:         srv.Resume,
		ListenersOnly:  cfg.upgradeMode == modeListeners,
		NoSignal:       true,
		Logger:         base,
	})
	if err != nil {
		return err
	}
	ln, err := up.Listen("tcp", cfg.listen)
	if err != nil {
		return err
	}
	// A process upgraded in full mode gets the ledger from its parent
	// instead; in the other modes the file is the only way.
	if cfg.state != "" && (!up.HasParent() || cfg.upgradeMode != modeFull) {
		if err := restore(cfg.state, srv, log); err != nil {
			return err
		}
	}
	if err := up.Ready(context.Background()); err != nil {
		return fmt.Errorf("ready: %w", err)
	}
	log.Info("serving", "version", version, "addr", ln.Addr().String(), "upgraded", up.HasParent(),
		"upgrade_mode", cfg.upgradeMode)
	logRestarted(log)
	go srv.Serve(ln)

	p := &process{cfg: cfg, srv: srv, up: up, ln: ln, log: log}
	for {
		select {
		case <-up.Exit():
			p.upgrades.Wait() // its last log line first
			if cfg.upgradeMode == modeListeners {
				p.drain(stop)
				return nil
			}
			// The successor owns the connections now; closing them here
			// would close them for the clients.
			log.Info("handed over; exiting")
			return nil
		case sig := <-stop:
			log.Info("stopping", "signal", sig.String())
			return shutdown(cfg.state, srv, up, log)
		case <-hup:
			if cfg.upgradeMode == modeRestart {
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

// shutdown saves the ledger for the next cold start. The ledger stays
// locked afterwards, so no client is told of a change the file misses.
func shutdown(path string, srv *server.Server, up *handoff.Upgrader, log *slog.Logger) error {
	up.Stop()
	if path == "" {
		return nil
	}
	if err := statefile.WriteFile(path, srv.FinalSave); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	log.Info("state saved", "path", path)
	return nil
}

// restore loads the state file at path, if there is one. A corrupt file
// has been moved aside by statefile.ReadFile and the server starts empty:
// the file is kept for inspection and the next snapshot cannot overwrite
// it. Any other failure (a file of another application, a schema this
// version cannot reach, a file that cannot be read) stops the start, since
// starting empty would lose state that is still there.
func restore(path string, srv *server.Server, log *slog.Logger) error {
	err := statefile.ReadFile(path, srv.LoadState)
	var corrupt *statefile.CorruptFileError
	switch {
	case err == nil:
		log.Info("state restored", "path", path)
		return nil
	case errors.Is(err, fs.ErrNotExist):
		log.Info("no state file; starting empty", "path", path)
		return nil
	case errors.As(err, &corrupt) && corrupt.MovedTo != "":
		log.Error("state file is corrupt; moved aside, starting empty",
			"path", path, "moved_to", corrupt.MovedTo, "err", corrupt.Err)
		return nil
	}
	return fmt.Errorf("restore state: %w", err)
}
