package handoff

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Errors a connection handler acts on.
var (
	// ErrPark is returned by Conn.Next and Conn.Read when an upgrade wants the
	// connection parked. The handler is at a message boundary (any partial
	// message stays buffered in the Conn); it calls Park with its state.
	ErrPark = errors.New("handoff: connection must park for an upgrade")

	// ErrHandedOver is returned by Park, and by Read, Write and Next afterwards,
	// once the new process owns the connection. The handler returns without
	// touching the connection again.
	ErrHandedOver = errors.New("handoff: connection handed over to the new process")

	// ErrBufferFull is returned by Next when Options.MaxBuffered bytes are
	// buffered and the split function has still not found a message.
	ErrBufferFull = errors.New("handoff: message larger than the read buffer")
)

// tracker is the registry as a tracked Conn reports to it: the registry
// knows every Conn, and a Conn only tells it that it parked or closed.
type tracker interface {
	parkedOne(c *Conn)
	closed(c *Conn)
}

// parkState is where a Conn is in the park/resume cycle.
type parkState int

const (
	running    parkState = iota
	parkAsked            // an upgrade asked; the handler has not parked yet
	parked               // the handler called Park and waits for the outcome
	handedOver           // the new process owns the connection
)

// Conn is a connection whose unconsumed bytes and handler state can move to
// the next process. It implements net.Conn. Reads go through an internal buffer;
// bytes read from the kernel but not yet returned as a message are the ones
// handed over, so the new process's first reads return them.
//
// Ownership: the Conn owns the underlying net.Conn. After a successful
// upgrade the old process closes its copy without shutdown(2), so the peer sees
// nothing; the new process receives a Conn of its own. In
// ListenersOnly mode the Conn is never handed over: it keeps running in
// the old process, whose application closes it. Neither is a Conn wrapped
// during an upgrade that then hands over: it was not sent, and it is no
// longer tracked (see Upgrader.Wrap).
//
// The embedded net.Conn of a connection taken over from the old process
// is not a *net.TCPConn: the new process serves the fd it received without
// copying it (net.FileConn's copy was the largest part of a takeover's
// work per connection). It has the same errors and deadlines, and
// CloseWrite, CloseRead and SyscallConn; reach socket options through
// SyscallConn.
type Conn struct {
	net.Conn
	kind string
	id   uint64
	max  int     // the most bytes buffered without a complete message
	reg  tracker // nil if untracked

	rmu sync.Mutex // serializes readers: buffer and read deadline
	buf []byte     // read from the kernel, not yet consumed
	off int        // start of the unconsumed bytes in buf

	wmu sync.Mutex // held across a Write so that parking never tears one

	mu           sync.Mutex // guards what follows
	state        parkState  // written by setStateLocked only
	outcome      chan error // closed with the result of a park; made by ask
	result       error
	deadline     time.Time // the application's read deadline, restored on resume
	saved        []byte    // the handler's state given to Park
	unreadAtPark []byte    // the buffered bytes when the handler parked
	parkedAt     time.Time // when the handler parked
	closed       bool
	onAsk        func() // set by ParkWhen: the application decides when to park

	// interrupts counts the reads ask interrupted: a read that times out
	// with the count changed since it began may have been interrupted by
	// an upgrade that rolled back before the reader saw it.
	interrupts atomic.Uint64

	// st mirrors state for the fast paths of Write and parkCheck, which
	// read it without mu: setStateLocked stores it with state, under mu,
	// so a load returns what state was at some moment, as reading state
	// under mu does. Its zero value is running, as state's is.
	st atomic.Uint32

	// takingUp, in a connection that a Rolling move brought to this
	// process, is called once its handler has taken it up: at its first
	// Next, Read, Write or Park, or when Resume returns (see
	// Options.Resume). Nil otherwise, and once called.
	takingUp atomic.Pointer[func()]
}

var _ net.Conn = (*Conn)(nil)

// Kind is the name the connection was accepted or wrapped under: the listener's
// "network:address" or the kind given to Wrap. It travels with the connection.
func (c *Conn) Kind() string { return c.kind }

