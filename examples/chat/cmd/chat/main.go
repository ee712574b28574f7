// Command chat is a WebSocket chat gateway upgraded with the handoff
// library (package wshandoff): rooms whose clients keep their connections
// across upgrades. chat -h says the endpoints, flags and signals.
package main

import (
	"os"

	"github.com/handoff-dev/handoff/examples/chat/internal/app"
)

func main() {
	os.Exit(app.Run(os.Args[1:]))
}
