package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// loadReport is the part of chatload's -json report used here.
type loadReport struct {
	Clients  int
	Upgrades []struct {
		At         time.Time
		From, To   int
		Took       time.Duration
		Reconnects int
		Err        string
	}
	Sent, Delivered, Unechoed          int64
	Received, Missed, Reordered        int64
	Duplicates, Resets, Unsent         int64
	Reconnects, DialFails              int64
	LatencyP50, LatencyP99, LatencyMax time.Duration
	LongestSilence                     time.Duration
}

// row is one mode's result.
type row struct {
	Mode       string
	Load       loadReport
	UpgradeCPU []time.Duration // per upgrade: CPU in the window after, less the window before
	ServerCPU  time.Duration   // every server process, the whole run
	Processes  int
	RunFor     time.Duration
}

func runMode(c config, mode string) (row, error) {
	dir, err := os.MkdirTemp("", "chatbench-")
	if err != nil {
		return row{}, err
	}
	defer os.RemoveAll(dir)
	addr, err := freeAddr()
	if err != nil {
		return row{}, err
	}
	pidfile := filepath.Join(dir, "pid")
	logf, err := os.Create(filepath.Join(c.out, mode+"-server.log"))
	if err != nil {
		return row{}, err
	}
	defer logf.Close()
	srv := exec.Command(filepath.Join(c.bin, "chat"), "-listen", addr, "-pidfile", pidfile, "-upgrade-mode", mode)
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		return row{}, err
	}
	first := srv.Process.Pid
	defer func() { // whatever is left: the chain's last process, and the zombies
		if pid, err := readPID(pidfile); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		syscall.Kill(first, syscall.SIGKILL)
		time.Sleep(100 * time.Millisecond)
		reapAll()
	}()
	if err := waitFile(pidfile, time.Minute); err != nil {
		return row{}, err
	}
	smp := newSampler(pidfile, first, 100*time.Millisecond)
	start := time.Now()
	jsonPath := filepath.Join(c.out, mode+"-load.json")
	args := []string{"-url", "ws://" + addr, "-clients", strconv.Itoa(c.clients), "-room-size", strconv.Itoa(c.roomSize),
		"-every", c.every.String(), "-upgrades", strconv.Itoa(c.upgrades), "-upgrade-every", c.upgradeEvery.String(),
		"-pidfile", pidfile, "-json", jsonPath, "-min-backoff", c.minBackoff.String(), "-max-backoff", c.maxBackoff.String()}
	if mode == "restart" {
		args = append(args, "-restart")
	}
	loadOut, err := os.Create(filepath.Join(c.out, mode+"-load.txt"))
	if err != nil {
		return row{}, err
	}
	defer loadOut.Close()
	fmt.Fprintf(loadOut, "%s %s\n", filepath.Join(c.bin, "chatload"), strings.Join(args, " "))
	ld := exec.Command(filepath.Join(c.bin, "chatload"), args...)
	ld.Stdout, ld.Stderr = loadOut, loadOut
	fmt.Fprintf(os.Stderr, "chatbench: %s: %d clients, %d upgrades...\n", mode, c.clients, c.upgrades)
	loadErr := ld.Run() // exit status 3: not clean, which restart never is
	samples := smp.end()
	r := row{Mode: mode, RunFor: time.Since(start)}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		return row{}, fmt.Errorf("chatload: %v; %w", loadErr, err)
	}
	if err := json.Unmarshal(b, &r.Load); err != nil {
		return row{}, err
	}
	// Upgrade i's CPU: from its SIGHUP until it ended plus the window
	// (restart: until every client was back), less what the servers
	// spent at the rate of the window before the SIGHUP.
	for _, u := range r.Load.Upgrades {
		span := u.Took + c.window
		rate := float64(cpuAt(samples, u.At)-cpuAt(samples, u.At.Add(-c.window))) / float64(c.window)
		during := cpuAt(samples, u.At.Add(span)) - cpuAt(samples, u.At)
		r.UpgradeCPU = append(r.UpgradeCPU, during-time.Duration(rate*float64(span)))
	}
	if len(samples) > 0 {
		r.ServerCPU = samples[len(samples)-1].cpu
	}
	smp.mu.Lock()
	r.Processes = len(smp.pids)
	smp.mu.Unlock()
	if pid, err := readPID(pidfile); err == nil {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	return r, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func waitFile(path string, d time.Duration) error {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%s: not written in %v", path, d)
}
