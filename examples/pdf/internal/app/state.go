package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/handoff-dev/handoff/examples/pdf/internal/server"
	"github.com/handoff-dev/handoff/statefile"
)

// markerSuffix names the marker beside the state file: PATH.running.
const markerSuffix = ".running"

// stateFile is the ledger's file across a cold start (-state PATH) and the
// marker beside it, PATH.running, which exists while a server serves a
// ledger it has not saved: a start claims it before it serves, and a final
// save removes it once PATH is durably written. So a cold start that finds
// it knows that PATH, if any, is older than what clients were told. An
// upgrade's new process claims it again; the old one leaves it alone.
type stateFile struct {
	path string
}

func (s stateFile) markerPath() string { return s.path + markerSuffix }

// marker is what a marker file says about the server that wrote it.
type marker struct {
	pid              int
	started, version string
}

func (m marker) String() string {
	if m.pid == 0 {
		return "a server"
	}
	return fmt.Sprintf("pid %d (%s, started %s)", m.pid, m.version, m.started)
}

// readMarker reads the marker at path. One it cannot parse is a marker all
// the same: its existence is what counts.
func readMarker(path string) (marker, error) {
	b, err := os.ReadFile(path)
	var m marker
	if err == nil {
		fmt.Sscanf(string(b), "pid=%d started=%s version=%s", &m.pid, &m.started, &m.version)
	}
	return m, err
}

// claim writes the marker, atomically, naming this process.
func (s stateFile) claim(version string) error {
	return statefile.WriteFile(s.markerPath(), func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "pid=%d started=%s version=%s\n",
			os.Getpid(), time.Now().UTC().Format(time.RFC3339Nano), version)
		return err
	})
}

// probe checks that a file can be created beside the state file: a server
// that could not save its ledger at the end must not start.
func (s stateFile) probe() error {
	f, err := os.CreateTemp(filepath.Dir(s.path), "."+filepath.Base(s.path)+".probe-*")
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // its name is a temporary one
		}
		return fmt.Errorf("state file %s: cannot create a file in its directory, so the ledger could not be saved: %w",
			s.path, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// coldStart says what the operator allows a cold start to do.
type coldStart struct {
	reset       bool // -state-reset: start empty, whatever is there
	acceptStale bool // -state-accept-stale: serve what is there, stale or missing
	snapshots   bool // -snapshot: losing what came after the last snapshot is accepted
}

const resetHint = "start with -state-reset to start with an empty ledger on purpose"

// openCold loads the ledger of a process that starts cold: the file is all
// there is. It refuses whenever starting would serve balances below what
// clients were told without the operator saying so: a marker left by a
// server that did not save at its end, a corrupt file, or a missing file
// where a corrupt one was moved aside.
func (s stateFile) openCold(srv *server.Server, opts coldStart, log *slog.Logger) error {
	if opts.reset {
		return s.reset(log)
	}
	last, err := readMarker(s.markerPath())
	stale := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state file %s: read the marker beside it: %w", s.path, err)
	}
	didNotSave := func(served string) string {
		return fmt.Sprintf("%s says that %s served %s and did not save at its end "+
			"(it was killed, it crashed, its final save failed, or it still runs)", s.markerPath(), last, served)
	}
	written := "never: starting empty"
	err = statefile.ReadFile(s.path, srv.LoadState)
	var corrupt *statefile.CorruptFileError
	switch {
	case errors.As(err, &corrupt) && corrupt.MovedTo == "":
		return fmt.Errorf("%w; %s", err, resetHint)
	case errors.As(err, &corrupt):
		return fmt.Errorf("state file %s is corrupt and was moved to %s (%w); %s", s.path, corrupt.MovedTo, corrupt.Err, resetHint)
	case errors.Is(err, fs.ErrNotExist):
		if aside, _ := filepath.Glob(statefile.AsidePattern(s.path, "corrupt")); len(aside) > 0 {
			return fmt.Errorf("no state file %s, but %s is there: a start found the file corrupt and moved it aside; %s",
				s.path, aside[len(aside)-1], resetHint)
		}
		if !stale {
			log.Info("no state file; starting empty", "path", s.path)
			return nil
		}
		if !opts.acceptStale && !opts.snapshots {
			return fmt.Errorf("no state file %s, but %s: its balances are lost; "+
				"start with -state-accept-stale to start empty anyway", s.path, didNotSave("a ledger"))
		}
	case err != nil:
		return err
	case !stale:
		log.Info("state restored", "path", s.path)
		return nil
	case opts.snapshots:
		log.Warn("the last server did not stop cleanly; serving its last snapshot", "path", s.path,
			"written", snapshotTime(s.path), "last", last.String(), "lost", "changes after the snapshot",
			"accepted_by", "-snapshot")
		return nil
	case !opts.acceptStale:
		return fmt.Errorf("state file %s, written %s, is older than what clients were told: %s; "+
			"start with -state-accept-stale to serve it anyway", s.path, snapshotTime(s.path), didNotSave("from it"))
	default:
		written = snapshotTime(s.path)
	}
	acceptedBy := "-state-accept-stale"
	if opts.snapshots {
		acceptedBy = "-snapshot"
	}
	log.Error("serving a stale state file", "path", s.path, "marker", s.markerPath(), "last", last.String(),
		"written", written, "accepted_by", acceptedBy)
	return nil
}