// Next returns the next message from the connection as split finds it,
// reading from the network as needed. The message is valid until the next
// call to Next or Read. A partial message stays buffered. Bytes that split
// consumes without returning a message (the spaces bufio.ScanWords skips)
// are dropped and Next goes on: it never returns a nil message with a nil
// error. Once the peer has finished sending, split is called with atEOF set
// and may return a last, unterminated message, then Next returns io.EOF;
// any other read error, such as a deadline, leaves the partial message
// buffered.
//
// Next returns ErrPark when an upgrade asks the connection to park, once no
// complete message is buffered; messages already buffered are returned
// first, so a pipelining client's requests are answered in order whichever
// process answers them. Once the handler has parked, Next returns ErrPark
// whatever is buffered (those bytes travel with the connection), and after
// a handover ErrHandedOver.
func (c *Conn) Next(split bufio.SplitFunc) ([]byte, error) {
	c.takeUp()
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if err := c.parkCheck(false); err != nil {
		return nil, err
	}
	for {
		if tok, err := c.scan(split, false); tok != nil || err != nil {
			return tok, err
		}
		if rest := len(c.buf) - c.off; rest > 0 && rest >= c.max {
			return nil, ErrBufferFull
		}
		if err := c.fill(); err != nil {
			if errors.Is(err, io.EOF) {
				if tok, serr := c.scan(split, true); tok != nil || serr != nil {
					return tok, serr
				}
			}
			return nil, err
		}
	}
}

// scan runs split over the buffered bytes until it returns a message or
// wants more bytes, consuming what it skips. Called with rmu held.
func (c *Conn) scan(split bufio.SplitFunc, atEOF bool) ([]byte, error) {
	for c.off < len(c.buf) {
		data := c.buf[c.off:]
		adv, tok, err := split(data, atEOF)
		switch {
		case err != nil:
			return nil, err
		case adv < 0:
			return nil, bufio.ErrNegativeAdvance
		case adv > len(data):
			return nil, bufio.ErrAdvanceTooFar
		}
		c.off += adv
		if tok != nil || adv == 0 {
			return tok, nil
		}
	}
	return nil, nil
}

// Read reads buffered bytes first, then from the network. It returns ErrPark
// when an upgrade asks the connection to park and nothing is buffered, or
// once the handler has parked; ErrHandedOver after a handover. An
// application that keeps bytes of its own gives them back with Unread before
// it parks.
func (c *Conn) Read(p []byte) (int, error) {
	c.takeUp()
	c.rmu.Lock()
	defer c.rmu.Unlock()
	empty := c.off == len(c.buf)
	since := c.interrupts.Load() // before the check: see afterTimeout
	if err := c.parkCheck(empty); err != nil {
		return 0, err
	}
	if empty && len(p) >= readBufSize {
		// Nothing buffered and room for a whole fill: straight into p, as
		// bufio.Reader does, without a copy. What p gets is consumed, so
		// nothing is lost to a park: the buffer stays empty.
		return c.readInto(p, since)
	}
	if empty {
		if err := c.fillChecked(since); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.buf[c.off:])
	c.off += n
	return n, nil
}

// readInto reads once from the network into p, with nothing buffered.
// Called with rmu held, after parkCheck(true), with since the interrupt
// count loaded before that check.
func (c *Conn) readInto(p []byte, since uint64) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		if n > 0 {
			return n, nil // as fill: an error with bytes comes again at the next Read
		}
		if again, err := c.afterTimeout(err, &since); !again {
			return 0, err
		}
	}
}

// afterTimeout tells a read that ended with err, with no bytes, what to
// do: return err (or ErrPark, ErrHandedOver), or read again. A timeout
// may be the library's interrupt for parking (ask): then the handler
// parks, unless the upgrade rolled back meanwhile (finish restored the
// application's deadline), and then the read goes on as if never
// interrupted. since is the interrupt count loaded before the park check
// that let the read begin; afterTimeout moves it on for the next read.
//
// Why before the check: an ask counted by then has also stored its state
// by then (ask stores the state, then counts), so a check that finds the
// connection running comes after the finish that withdrew it, which
// restored the application's deadline first; an ask the check misses is
// counted after the load, and its interrupt is told apart by the count.
// Loaded after the check, an ask landing between the two went unseen
// both ways, and its interrupt reached the application as its own
// timeout (TestConnInterruptWithdrawnRace).
func (c *Conn) afterTimeout(err error, since *uint64) (again bool, _ error) {
	if err == nil || !isTimeout(err) {
		return false, err
	}
	now := c.interrupts.Load()
	if perr := c.parkCheck(true); perr != nil {
		return false, perr
	}
	again, *since = now != *since, now
	return again, err
}

// Unread puts p back in front of the buffered bytes, so that it is read again,
// by this process or, after an upgrade, by the next one.
func (c *Conn) Unread(p []byte) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	rest := c.buf[c.off:]
	nb := make([]byte, 0, len(p)+len(rest))
	c.buf = append(append(nb, p...), rest...)
	c.off = 0
}

// Buffered returns how many bytes are buffered and not yet consumed.
func (c *Conn) Buffered() int {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return len(c.buf) - c.off
}

