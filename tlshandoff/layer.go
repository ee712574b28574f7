package tlshandoff

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
)

// reader is the record layer's read side. Its fields are guarded by mu.
type reader struct {
	mu    sync.Mutex
	in    *half
	rbuf  []byte // read from the transport, not yet decrypted
	plain []byte // decrypted application data, not yet read
	hsMsg []byte // a post-handshake message begun in an earlier record
	err   error  // permanent: every later Read returns it
	empty int    // records in a row that carried no application data
}

// writer is the record layer's write side. Its fields are guarded by mu.
type writer struct {
	mu   sync.Mutex
	out  *half
	wbuf []byte
	err  error // permanent: every later Write returns it
}

// maxEmpty bounds the records in a row that carry nothing for the
// application (empty records, warning alerts), as crypto/tls does, so
// that a peer cannot keep a reader spinning.
const maxEmpty = 100

// readChunk is the least room a read from the transport gets.
const readChunk = 8192

// maxHandshakeMsg bounds a post-handshake message being assembled.
const maxHandshakeMsg = 1 << 16

func (c *Conn) read(p []byte) (int, error) {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	for len(c.r.plain) == 0 {
		if c.r.err != nil {
			return 0, c.r.err
		}
		if err := c.readRecordLocked(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.r.plain)
	c.r.plain = c.r.plain[n:]
	return n, nil
}

// readRecordLocked reads, authenticates and handles one record.
func (c *Conn) readRecordLocked() error {
	rec, err := c.nextRecordLocked()
	if err != nil {
		if !temporary(err) {
			c.r.err = err
		}
		return err
	}
	typ, plain, err := c.r.in.open(rec)
	if errors.Is(err, errBadRecordMAC) {
		return c.fatalLocked(alertBadRecordMAC, err)
	}
	if err != nil {
		return c.fatalLocked(alertRecordOverflow, err)
	}
	switch typ {
	case typeApplicationData:
		c.r.plain = plain
		if len(plain) == 0 {
			return c.emptyLocked()
		}
		c.r.empty = 0
		return nil
	case typeAlert:
		return c.alertLocked(plain)
	case typeHandshake:
		return c.postHandshakeLocked(plain)
	}
	return c.fatalLocked(alertUnexpectedMessage, fmt.Errorf("tlshandoff: unexpected record of type %d", typ))
}

// nextRecordLocked returns the next whole record from the transport,
// header included. Bytes of a record begun stay buffered across errors.
func (c *Conn) nextRecordLocked() ([]byte, error) {
	for {
		need := headerLen
		if len(c.r.rbuf) >= headerLen {
			n, err := recordLen(c.r.rbuf)
			if err != nil {
				return nil, c.fatalLocked(alertRecordOverflow, err)
			}
			if len(c.r.rbuf) >= n {
				rec := c.r.rbuf[:n:n]
				c.r.rbuf = c.r.rbuf[n:]
				return rec, nil
			}
			need = n
		}
		if err := c.fillLocked(need); err != nil {
			return nil, err
		}
	}
}

// fillLocked reads once from the transport, into room for need bytes.
// The application's plaintext is consumed whenever it runs, so moving
// the buffered bytes loses nothing.
func (c *Conn) fillLocked(need int) error {
	if cap(c.r.rbuf)-len(c.r.rbuf) < 1024 || cap(c.r.rbuf) < need {
		nb := make([]byte, len(c.r.rbuf), max(need, len(c.r.rbuf)+readChunk))
		copy(nb, c.r.rbuf)
		c.r.rbuf = nb
	}
	n, err := c.raw.Read(c.r.rbuf[len(c.r.rbuf):cap(c.r.rbuf)])
	c.r.rbuf = c.r.rbuf[:len(c.r.rbuf)+n]
	if n > 0 {
		return nil
	}
	if err == io.EOF && len(c.r.rbuf) > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

func (c *Conn) emptyLocked() error {
	if c.r.empty++; c.r.empty > maxEmpty {
		return c.fatalLocked(alertUnexpectedMessage, errors.New("tlshandoff: too many records without application data"))
	}
	return nil
}

// temporary reports a transport error after which the connection goes on:
// a deadline, or a handoff.Conn asking its reader to park.
func temporary(err error) bool {
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return true
	}
	return isPark(err)
}

// write seals p into records and writes them.
func (c *Conn) write(p []byte) (int, error) {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), maxPlaintext)]
		if err := c.writeRecordLocked(typeApplicationData, chunk); err != nil {
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

// writeRecordLocked seals and writes one record. Any failure is
// permanent: a record cut short leaves the stream unusable.
func (c *Conn) writeRecordLocked(typ byte, payload []byte) error {
	if c.w.err != nil {
		return c.w.err
	}
	c.w.wbuf = c.w.out.seal(c.w.wbuf[:0], typ, payload)
	if _, err := c.raw.Write(c.w.wbuf); err != nil {
		c.w.err = err
		return err
	}
	return nil
}

// Alert levels and the descriptions this package sends or acts on.
const (
	alertLevelWarning = 1
	alertLevelFatal   = 2

	alertCloseNotify       = 0
	alertUnexpectedMessage = 10
	alertBadRecordMAC      = 20
	alertRecordOverflow    = 22
	alertDecodeError       = 50
	alertIllegalParameter  = 47
	alertUserCanceled      = 90
	alertNoRenegotiation   = 100
)

// alertLocked handles an alert from the peer: close_notify ends the
// stream (io.EOF), a fatal alert ends the connection with an error.
func (c *Conn) alertLocked(p []byte) error {
	if len(p) != 2 {
		return c.fatalLocked(alertDecodeError, errors.New("tlshandoff: malformed alert"))
	}
	level, desc := p[0], p[1]
	switch {
	case desc == alertCloseNotify:
		c.r.err = io.EOF
		return io.EOF
	case desc == alertUserCanceled, level == alertLevelWarning && c.state.Version != tls.VersionTLS13:
		return c.emptyLocked()
	}
	c.r.err = &net.OpError{Op: "remote error", Err: tls.AlertError(desc)}
	return c.r.err
}

// fatalLocked sends a fatal alert, closes the connection, and makes err
// what every later Read and Write returns.
func (c *Conn) fatalLocked(desc byte, err error) error {
	c.r.err = err
	c.w.mu.Lock()
	_ = c.writeRecordLocked(typeAlert, []byte{alertLevelFatal, desc})
	if c.w.err == nil {
		c.w.err = err
	}
	c.w.mu.Unlock()
	_ = c.raw.Close()
	return err
}