// snapshotTime says when the state file at path was written, from its
// header.
func snapshotTime(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "at an unknown time"
	}
	defer f.Close()
	if r, err := statefile.NewReader(f); err == nil {
		return r.Header().Created.UTC().Format(time.RFC3339)
	}
	return "at an unknown time"
}

// reset starts with an empty ledger on purpose. The file there, if any, is
// moved aside rather than overwritten at the next save: a -state-reset
// forgotten in a unit file must not destroy a good ledger.
func (s stateFile) reset(log *slog.Logger) error {
	attrs := []any{"path", s.path, "asked_by", "-state-reset"}
	if _, err := os.Lstat(s.path); err == nil {
		aside, err := statefile.MoveAside(s.path, "reset")
		if err != nil {
			return err
		}
		attrs = append(attrs, "moved_to", aside)
	}
	log.Warn("starting with an empty ledger", attrs...)
	return nil
}

// finalSave writes the ledger for good (see server.FinalSave), then
// removes the marker. If the save fails, the server carries on; if only
// the marker could not be removed, the ledger is saved and locked.
func (s stateFile) finalSave(srv *server.Server) (saved bool, err error) {
	if err := srv.FinalSave(func(write func(io.Writer) error) error { return statefile.WriteFile(s.path, write) }); err != nil {
		return false, err
	}
	if err := statefile.Remove(s.markerPath()); err != nil {
		return true, fmt.Errorf("state saved to %s, but the next start will take it for stale (remove %s "+
			"by hand once the cause is fixed): %w", s.path, s.markerPath(), err)
	}
	return true, nil
}

// save is the final save at a stop (handoff.Run calls it only while this
// process owns the ledger): the ledger for the next cold start, locked
// from then on, and the marker removed. If the save fails, Run logs it
// and the server carries on; the next stop signal tries again. If only
// the marker could not be removed, the ledger is saved and the process
// exits 1.
func (p *process) save() error {
	p.endSnapshots() // none may overwrite the final save
	if p.state.path == "" {
		return nil
	}
	saved, err := p.state.finalSave(p.srv)
	switch {
	case !saved:
		return err
	case err != nil:
		p.exitErr = err
		return nil
	}
	p.log.Info("state saved", "path", p.state.path)
	return nil
}

// snapshots writes the ledger to -state every -snapshot interval while
// this process serves, so that a crash loses at most one interval. It
// returns the function that ends them, which may be called twice and
// returns once no snapshot can overwrite a final save.
func (p *process) snapshots() (end func()) {
	if p.cfg.snapshot <= 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		t := time.NewTicker(p.cfg.snapshot)
		defer t.Stop()
		failing := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if !p.up.Serving() { // upgrading, handed over or stopping
				continue
			}
			err := statefile.WriteFile(p.state.path, p.srv.SaveState)
			if err != nil && !failing {
				p.log.Error("snapshot not written; a crash now loses more", "path", p.state.path, "err", err)
			} else if err == nil && failing {
				p.log.Info("snapshots written again", "path", p.state.path)
			}
			failing = err != nil
		}
	}()
	return func() { cancel(); <-ended }
}
