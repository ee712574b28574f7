package handoff

import (
	"os"
	"os/signal"
	"syscall"
)

// init takes what an old process passed before main runs: the sooner the
// fds are close-on-exec and the variable is gone, the less a program this
// process starts can inherit; and the sooner SIGHUP is caught, the shorter
// the time in which an operator's second reload would kill the new process
// (its default action). What remains is the Go runtime's start, before
// any package's init: a SIGHUP then still kills it.
func init() {
	v, ok := os.LookupEnv(envFds)
	if !ok {
		return
	}
	os.Unsetenv(envFds)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup { // New's trigger, if any, gets its own copy
		}
	}()
	keys, ok := decodeFds(v)
	if !ok {
		return // a first process, as far as anyone can tell
	}
	in := &inheritance{listeners: make(map[string]*os.File, len(keys))}
	in.channel = inheritFd(firstInheritedFd, "handoff-channel")
	for i, k := range keys {
		in.listeners[k] = inheritFd(firstInheritedFd+1+i, k)
	}
	startInheritance = in
}

func inheritFd(fd int, name string) *os.File {
	syscall.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), name)
}
