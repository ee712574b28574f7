package handoff

import (
	"os"
	"os/signal"
	"sync"
)

// processEnv is the real process's: the one New uses.
var processEnv = newOSEnv()

// newOSEnv returns an env that acts on the operating system. Each has its
// own claim: processEnv's is the process's one Upgrader.
func newOSEnv() *env {
	e := &env{
		claim:      claimOnce(),
		fromParent: func() *inheritance { return startInheritance },
		getpid:     os.Getpid,
		getppid:    os.Getppid,
		notify:     signal.Notify,
		stopNotify: signal.Stop,
	}
	osProcess(e)
	return e
}

// claimOnce returns a claim that is true the first time only.
func claimOnce() func() bool {
	var once sync.Once
	return func() bool {
		first := false
		once.Do(func() { first = true })
		return first
	}
}
