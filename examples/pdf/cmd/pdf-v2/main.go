// Command pdf-v2 is version 2 of the PDF charging server. It keeps its
// accounts in flat arrays with an index (ledger schema 2, sent as schema 3
// to a new process that reads it) and answers STATS. It takes over from
// pdf-v1 and hands back to it, migrating the ledger either way.
package main

import (
	"os"

	"github.com/handoff-dev/handoff/examples/pdf/internal/app"
	"github.com/handoff-dev/handoff/examples/pdf/internal/ledger"
)

func main() {
	os.Exit(app.Run("v2.0.0", ledger.NewV2(), os.Args[1:]))
}
