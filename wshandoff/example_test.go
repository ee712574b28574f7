package wshandoff_test

import (
	"fmt"
	"log"
	"net/http"
	"strconv"

	"github.com/gorilla/websocket"
	"github.com/handoff-dev/handoff/handoff"
	"github.com/handoff-dev/handoff/httphandoff"
	"github.com/handoff-dev/handoff/wshandoff"
)

// A whole WebSocket echo server whose connections move to the new binary
// at SIGHUP: each reply counts the connection's messages, a count that
// moves with it. The README shows this code.
func Example() {
	ws := &wshandoff.Upgrader{}
	srv := httphandoff.New(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := ws.Upgrade(w, r, nil); err == nil {
			echo(c, 0)
		}
	})})
	var ln *handoff.Listener
	err := handoff.Run(handoff.Options{Mode: handoff.Rolling, Resume: func(c *handoff.Conn, state []byte) {
		if !wshandoff.IsWebSocket(state) {
			srv.Resume(c, state) // an HTTP keep-alive connection
		} else if c, count, err := ws.Resume(c, state); err == nil {
			n, _ := strconv.Atoi(string(count))
			echo(c, n)
		}
	}}, handoff.Service{
		Setup:    func(up *handoff.Upgrader) (err error) { ln, err = up.Listen("tcp", "127.0.0.1:8080"); return err },
		Serve:    func() error { return srv.Serve(ln) },
		Shutdown: srv.Drain,
	})
	if err != nil {
		log.Fatal(err)
	}
}

func echo(c *websocket.Conn, n int) {
	wshandoff.OnPark(c, func() []byte { return strconv.AppendInt(nil, int64(n), 10) }) // the state that moves
	for {
		typ, msg, err := c.ReadMessage() // parks here, between two messages, at an upgrade
		if err != nil || c.WriteMessage(typ, fmt.Appendf(nil, "%d %s", n+1, msg)) != nil {
			c.Close() // after a handover this closes nothing
			return
		}
		n++
	}
}
