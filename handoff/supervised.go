package handoff

import (
	"net"
	"sync"
)

// supervised holds the sockets a supervisor passed a first process until
// Listen adopts the listeners and Ready the connections.
type supervised struct {
	mu        sync.Mutex
	listeners []supervisedListener
	conns     []SupervisedSocket
}

type supervisedListener struct {
	ln   net.Listener
	kind string // set if this library kept it: its key
}

// takeListener returns the listener the supervisor passed for network and
// addr: the one this library kept under that key, else one it made (socket
// activation) bound to that address. The caller owns it.
func (s *supervised) takeListener(network, addr string) (net.Listener, bool) {
	if s == nil {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := listenerKey(network, addr)
	for pass := 0; pass < 2; pass++ {
		for i, l := range s.listeners {
			if pass == 0 && l.kind == key || pass == 1 && l.kind == "" && sameAddr(l.ln.Addr(), network, addr) {
				s.listeners = append(s.listeners[:i], s.listeners[i+1:]...)
				return l.ln, l.kind != ""
			}
		}
	}
	return nil, false
}

// sameAddr reports whether a listener bound to a serves Listen(network, addr).
func sameAddr(a net.Addr, network, addr string) bool {
	switch network {
	case "tcp", "tcp4", "tcp6":
		want, err := net.ResolveTCPAddr(network, addr)
		got, ok := a.(*net.TCPAddr)
		if err != nil || !ok || got.Port != want.Port {
			return false
		}
		if len(want.IP) == 0 || want.IP.IsUnspecified() {
			return len(got.IP) == 0 || got.IP.IsUnspecified()
		}
		return want.IP.Equal(got.IP)
	case "unix":
		got, ok := a.(*net.UnixAddr)
		return ok && got.Name == addr
	}
	return false
}
