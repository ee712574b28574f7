package tlshandoff

import (
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"sync"
)

// maxTicketKeys is how many ticket keys a Server keeps: the newest
// encrypts, all decrypt, so that a ticket outlives RotateTicketKeys
// maxTicketKeys-1 times.
const maxTicketKeys = 4

// ticketKeysVersion is the first byte of MarshalTicketKeys' output.
const ticketKeysVersion = 1

// ticketKeys are a Server's session ticket keys. crypto/tls's automatic
// keys cannot be read out of a tls.Config, so the Server sets its own,
// which can move to the next process.
type ticketKeys struct {
	mu   sync.Mutex
	cfg  *tls.Config
	keys [][32]byte
}

func (t *ticketKeys) init(cfg *tls.Config) error {
	t.cfg = cfg
	return t.rotate()
}

func (t *ticketKeys) rotate() error {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return fmt.Errorf("tlshandoff: ticket key: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.keys = append([][32]byte{k}, t.keys...)[:min(len(t.keys)+1, maxTicketKeys)]
	t.cfg.SetSessionTicketKeys(t.keys)
	return nil
}

// RotateTicketKeys makes a new session ticket key the one that encrypts;
// the previous ones still decrypt (the last maxTicketKeys in all).
// crypto/tls's own keys rotate daily: call it as often.
func (s *Server) RotateTicketKeys() error { return s.tickets.rotate() }

// MarshalTicketKeys returns the Server's session ticket keys, for the
// next process (SetTicketKeys) so that the tickets this one issued still
// resume there. The bytes are secret: pass them on the handoff channel
// (handoff.Options.SaveState), never to a file or a log.
func (s *Server) MarshalTicketKeys() []byte {
	s.tickets.mu.Lock()
	defer s.tickets.mu.Unlock()
	b := []byte{ticketKeysVersion, byte(len(s.tickets.keys))}
	for _, k := range s.tickets.keys {
		b = append(b, k[:]...)
	}
	return b
}

// SetTicketKeys installs keys MarshalTicketKeys returned, in place of the
// Server's own; it changes nothing if b is malformed.
func (s *Server) SetTicketKeys(b []byte) error {
	if len(b) < 2 || b[0] != ticketKeysVersion {
		return errors.New("tlshandoff: ticket keys: unknown format")
	}
	n := int(b[1])
	if n < 1 || n > maxTicketKeys || len(b) != 2+32*n {
		return fmt.Errorf("tlshandoff: ticket keys: %d bytes for %d keys", len(b), n)
	}
	keys := make([][32]byte, n)
	for i := range keys {
		copy(keys[i][:], b[2+32*i:])
	}
	s.tickets.mu.Lock()
	defer s.tickets.mu.Unlock()
	s.tickets.keys = keys
	s.tickets.cfg.SetSessionTicketKeys(keys)
	return nil
}

// SaveTicketKeys writes MarshalTicketKeys to w, and LoadTicketKeys reads
// them back and sets them: the shapes of handoff.Options.SaveState and
// LoadState, for an application whose only state is the keys.
func (s *Server) SaveTicketKeys(w io.Writer) error {
	_, err := w.Write(s.MarshalTicketKeys())
	return err
}

// LoadTicketKeys: see SaveTicketKeys.
func (s *Server) LoadTicketKeys(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	return s.SetTicketKeys(b)
}