// fill reads once from the network into the buffer. Called with rmu held.
func (c *Conn) fill() error {
	since := c.interrupts.Load() // before the check: see afterTimeout
	if err := c.parkCheck(true); err != nil {
		return err
	}
	return c.fillChecked(since)
}

// fillChecked is fill once parkCheck(true) has passed, with since the
// interrupt count loaded before it.
func (c *Conn) fillChecked(since uint64) error {
	if c.off > 0 && c.off == len(c.buf) {
		c.buf, c.off = c.buf[:0], 0
	}
	if cap(c.buf)-len(c.buf) < 2048 {
		nb := make([]byte, len(c.buf)-c.off, 2*cap(c.buf)+readBufSize)
		copy(nb, c.buf[c.off:])
		c.buf, c.off = nb, 0
	}
	for {
		n, err := c.Conn.Read(c.buf[len(c.buf):cap(c.buf)])
		c.buf = c.buf[:len(c.buf)+n]
		if n > 0 {
			return nil
		}
		if again, err := c.afterTimeout(err, &since); !again {
			return err
		}
	}
}

// parkCheck reports ErrHandedOver once the new process owns the
// connection, and ErrPark while its handler is parked or, if asked counts,
// while an upgrade waits for it to park. A closed connection gets neither:
// its reads fail by themselves, and a Park would not be waited for.
func (c *Conn) parkCheck(asked bool) error {
	// Why no lock while running: a running connection gets nil whatever
	// else mu guards, and a load of st is a read of state at one moment,
	// as one under mu is; the state may change right after either. A read
	// woken by ask's deadline sees parkAsked: ask stores st before it sets
	// the deadline, and the read learns of the deadline through the
	// poller's own synchronization. One that sees running after a resume
	// finds the application's deadline: finishLocked restores it first.
	if c.running() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return nil
	case c.state == handedOver:
		return ErrHandedOver
	case c.state == parked, c.state == parkAsked && asked && c.onAsk == nil:
		return ErrPark
	}
	return nil
}

// Write writes p whole. While the connection is parked, Write waits for the
// outcome of the upgrade; after a handover it returns ErrHandedOver and writes
// nothing. A park never splits a Write.
func (c *Conn) Write(p []byte) (int, error) {
	c.takeUp()
	for {
		c.wmu.Lock()
		// Why no mu while running: the one step to parked is enterPark's,
		// and Park holds wmu across it; so with wmu held here, a
		// connection seen running cannot park until this Write is out.
		// Seen running, it may turn parkAsked meanwhile, as it may after
		// mu is released below: a connection asked to park still writes.
		// Any other state takes mu for the outcome channel, as before.
		if c.running() {
			n, err := c.Conn.Write(p)
			c.wmu.Unlock()
			return n, err
		}
		c.mu.Lock()
		st, out := c.state, c.outcome
		c.mu.Unlock()
		switch st {
		case parked:
			c.wmu.Unlock()
			<-out
			continue
		case handedOver:
			c.wmu.Unlock()
			return 0, ErrHandedOver
		}
		n, err := c.Conn.Write(p)
		c.wmu.Unlock()
		return n, err
	}
}

// Park hands the connection to the upgrade in progress, with state, the
// handler's own state for this connection (opaque to the library). It blocks
// until the upgrade ends. It returns nil if the upgrade was rolled back: the
// handler carries on exactly where it stopped, with its buffered bytes. It
// returns ErrHandedOver if the new process now owns the connection: the
// handler must return without using the connection again. Park returns nil at
// once if no upgrade asked for the connection, and net.ErrClosed at once if
// the connection was closed (by another goroutine, while an upgrade asked it
// to park): the upgrade leaves it out, and the handler returns. Called again
// while parked, from another goroutine, Park waits for the same outcome.
func (c *Conn) Park(state []byte) error {
	c.takeUp()
	c.rmu.Lock()
	unread := append([]byte(nil), c.buf[c.off:]...)
	c.rmu.Unlock()
	c.wmu.Lock() // wait for a Write in progress on another goroutine
	out, first, err := c.enterPark(state, unread)
	c.wmu.Unlock()
	if out == nil {
		return err
	}
	if first {
		c.reg.parkedOne(c)
	}
	<-out
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.result
}

// enterPark parks a connection asked to park, with what the upgrade sends
// for it, in one step: a scan by parkAll never sees it parked without them.
// It returns the channel the outcome closes, and whether this call parked
// it; or no channel and Park's result when there is nothing to wait for.
func (c *Conn) enterPark(state, unread []byte) (out chan error, first bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return nil, false, net.ErrClosed
	case c.state == handedOver:
		return nil, false, ErrHandedOver
	case c.state == running:
		return nil, false, nil
	case c.state == parkAsked:
		c.setStateLocked(parked)
		c.saved, c.unreadAtPark = state, unread
		c.parkedAt = time.Now()
		return c.outcome, true, nil
	}
	return c.outcome, false, nil
}

