// Package server serves the PDF protocol (proto.go) over handoff
// connections. Both versions of the server use it; they differ only in the
// Ledger they pass to New and in their version string.
//
// Each connection has a session, the gateway name from HELLO and the number
// of requests so far, which travels with the connection through an upgrade
// as the state given to Park. The ledger is shared by all connections and
// travels as the upgrade's global state (SaveState, LoadState).
package server

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/handoff-dev/handoff/examples/pdf/internal/ledger"
	"github.com/handoff-dev/handoff/handoff"
)

// Ledger is the account state a server keeps: *ledger.V1 or *ledger.V2.
// Its methods are called with the server's lock held.
type Ledger interface {
	TopUp(acct string, amount int64) (int64, error)
	Charge(acct string, amount int64) (balance int64, ok bool)
	Balance(acct string) int64
	// Account and SetAccount read and replace all the ledger keeps about
	// one account, for a connection to carry it in a rolling upgrade.
	Account(acct string) ledger.Account
	SetAccount(acct string, a ledger.Account)
	Schema() uint32 // in ledger.States
}

// StatsLedger is a Ledger that counts charges: a server over one answers
// STATS; over a plain Ledger, STATS is an unknown command.
type StatsLedger interface {
	Ledger
	Stats(acct string) (balance int64, charges uint64)
}

var (
	_ Ledger      = (*ledger.V1)(nil)
	_ StatsLedger = (*ledger.V2)(nil)
)

// Server serves one ledger to many connections.
type Server struct {
	version string
	pid     int
	schema  uint32 // this version's, in ledger.States
	log     *slog.Logger

	mu    sync.Mutex // guards the ledger
	led   Ledger
	stats StatsLedger // led, if it counts charges; else nil
	gen   uint64      // the loaded state's generation; 0 if it started empty
	base  *base       // what a pre-copy brought, waiting for its changes (precopy.go)

	rolling bool                 // see RollingUpgrades
	counted func(command string) // see CountRequests
}

// CountRequests makes the server call f with each request's command name
// (HELLO, TOPUP, ..., or "INVALID" for a line that does not parse) as it
// answers it, on the connection's goroutine. Call it before Serve and
// before the Upgrader's Ready, which may start Resume.
func (s *Server) CountRequests(f func(command string)) { s.counted = f }

// RollingUpgrades prepares the server for handoff.Rolling, in which
// SaveState runs while connections are served and each connection moves
// on its own afterwards: each connection carries the accounts it changed,
// which the new process sets over the snapshot's older values (Resume).
// That is exact only while each account is used by one connection at a
// time. Call it before Serve and before the Upgrader's Ready.
func (s *Server) RollingUpgrades() { s.rolling = true }

// New returns a server over led, answering VERSION with version.
func New(version string, led Ledger, log *slog.Logger) *Server {
	s := &Server{version: version, pid: os.Getpid(), schema: led.Schema(), log: log, led: led,
		counted: func(string) {}}
	s.stats, _ = led.(StatsLedger)
	return s
}

// Serve accepts connections from ln until it fails, and serves each on its
// own goroutine. It returns the Accept error; after a handover that error
// wraps handoff.ErrHandedOver.
func (s *Server) Serve(ln *handoff.Listener) error {
	for {
		c, err := ln.AcceptConn()
		if err != nil {
			return err
		}
		go s.serve(c, s.newSession())
	}
}

// newSession is a fresh connection's session.
func (s *Server) newSession() *session {
	sess := &session{}
	if s.rolling {
		sess.changed = map[string]ledger.Account{}
	}
	return sess
}

// Resume serves a connection handed over by the previous process, with the
// session its handler parked. It is handoff.Options.Resume.
func (s *Server) Resume(c *handoff.Conn, state []byte) {
	sess, err := decodeSession(state)
	if err != nil {
		// Answering with a wrong request count would be worse than a
		// disconnect the client can see.
		s.log.Error("closing handed-over connection", "err", err)
		c.Close()
		return
	}
	s.adopt(sess)
	s.serve(c, sess)
}

// adopt sets the accounts a handed-over connection carried in the ledger,
// as it left them in the old process (set, not add: the snapshot this
// process loaded may hold an older value, or already this one). The
// session keeps them only if this server carries changes on: otherwise it
// would carry stale values at the next upgrade.
func (s *Server) adopt(sess *session) {
	if len(sess.changed) > 0 {
		s.mu.Lock()
		for acct, a := range sess.changed {
			s.led.SetAccount(acct, a)
		}
		s.mu.Unlock()
	}
	switch {
	case !s.rolling:
		sess.changed = nil
	case sess.changed == nil:
		sess.changed = map[string]ledger.Account{}
	}
}

// serve answers requests on c until the peer goes, a line is too long, or
// the connection is handed over.
func (s *Server) serve(c *handoff.Conn, sess *session) {
	for {
		line, err := c.Next(splitLine)
		switch {
		case errors.Is(err, handoff.ErrPark):
			if err := c.Park(sess.encode()); err != nil {
				if !errors.Is(err, handoff.ErrHandedOver) {
					c.Close()
				}
				return
			}
			continue
		case errors.Is(err, errTooLong):
			c.Write(reply("ERR", "-", reasonTooLong))
			c.Close()
			return
		case err != nil:
			c.Close() // a no-op after a handover
			return
		}
		if _, err := c.Write(s.handle(sess, line)); err != nil {
			c.Close()
			return
		}
	}
}

