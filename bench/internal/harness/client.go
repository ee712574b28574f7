package harness

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/bench/internal/load"
)

// ClientMain is a client process: it connects its share of the load,
// says "ready", waits for "go" on stdin, runs, writes its records to -out
// and its totals as JSON to stdout. It returns the exit code.
func ClientMain(args []string) int {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	var cfg load.Config
	var out string
	fs.StringVar(&cfg.Addr, "addr", "", "server address")
	fs.IntVar(&cfg.Conns, "conns", 0, "persistent connections")
	fs.Float64Var(&cfg.Rate, "rate", 0, "requests per second")
	fs.Float64Var(&cfg.Churn, "churn", 0, "new connections per second")
	fs.DurationVar(&cfg.Duration, "duration", 0, "how long to send")
	fs.StringVar(&cfg.Tag, "tag", "c", "account name prefix")
	fs.StringVar(&out, "out", "", "records file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c, err := load.Connect(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	// "go <time zero, unix ns>": every client's records share one clock.
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	epoch, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(line, "go")), 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "client: bad start line", line)
		return 1
	}
	res := c.Run(time.Unix(0, epoch), 5*time.Second)
	if err := writeRecords(out, res.Records); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(clientTotals{res.Totals, res.Duplicated})
	return 0
}

type clientTotals struct {
	Totals     load.Totals
	Duplicated int
}

func writeRecords(path string, recs []load.Record) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if err := binary.Write(w, binary.LittleEndian, recs); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readRecords(path string) ([]load.Record, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	recs := make([]load.Record, len(b)/binary.Size(load.Record{}))
	return recs, binary.Read(bytes.NewReader(b), binary.LittleEndian, recs)
}

// client is a running client process, seen from the harness.
type client struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	path  string
	conns int
}

func startClient(self string, i int, addr string, conns int, rate, churn float64, d time.Duration, path string) (*client, error) {
	cmd := exec.Command(self, "client", "-addr", addr, "-conns", strconv.Itoa(conns),
		"-rate", fmt.Sprint(rate), "-churn", fmt.Sprint(churn), "-duration", d.String(),
		"-tag", fmt.Sprintf("p%d", i), "-out", path)
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &client{cmd: cmd, in: in, out: bufio.NewReader(out), path: path, conns: conns}
	line, err := c.out.ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("harness: client %d did not connect (%q, %v)", i, line, err)
	}
	return c, nil
}

func (c *client) start(epoch time.Time) { fmt.Fprintf(c.in, "go %d\n", epoch.UnixNano()) }

// wait collects the client's totals and records.
func (c *client) wait() (clientTotals, []load.Record, error) {
	var t clientTotals
	err := json.NewDecoder(c.out).Decode(&t)
	if werr := c.cmd.Wait(); err == nil {
		err = werr
	}
	if err != nil {
		return t, nil, fmt.Errorf("harness: client: %w", err)
	}
	recs, err := readRecords(c.path)
	return t, recs, err
}
