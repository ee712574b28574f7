package app

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/examples/pdf/internal/server"
	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/statefile"
)

// markerSuffix names the marker beside the state file: PATH.running.
const markerSuffix = ".running"

// stateFile is the ledger's file across a cold restart (-state PATH) and
// the marker beside it, PATH.running.
//
// The marker exists while a server that has not saved its final snapshot
// serves the ledger. A server claims it (writes its pid and start time
// there) before it serves; a final save removes it once PATH is durably
// written. So a cold start that finds it knows that the last server did
// not save at its end (it was killed, it crashed, its final save failed,
// or it still runs), and that PATH, if there is one, is older than what
// clients were told. An upgrade leaves it in place: the new process, which
// owns the ledger now, claims it again, and the old one neither saves nor
// removes it.
type stateFile struct {
	path string
}

func (s stateFile) markerPath() string { return s.path + markerSuffix }

// marker is what a marker file says about the server that wrote it.
type marker struct {
	pid     int
	started string // RFC 3339
	version string
}

func (m marker) String() string {
	if m.pid == 0 {
		return "a server"
	}
	return fmt.Sprintf("pid %d (%s, started %s)", m.pid, m.version, m.started)
}

// readMarker reads the marker at path. A marker it cannot parse is a
// marker all the same: its existence is what counts.
func readMarker(path string) (marker, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return marker{}, err
	}
	var m marker
	for _, f := range strings.Fields(string(b)) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "pid":
			m.pid, _ = strconv.Atoi(v)
		case "started":
			m.started = v
		case "version":
			m.version = v
		}
	}
	return m, nil
}

// claim writes the marker, atomically, naming this process.
func (s stateFile) claim(version string) error {
	return statefile.WriteFile(s.markerPath(), func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "pid=%d started=%s version=%s\n",
			os.Getpid(), time.Now().UTC().Format(time.RFC3339Nano), version)
		return err
	})
}

// probe checks that a file can be created beside the state file, so that
// a server that could not save its ledger at the end refuses to start.
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

// coldStart says what an operator allows a cold start to do with the state.
type coldStart struct {
	reset       bool // -state-reset: start empty, whatever is there
	acceptStale bool // -state-accept-stale: serve what is there, stale or missing
	snapshots   bool // -snapshot: the operator accepts losing what came after the last snapshot
}

// openCold loads the state of a process that starts cold: no parent hands
// it a ledger, so the file is all there is. It refuses (returns an error)
// whenever starting would serve balances below what clients were told
// without the operator saying so: a marker left by a server that did not
// save at its end, a corrupt file, or a missing file where a corrupt one
// was moved aside.
func (s stateFile) openCold(srv *server.Server, opts coldStart, log *slog.Logger) error {
	if opts.reset {
		return s.reset(log)
	}
	last, err := readMarker(s.markerPath())
	stale := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state file %s: read the marker beside it: %w", s.path, err)
	}
	err = statefile.ReadFile(s.path, srv.LoadState)
	var corrupt *statefile.CorruptFileError
	switch {
	case errors.As(err, &corrupt):
		if corrupt.MovedTo == "" {
			return fmt.Errorf("%w; start with -state-reset to start with an empty ledger on purpose", err)
		}
		return fmt.Errorf("state file %s is corrupt and was moved to %s (%w); "+
			"start with -state-reset to start with an empty ledger on purpose", s.path, corrupt.MovedTo, corrupt.Err)
	case errors.Is(err, fs.ErrNotExist):
		if aside, _ := filepath.Glob(statefile.AsidePattern(s.path, "corrupt")); len(aside) > 0 {
			return fmt.Errorf("no state file %s, but %s is there: a start found the file corrupt and moved it aside; "+
				"start with -state-reset to start with an empty ledger on purpose", s.path, aside[len(aside)-1])
		}
		if !stale {
			log.Info("no state file; starting empty", "path", s.path)
			return nil
		}
		if !opts.acceptStale && !opts.snapshots {
			return fmt.Errorf("no state file %s, but %s says that %s served a ledger and did not save it at its end "+
				"(it was killed, it crashed, its final save failed, or it still runs): its balances are lost; "+
				"start with -state-accept-stale to start empty anyway", s.path, s.markerPath(), last)
		}
		log.Error("serving a stale state file", "path", s.path, "marker", s.markerPath(), "last", last.String(),
			"written", "never: starting empty", "accepted_by", acceptedBy(opts))
		return nil
	case err != nil:
		return err
	}
	if !stale {
		log.Info("state restored", "path", s.path)
		return nil
	}
	written := snapshotTime(s.path)
	if opts.snapshots {
		log.Warn("the last server did not stop cleanly; serving its last snapshot", "path", s.path,
			"written", written, "last", last.String(), "lost", "changes after the snapshot", "accepted_by", "-snapshot")
		return nil
	}
	if !opts.acceptStale {
		return fmt.Errorf("state file %s, written %s, is older than what clients were told: %s says that %s "+
			"served from it and did not save at its end (it was killed, it crashed, its final save failed, "+
			"or it still runs); start with -state-accept-stale to serve it anyway",
			s.path, written, s.markerPath(), last)
	}
	log.Error("serving a stale state file", "path", s.path, "marker", s.markerPath(), "last", last.String(),
		"written", written, "accepted_by", "-state-accept-stale")
	return nil
}