// handle answers one request line and counts it in sess.
func (s *Server) handle(sess *session, line []byte) []byte {
	before := sess.n
	sess.n++
	req, reason := parse(line, s.stats != nil)
	if reason != "" {
		s.counted("INVALID")
		return reply("ERR", req.rid, reason)
	}
	s.counted(req.cmd)
	switch req.cmd {
	case "HELLO":
		sess.gw = req.gw
		return reply("WELCOME", req.gw)
	case "WHOAMI":
		return reply("YOU", req.rid, cmp.Or(sess.gw, "-"), before)
	case "VERSION":
		return reply("VERSION", req.rid, s.version, s.pid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch req.cmd {
	case "TOPUP":
		bal, err := s.led.TopUp(req.acct, req.amount)
		if err != nil {
			return reply("ERR", req.rid, reasonOverflow)
		}
		sess.note(req.acct, s.led.Account(req.acct))
		return reply("OK", req.rid, bal)
	case "CHARGE":
		bal, ok := s.led.Charge(req.acct, req.amount)
		if !ok {
			return reply("DENY", req.rid, bal)
		}
		sess.note(req.acct, s.led.Account(req.acct))
		return reply("OK", req.rid, bal)
	case "STATS":
		bal, n := s.stats.Stats(req.acct)
		return reply("STATS", req.rid, bal, n)
	}
	return reply("BAL", req.rid, s.led.Balance(req.acct)) // BALANCE, the last command
}

// SaveState writes the ledger as a state file in this version's schema:
// for a state file on disk, which any version may read at a cold start.
// It streams the ledger under the lock, which costs nothing while every
// connection is parked and needs no second copy. With RollingUpgrades the
// connections are served meanwhile, so it encodes in memory under the
// lock and writes without it: requests wait for the encoding, not for the
// new process to read and decode it.
func (s *Server) SaveState(w io.Writer) error { return s.SaveStateAs(w, s.schema) }

// SaveStateAs is SaveState in schema v of ledger.States, migrating the
// ledger to it on the way (the ledger itself is not changed): for a new
// process known to read v, such as ledger.Schema3, which loads in a
// fraction of the time of this version's own schema.
func (s *Server) SaveStateAs(w io.Writer, v uint32) error {
	s.mu.Lock()
	if !s.rolling {
		defer s.mu.Unlock()
		return s.saveLocked(w, v)
	}
	var snap bytes.Buffer
	err := s.saveLocked(&snap, v)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	_, err = snap.WriteTo(w)
	return err
}

// saveLocked writes the ledger in schema v as the next generation's state.
func (s *Server) saveLocked(w io.Writer, v uint32) error {
	return ledger.States.SaveAs(w, s.led, v, s.gen+1)
}

// LoadState replaces the ledger with a state file of either schema,
// migrating it to this version's. It is handoff.Options.LoadState, and
// also restores a cold-start state file. On error the ledger is unchanged.
func (s *Server) LoadState(r io.Reader) error {
	state, h, err := ledger.States.Load(r, s.schema)
	if err != nil {
		return err // statefile's errors say what they are about
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.led = state.(Ledger)
	s.stats, _ = s.led.(StatsLedger)
	s.gen = h.Generation
	s.log.Info("state loaded", "schema", h.Schema, "migrated_to", s.schema,
		"generation", h.Generation, "written", h.Created.UTC().Format(time.RFC3339Nano))
	return nil
}

// FinalSave locks the ledger and calls save with a function that writes
// it as SaveState does (save is typically statefile.WriteFile). If save
// succeeds, the ledger stays locked for good, so that no request is
// acknowledged after the snapshot it would be missing from: call it only on
// the way out of the process. If save fails, the ledger is unlocked and the
// server carries on, since the ledger now exists only in memory.
func (s *Server) FinalSave(save func(write func(io.Writer) error) error) error {
	s.mu.Lock()
	err := save(func(w io.Writer) error { return s.saveLocked(w, s.schema) })
	if err != nil {
		s.mu.Unlock()
	}
	return err
}

// ServePlain serves ln as Serve does, with the same requests and replies,
// but on plain net.Conns read through a bufio.Scanner, without the
// handoff library: the baseline against which make bench-steady measures
// what the library costs between upgrades. Its connections never move.
func (s *Server) ServePlain(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go s.servePlain(c, s.newSession())
	}
}

// servePlain is serve without the library: each line of c answered in
// order, until the peer goes or a line is too long.
func (s *Server) servePlain(c net.Conn, sess *session) {
	defer c.Close()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 0, 4096), handoff.DefaultMaxBuffered)
	sc.Split(splitLine)
	for sc.Scan() {
		if _, err := c.Write(s.handle(sess, sc.Bytes())); err != nil {
			return
		}
	}
	if errors.Is(sc.Err(), errTooLong) {
		_, _ = c.Write(reply("ERR", "-", reasonTooLong))
	}
}
