// Command idle is the empty image's process for OpenKruise's SidecarSet
// hot upgrade (kubernetes/sidecarset.yaml, hotUpgradeEmptyImage): the
// container Kruise parks beside the serving one, with the same command,
// arguments, probes and postStart hook, until the next upgrade gives it the
// new image. It takes no port and holds nothing; it reads only -control
// PATH from the pdf server's arguments (the others are the server's, and
// ignored), answers the control protocol's status there with phase
// handed-over (handoff/CONTROL.md), so that the container's probes and its
// postStart hook (handoffctl wait serving) pass, refuses every other
// command, and exits 0 on SIGTERM or SIGINT.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/internal/controlwire"
)

const usage = `usage: idle [ARG ...] -control PATH [ARG ...]

Answers the handoff control protocol's status on PATH with phase
handed-over, holding nothing else, until SIGTERM; every other argument is
ignored. The SidecarSet's empty image (kubernetes/sidecarset.yaml).
`

// The bounds of one control connection, as the library's.
const (
	maxLine = 4096
	ioWait  = 5 * time.Second
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	os.Exit(run(os.Args[1:], stop, os.Stderr))
}

// run serves until a signal comes on stop and returns the exit status.
func run(args []string, stop <-chan os.Signal, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	path, help := controlArg(args)
	if help {
		fmt.Fprint(stderr, usage)
		return 0
	}
	if path == "" {
		log.Error("no -control PATH: nothing to answer the probes on")
		return 2
	}
	s, err := listen(path)
	if err != nil {
		log.Error("control socket", "err", err)
		return 1
	}
	log.Info("idle: answering status as handed-over", "control", path)
	sig := <-stop
	log.Info("stopping while idle", "signal", sig.String())
	s.close()
	return 0
}

// controlArg is the value of -control (or --control, -control=PATH) among
// args, the last one given as the flag package would, and whether help
// was asked for.
func controlArg(args []string) (path string, help bool) {
	for i, a := range args {
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a, "-"), "=")
		switch strings.TrimPrefix(name, "-") {
		case "control":
			if hasValue {
				path = value
			} else if i+1 < len(args) {
				path = args[i+1]
			}
		case "h", "help":
			help = true
		}
	}
	return path, help
}

// server answers the control socket; its listener removes the socket file
// when closed.
type server struct {
	ln    net.Listener
	start time.Time
}

// listen makes the control socket at path, after removing a socket file
// left there (a restarted container keeps its /tmp; nothing else in it
// uses the path), and serves it.
func listen(path string) (*server, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == os.ModeSocket {
		_ = os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	s := &server{ln: ln, start: time.Now()}
	go s.serve()
	return s, nil
}

func (s *server) close() { _ = s.ln.Close() }

func (s *server) serve() {
	for {
		c, err := s.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(ioWait))
			b, _ := json.Marshal(s.answer(c))
			_, _ = c.Write(append(b, '\n'))
		}()
	}
}

// answer is the reply to the one request line c sends.
func (s *server) answer(c io.Reader) any {
	line, err := bufio.NewReaderSize(io.LimitReader(c, maxLine), maxLine).ReadString('\n')
	if err != nil {
		return refuse("no complete command line")
	}
	f := strings.Fields(line)
	switch {
	case len(f) < 3 || f[0] != controlwire.Magic || f[1] != controlwire.Version:
		return refuse(fmt.Sprintf("want %q", controlwire.Magic+" "+controlwire.Version+" COMMAND"))
	case f[2] != controlwire.CommandStatus:
		return refuse("handed over: this is the idle image, which only answers status; give the container a server's image to take over")
	}
	now := time.Now()
	return controlwire.Status{Type: controlwire.TypeStatus, PID: os.Getpid(), Version: "idle",
		Phase: handoff.ProcessHandedOver, ChainStart: s.start, Start: s.start,
		ChainUptimeNS: int64(now.Sub(s.start)), UptimeNS: int64(now.Sub(s.start)), Conns: map[string]int{},
		Totals: controlwire.Totals{RolledBack: map[string]uint64{}}}
}

func refuse(why string) controlwire.Error {
	return controlwire.Error{Type: controlwire.TypeError, Error: why}
}
