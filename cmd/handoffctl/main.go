package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `usage: handoffctl inspect FILE

Commands:
  inspect   print a state file's header and sections and verify its checksums
`

// Exit statuses, as the flag package uses them: 2 is a usage error.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches to a subcommand and returns the exit status, so that only
// main calls os.Exit.
func run(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("handoffctl", stderr)
	if err := fs.Parse(args); err != nil {
		return parseStatus(err)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	switch cmd := fs.Arg(0); cmd {
	case "inspect":
		return runInspect(fs.Args()[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "handoffctl: unknown command %q\n", cmd)
		fs.Usage()
		return exitUsage
	}
}

func runInspect(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("handoffctl inspect", stderr)
	if err := fs.Parse(args); err != nil {
		return parseStatus(err)
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "handoffctl: inspect takes one file")
		fs.Usage()
		return exitUsage
	}
	if err := inspect(stdout, fs.Arg(0)); err != nil {
		fmt.Fprintf(stderr, "handoffctl: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// newFlagSet returns a flag set that reports its errors instead of
// exiting, and prints the one usage text for every subcommand.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage) }
	return fs
}

// parseStatus is the exit status for a flag parse error: asking for help
// is not a failure.
func parseStatus(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}
