// Command pdf-v1 is version 1 of the PDF charging server. It keeps balances
// and charge counts in two maps (ledger schema 1) and has no STATS command.
package main

import (
	"os"

	"github.com/handoff-dev/handoff/examples/pdf/internal/app"
	"github.com/handoff-dev/handoff/examples/pdf/internal/ledger"
)

func main() {
	os.Exit(app.Run("v1.0.0", ledger.NewV1(), os.Args[1:]))
}
