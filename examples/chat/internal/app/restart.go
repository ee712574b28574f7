package app

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/handoff-dev/handoff/examples/chat/internal/server"
	"github.com/handoff-dev/handoff/handoff"
)

// restartOnHUP is restart mode, what a server without the library does
// at a deploy: at SIGHUP it closes the listener and every connection and
// executes its binary again in place (same pid). Its clients reconnect;
// the rooms start empty.
func restartOnHUP(up *handoff.Upgrader, ln *handoff.Listener, hub *server.Hub, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	<-hup
	bin := up.Binary()
	log.Info("upgrade starting", "mode", modeRestart, "binary", bin)
	_ = up.Stop()
	_ = ln.Close()
	n := hub.CloseAll(1012) // service restart
	for _, c := range up.Conns() {
		_ = c.Close()
	}
	log.Info("executing", "closed", n, "binary", bin)
	// Go opens its fds close-on-exec: the new image inherits none.
	err := syscall.Exec(bin, os.Args, os.Environ())
	log.Error("restart: execute failed; exiting", "binary", bin, "err", os.NewSyscallError("execve", err))
	os.Exit(1)
}
