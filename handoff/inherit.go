package handoff

import (
	"net/url"
	"os"
	"strings"
	"sync"
)

// envFds tells a new process which fds its old process passed: the
// handoff channel at fd 3, then one listening socket per entry, from fd 4
// on. It is set in the new process's environment alone, and the new
// process removes it at once (see inherit_linux.go), so that nothing it
// starts finds it.
const envFds = "HANDOFF_FDS"

// firstInheritedFd is the handoff channel; the listeners follow it.
const firstInheritedFd = 3

// inheritance is what the previous process passed at exec: the handoff
// channel and its listening sockets, by "network address". A nil
// *inheritance is a first process's: it has nothing.
//
// Ownership: the files are the inheritance's until taken; closeUnused
// closes what nobody took.
type inheritance struct {
	mu        sync.Mutex
	channel   *os.File
	listeners map[string]*os.File
	// greeted is, when a peer took this process in through the takeover
	// socket (Options.TakeoverSocket), what the serving process said in
	// its HELLO: the channel is the socket New connected, HELLO is done,
	// and the old process is no parent; nil for an exec'd child.
	greeted *greeting
}

// greeting is what a peer said of itself in its HELLO.
type greeting struct {
	pid          int // in its own PID namespace
	version, app string
}

// startInheritance is this process's inheritance, read before main runs.
var startInheritance *inheritance

func listenerKey(network, addr string) string { return network + " " + addr }

// encodeFds names the listeners passed at fds 4 and up, in order.
func encodeFds(keys []string) string {
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = url.QueryEscape(k)
	}
	return "1;" + strings.Join(parts, ";")
}

// decodeFds reverses encodeFds; ok is false for a value it cannot read.
func decodeFds(v string) (keys []string, ok bool) {
	rest, ok := strings.CutPrefix(v, "1;")
	if !ok {
		return nil, false
	}
	if rest == "" {
		return nil, true
	}
	for _, p := range strings.Split(rest, ";") {
		k, err := url.QueryUnescape(p)
		if err != nil {
			return nil, false
		}
		keys = append(keys, k)
	}
	return keys, true
}

// takeListener returns the inherited listening socket for network and
// addr, or nil. The caller owns it.
func (in *inheritance) takeListener(network, addr string) *os.File {
	if in == nil {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	key := listenerKey(network, addr)
	f := in.listeners[key]
	delete(in.listeners, key)
	return f
}

// has reports whether the previous process passed a listener for network
// and addr that nobody has taken yet.
func (in *inheritance) has(network, addr string) bool {
	if in == nil {
		return false
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.listeners[listenerKey(network, addr)] != nil
}

// takeChannel returns the handoff channel's file, once. The caller owns it.
func (in *inheritance) takeChannel() *os.File {
	in.mu.Lock()
	defer in.mu.Unlock()
	f := in.channel
	in.channel = nil
	return f
}

// closeUnused closes the listeners the application did not ask for, and
// the channel if nobody took it.
func (in *inheritance) closeUnused() {
	if in == nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	for k, f := range in.listeners {
		_ = f.Close()
		delete(in.listeners, k)
	}
	if in.channel != nil {
		_ = in.channel.Close()
		in.channel = nil
	}
}
