package handoff_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/handoff-dev/handoff/handoff"
)

// A line echo server whose request count survives upgrades. SIGHUP
// upgrades it to whatever binary is at its path now; SIGTERM stops it.
func Example() {
	// Before anything that can take long, so that no stop is lost.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	srv := &echoServer{}
	up, err := handoff.New(handoff.Options{
		Version:   "v2.0.0",
		PIDFile:   "/run/echo/echo.pid",
		SaveState: srv.save,  // old process, every connection parked
		LoadState: srv.load,  // new process; an error rolls the upgrade back
		Resume:    srv.serve, // new process, once per handed-over connection
	})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := up.Listen("tcp", "127.0.0.1:7070") // inherited across upgrades
	if err != nil {
		log.Fatal(err)
	}
	// Takes over from the old process, if this one was started by an
	// upgrade. On error the old process carries on: exit, saving nothing.
	if err := up.Ready(context.Background()); err != nil {
		log.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.AcceptConn()
			if err != nil {
				return // handed over, or closed
			}
			go srv.serve(c, nil)
		}
	}()
	select {
	case <-up.Exit():
		// Handed over: the new process owns the connections and the
		// count. Exit without closing them, once a stop that reached
		// this process meanwhile is passed on to the new one.
		up.Exiting()
	case <-stop:
		if err := up.Stop(); err == nil {
			srv.saveFile("/var/lib/echo/state") // this process owns the count
		} // else a successor owns it, and Stop passed the stop on to it
	}
}

type echoServer struct {
	mu       sync.Mutex
	requests uint64
}

// serve answers each line with itself. state is what the handler gave to
// Park in the old process (nil for a new connection); this one keeps none.
func (s *echoServer) serve(c *handoff.Conn, state []byte) {
	for {
		line, err := c.Next(bufio.ScanLines)
		if errors.Is(err, handoff.ErrPark) {
			if c.Park(nil) != nil {
				return // the new process has the connection now
			}
			continue // rolled back: carry on where we stopped
		}
		if err != nil {
			c.Close()
			return
		}
		s.mu.Lock()
		s.requests++
		s.mu.Unlock()
		if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
			c.Close()
			return
		}
	}
}

// save and load carry the count to the new process. A real server writes
// a state file (package statefile), so that a new version with another
// layout can migrate it.
func (s *echoServer) save(w io.Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return binary.Write(w, binary.BigEndian, s.requests)
}

func (s *echoServer) load(r io.Reader) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return binary.Read(r, binary.BigEndian, &s.requests)
}

func (s *echoServer) saveFile(path string) {
	s.mu.Lock() // for good: no client is told of a request the file misses
	b := binary.BigEndian.AppendUint64(nil, s.requests)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		log.Print(err)
	}
}
