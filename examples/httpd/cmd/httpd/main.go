// Command httpd is a small net/http server upgraded with the handoff
// library: GET / answers its version and pid, GET /slow?ms=N answers after
// N ms, POST /echo returns the request's body. It is what make bench-http
// puts under wrk load while it upgrades it, and what an HTTP server embeds.
// httpd -h says the flags and signals.
package main

import (
	"os"

	"github.com/handoff-dev/handoff/examples/httpd/internal/app"
)

func main() {
	os.Exit(app.Run(os.Args[1:]))
}
