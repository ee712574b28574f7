package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/examples/pdf/internal/ledger"
)

// Which schema the ledger travels in to a new process. Every pdf binary
// reads schemas 1 and 2; a binary built since schema 3 also reads that,
// which loads many times faster. An old process cannot ask the new one
// over the handoff (it learns nothing of it before SaveState), so it asks
// the binary as the upgrade starts it: BIN -state-schemas prints what it
// reads, and one that does not know the flag reads 1 and 2 only. At
// SaveState it sends schema 3 only if the new process runs that very
// file: a binary named to handoffctl upgrade -binary, a peer taking over
// (another container's image), or a file replaced since the question get
// the version's own schema, which any pdf binary reads.

// printSchemas answers -state-schemas: the application and the schemas
// this binary reads, as "pdf 1 2 3".
func printSchemas(w io.Writer) {
	fmt.Fprint(w, ledger.States.App())
	for _, v := range ledger.States.Schemas() {
		fmt.Fprint(w, " ", v)
	}
	fmt.Fprintln(w)
}

// nextBinary is what an old process learned of the binary an upgrade is
// about to start.
type nextBinary struct {
	file  os.FileInfo // the file asked, to tell it from another
	reads []uint32
}

// askSchemaTimeout bounds the question; it runs while the upgrade starts
// the new process, and SaveState waits for its answer.
const askSchemaTimeout = 5 * time.Second

// schemaAsk is askNext running beside the upgrade: the answer is needed
// only once the ledger is sent, after the new process has started and
// taken the early connections, so the question does not delay the start
// (it is a run of the binary, 10-60 ms on our VMs).
type schemaAsk struct {
	done chan struct{}
	next *nextBinary // set before done closes; nil if the question failed
}

// startAsk puts the question to bin; failed says why it went unanswered.
func startAsk(bin string, failed func(error)) *schemaAsk {
	a := &schemaAsk{done: make(chan struct{})}
	go func() {
		defer close(a.done)
		next, err := askNext(bin)
		if err != nil {
			failed(err)
		}
		a.next = next
	}()
	return a
}

// answer waits for the binary's answer (at most askSchemaTimeout from the
// start): nil if it gave none, or if a is nil (nothing was asked).
func (a *schemaAsk) answer() *nextBinary {
	if a == nil {
		return nil
	}
	<-a.done
	return a.next
}

// askNext asks bin which state schemas it reads. An error leaves next
// empty: the new process gets this version's own schema.
func askNext(bin string) (*nextBinary, error) {
	fi, err := os.Stat(bin)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), askSchemaTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "-state-schemas")
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s -state-schemas: %w (a binary built before schema %d)", bin, err, ledger.Schema3)
	}
	f := strings.Fields(out.String())
	if len(f) == 0 || f[0] != ledger.States.App() {
		return nil, fmt.Errorf("%s -state-schemas: answered %q", bin, out.String())
	}
	next := &nextBinary{file: fi}
	for _, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%s -state-schemas: answered %q", bin, out.String())
		}
		next.reads = append(next.reads, uint32(v))
	}
	return next, nil
}

// schemaFor returns the schema to send to the new process: Schema3 if
// next said it reads it and a child of this process runs next's file,
// else own.
func schemaFor(next *nextBinary, own uint32) uint32 {
	if next == nil || !slices.Contains(next.reads, ledger.Schema3) || !childRuns(next.file) {
		return own
	}
	return ledger.Schema3
}

// childRuns says whether a child of this process runs the executable
// file fi. /proc/PID/exe names the file a process executed even once it
// has been replaced, so a file deployed after the question does not pass
// for the one asked.
func childRuns(fi os.FileInfo) bool {
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, pid := range strings.Fields(string(b)) {
			if exe, err := os.Stat("/proc/" + pid + "/exe"); err == nil && os.SameFile(exe, fi) {
				return true
			}
		}
	}
	return false
}
