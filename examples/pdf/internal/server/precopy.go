package server

import (
	"errors"
	"fmt"
	"io"

	"github.com/handoff-dev/handoff/examples/pdf/internal/ledger"
)

// A pre-copy (handoff.Precopy) moves the ledger in two parts: its bulk
// while the connections are served (PrecopySave, PreloadState), and in
// the pause only the accounts changed or added since (SaveChanges,
// LoadChanges). A million accounts take ~80 ms to encode and ~190 ms to
// load, all in the pause without it; the changes of a second at 10k
// requests/s take a few ms. Only a server of the v2 layout pre-copies.

// base is the ledger a pre-copy brought, not yet served: the changes
// complete it.
type base struct {
	led    *ledger.V2
	gen    uint64 // the generation its file carries, which the changes' must match
	schema uint32 // the schema it came in
}

// errNoPrecopy: a pre-copy needs the v2 layout on both sides.
var errNoPrecopy = errors.New("pre-copy: the ledger is not in the v2 layout")

// PrecopySave writes the ledger in schema v while the connections are
// served, and from then on records which accounts change. The lock is
// held only to copy what changes in place (~2 ms for a million
// accounts): the copy's memory is touched before, its encoding and
// writing come after.
func (s *Server) PrecopySave(w io.Writer, v uint32) error {
	s.mu.Lock()
	l, ok := s.led.(*ledger.V2)
	var records, slots int
	if ok {
		records, slots = l.Sizes()
	}
	s.mu.Unlock()
	if !ok {
		return errNoPrecopy
	}
	room := ledger.NewRoom(records, slots)
	s.mu.Lock()
	l = s.led.(*ledger.V2) // a ledger is replaced only by a load, never while serving; take it again all the same
	cp, gen := l.Track(room), s.gen+1
	s.mu.Unlock()
	return ledger.States.SaveAs(w, cp, v, gen)
}

// SaveChanges writes, in schema v, the accounts changed or added since
// PrecopySave, and stops recording. It runs in the pause.
func (s *Server) SaveChanges(w io.Writer, v uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.led.(*ledger.V2)
	if !ok {
		return errNoPrecopy
	}
	return ledger.States.SaveAs(w, l.Changed(), v, s.gen+1)
}

// StopTracking stops recording changes: the upgrade that started it ended
// without asking for them.
func (s *Server) StopTracking() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.led.(*ledger.V2); ok {
		l.Untrack()
	}
}

// PreloadState reads what PrecopySave wrote, in the new process, and
// keeps it for LoadChanges; the ledger served is not touched.
func (s *Server) PreloadState(r io.Reader) error {
	if s.schema != ledger.Schema2 {
		return errNoPrecopy
	}
	state, h, err := ledger.States.Load(r, ledger.Schema2)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.base = &base{led: state.(*ledger.V2), gen: h.Generation, schema: h.Schema}
	return nil
}

// LoadChanges reads what SaveChanges wrote, applies it to what
// PreloadState read, and serves the result. On error the ledger served
// is unchanged.
func (s *Server) LoadChanges(r io.Reader) error {
	state, h, err := ledger.States.Load(r, ledger.Schema2)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.base
	switch {
	case b == nil:
		return errors.New("pre-copy: changes without the ledger they change")
	case h.Generation != b.gen:
		return fmt.Errorf("pre-copy: changes of generation %d for a ledger of generation %d", h.Generation, b.gen)
	}
	changes := state.(*ledger.V2)
	b.led.Apply(changes)
	s.base = nil
	s.led, s.stats, s.gen = b.led, b.led, h.Generation
	s.log.Info("state loaded", "schema", b.schema, "migrated_to", s.schema, "generation", h.Generation,
		"precopy", true, "changed", changes.Len(), "accounts", b.led.Len())
	return nil
}