// acceptedBy names the flag that lets a cold start serve a stale ledger.
func acceptedBy(opts coldStart) string {
	if opts.snapshots {
		return "-snapshot"
	}
	return "-state-accept-stale"
}

// snapshotTime says when the state file at path was written, from its
// header.
func snapshotTime(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "at an unknown time"
	}
	defer f.Close()
	r, err := statefile.NewReader(f)
	if err != nil {
		return "at an unknown time"
	}
	return r.Header().Created.UTC().Format(time.RFC3339)
}

// reset starts with an empty ledger on purpose. The file there, if any,
// is moved aside rather than overwritten at the next save: a -state-reset
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

// openUpgraded prepares the state of a process started by an upgrade. In
// full mode the ledger comes from the old process in memory; in the other
// modes the old process has just written the file, and nothing but that
// file will do: any error fails the upgrade, and the old process carries
// on. The marker is the old process's until this one is ready.
func (s stateFile) openUpgraded(srv *server.Server, fromFile bool, log *slog.Logger) error {
	if !fromFile {
		return nil
	}
	if err := statefile.ReadFile(s.path, srv.LoadState); err != nil {
		return err
	}
	log.Info("state restored", "path", s.path)
	return nil
}

// finalSave writes the ledger for good (see server.FinalSave) and then
// removes the marker. If the save fails, the server carries on; if only
// the marker could not be removed, the ledger is saved and locked.
func (s stateFile) finalSave(srv *server.Server) (saved bool, err error) {
	err = srv.FinalSave(func(write func(io.Writer) error) error { return statefile.WriteFile(s.path, write) })
	if err != nil {
		return false, err
	}
	if err := statefile.Remove(s.markerPath()); err != nil {
		return true, fmt.Errorf("state saved to %s, but the next start will take it for stale (remove %s "+
			"by hand once the cause is fixed): %w", s.path, s.markerPath(), err)
	}
	return true, nil
}

// shutdown ends the upgrader and saves the ledger for the next cold start,
// if this process still owns it. done says whether the process may exit,
// with err nil for exit code 0. If the save fails, done is false: the
// server carries on, and the next stop signal tries again.
func shutdown(st stateFile, srv *server.Server, stop func() error, log *slog.Logger) (done bool, err error) {
	if err := stop(); errors.Is(err, handoff.ErrHandedOver) {
		// An upgrade committed: this process's ledger is stale, and the
		// successor, to which the library passes the stop, saves its own.
		log.Info("not saving: the successor owns the ledger and saves it when it stops", "path", st.path)
		return true, nil
	} else if err != nil {
		return true, fmt.Errorf("stop: %w", err)
	}
	if st.path == "" {
		return true, nil
	}
	saved, err := st.finalSave(srv)
	switch {
	case !saved:
		log.Error("state not saved; still serving", "path", st.path, "err", err,
			"todo", "fix the cause, then send SIGTERM again; SIGKILL loses every change since the last save")
		return false, nil
	case err != nil:
		return true, err
	}
	log.Info("state saved", "path", st.path)
	return true, nil
}
