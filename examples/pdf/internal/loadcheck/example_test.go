package loadcheck_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/handoff-dev/handoff/examples/pdf/internal/loadcheck"
)

// Drive a server for a minute, or until interrupted, and fail unless every
// reply was right and no connection was lost.
func ExampleRun() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := loadcheck.Run(ctx, loadcheck.Config{
		Addr:     "127.0.0.1:7070",
		Conns:    1000,
		Rate:     10000,
		Duration: time.Minute,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Print(rep)
	if !rep.OK() {
		os.Exit(1)
	}
}