// takeUp reports, once, that the handler has taken the connection up.
func (c *Conn) takeUp() {
	if c.takingUp.Load() == nil {
		return
	}
	if f := c.takingUp.Swap(nil); f != nil {
		(*f)()
	}
}

// SetReadDeadline sets the application's read deadline. The library
// interrupts reads with deadlines of its own while parking and restores the
// application's afterwards.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	if c.state != running && !(c.state == parkAsked && c.onAsk != nil) {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline sets both deadlines; see SetReadDeadline.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// Close closes the connection in this process and forgets it. After a
// handover it does nothing and returns nil: the new process owns the
// connection. While the handler is parked, Close (from another goroutine:
// an idle reaper, a loop over Upgrader.Conns) waits for the upgrade's
// outcome, since the connection may be on its way to the new process;
// SaveState, which runs while every handler is parked, must not close a
// Conn. A connection asked to park but not parked yet is closed at once
// and left out of the upgrade; its handler's Park returns net.ErrClosed.
func (c *Conn) Close() error {
	c.mu.Lock()
	for c.state == parked {
		out := c.outcome
		c.mu.Unlock()
		<-out
		c.mu.Lock()
	}
	if c.closed || c.state == handedOver {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	if c.reg != nil {
		c.reg.closed(c)
	}
	return c.Conn.Close()
}

// ask moves a running connection to parkAsked and interrupts a blocked
// read, or, for a connection whose application parks it itself
// (ParkWhen), tells the application.
func (c *Conn) ask() {
	c.mu.Lock()
	if c.state != running || c.closed {
		c.mu.Unlock()
		return
	}
	c.setStateLocked(parkAsked)
	c.outcome, c.result = make(chan error), nil
	onAsk := c.onAsk
	if onAsk == nil {
		c.interrupts.Add(1)
		_ = c.Conn.SetReadDeadline(aLongTimeAgo)
	}
	c.mu.Unlock()
	if onAsk != nil {
		onAsk()
	}
}

// ParkWhen makes the application decide when the connection parks, for a
// protocol whose boundaries the application knows and the Conn does not
// (an HTTP server between requests, package httphandoff). When an upgrade
// asks the connection to park, the Conn neither interrupts a read nor
// returns ErrPark: reads and read deadlines go on as usual, and ask is
// called (once per upgrade, from the upgrade's goroutine; it must return
// quickly and must not call the Conn but for Asked). The application then
// parks the connection at its next boundary: it makes its blocked read
// return (through the underlying net.Conn's deadline, say), gives back
// with Unread any bytes it read but did not use, and calls Park. A
// connection that does not park within Options.ParkTimeout fails the
// upgrade, as any other.
func (c *Conn) ParkWhen(ask func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onAsk = ask
}

// Asked reports whether an upgrade waits for the connection to park.
func (c *Conn) Asked() bool {
	if c.running() {
		return false // as parkCheck: state read at one moment, without mu
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == parkAsked && !c.closed
}

// finish ends a park with result: nil resumes the connection, ErrHandedOver
// gives it away (the caller closes the underlying fd afterwards).
func (c *Conn) finish(result error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.finishLocked(result)
}

// finishLocked is finish with c.mu held.
func (c *Conn) finishLocked(result error) {
	if c.state == running || c.state == handedOver {
		return
	}
	if result == nil {
		// The deadline first: a read that sees running without mu
		// (parkCheck) must find the application's deadline, not ask's.
		_ = c.Conn.SetReadDeadline(c.deadline)
		c.setStateLocked(running)
	} else {
		c.setStateLocked(handedOver)
	}
	c.result = result
	close(c.outcome)
}

// setStateLocked moves the connection to s, with c.mu held; st follows.
func (c *Conn) setStateLocked(s parkState) {
	c.state = s
	c.st.Store(uint32(s))
}

// running reports, without c.mu, whether the state is running.
func (c *Conn) running() bool { return parkState(c.st.Load()) == running }

// useBuffer makes b, empty and with its pages mapped (touched), the read
// buffer, with what is buffered copied into it. Before the handler starts.
func (c *Conn) useBuffer(b []byte) {
	c.rmu.Lock()
	c.buf, c.off = append(b, c.buf[c.off:]...), 0
	c.rmu.Unlock()
}

// readBufSize is the size of a Conn's first read buffer.
const readBufSize = 4096

// aLongTimeAgo is a deadline that has passed, to wake a blocked read at once.
var aLongTimeAgo = time.Unix(1, 0)

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}
