package app

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/examples/chat/internal/load"
)

// The test binary doubles as the chat server (TestMain runs Run with the
// arguments envArgs holds); an upgrade starts the test binary again, with
// the same arguments and environment, so every process of the chain is one.
const envArgs = "CHAT_TEST_SERVER_ARGS"

func TestMain(m *testing.M) {
	if args := os.Getenv(envArgs); args != "" {
		os.Exit(Run(strings.Fields(args)))
	}
	os.Exit(m.Run())
}

// startServer starts the chain's first process and waits until it serves
// (its pid file exists); it returns the address and the pid file.
func startServer(t *testing.T, mode string) (addr, pidfile string) {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	pidfile = filepath.Join(dir, "pid")
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), envArgs+"="+strings.Join([]string{
		"-listen", addr, "-pidfile", pidfile, "-upgrade-mode", mode, "-control", filepath.Join(dir, "ctl")}, " "))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(pidfile); err == nil {
			return addr, pidfile
		}
		if time.Now().After(deadline) {
			t.Fatal("the server wrote no pid file in a minute")
		}
	}
}

// TestUpgradesKeepEveryClient: a few hundred chat clients in rooms of
// ten and some echo clients, sending all along, across four upgrades:
// no client reconnects, every room message reaches every member once and
// in order, every send comes back, and every echo count continues from
// the last.
func TestUpgradesKeepEveryClient(t *testing.T) {
	for _, mode := range []string{modeRolling, modeFull} {
		t.Run(mode, func(t *testing.T) {
			addr, pidfile := startServer(t, mode)
			r, err := load.Run(load.Config{
				URL: "ws://" + addr, Clients: 300, RoomSize: 10, Echo: 30,
				Every: time.Second, Upgrades: 4, UpgradeEvery: time.Second,
				PIDFile: pidfile, Settle: 2 * time.Minute, Logf: t.Logf,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("\n%s", r.Summary())
			checkUpgrades(t, r, 4)
			// Duplicates: a message whose write ended just before its
			// connection parked must not move in the queue as well
			// (wshandoff.MessagesWritten tells it).
			if r.Reconnects != 0 || r.Missed != 0 || r.Reordered != 0 || r.Resets != 0 || r.Unsent != 0 || r.Duplicates != 0 {
				t.Errorf("reconnects %d, missed %d, reordered %d, renumbered %d, unsent %d, duplicates %d: want none",
					r.Reconnects, r.Missed, r.Reordered, r.Resets, r.Unsent, r.Duplicates)
			}
			if r.Sent == 0 || r.Delivered != r.Sent || r.Unechoed != 0 {
				t.Errorf("sent %d, back to the sender %d, never back %d", r.Sent, r.Delivered, r.Unechoed)
			}
			// Every member of a room gets what any of them says.
			if r.Received-r.Duplicates != r.Sent*10 {
				t.Errorf("received %d room messages, want %d (10 members × %d sent)", r.Received, r.Sent*10, r.Sent)
			}
			if r.EchoSent == 0 || r.EchoOK != r.EchoSent || r.EchoBad != 0 {
				t.Errorf("echo: sent %d, right count %d, wrong count %d", r.EchoSent, r.EchoOK, r.EchoBad)
			}
		})
	}
}

// checkUpgrades checks that n upgrades ended, each in a new process.
func checkUpgrades(t *testing.T, r load.Report, n int) {
	t.Helper()
	if len(r.Upgrades) != n {
		t.Fatalf("%d upgrades, want %d", len(r.Upgrades), n)
	}
	seen := map[int]bool{}
	for i, u := range r.Upgrades {
		if u.Err != "" || u.To == u.From || seen[u.To] {
			t.Errorf("upgrade %d: %d -> %d: %s", i+1, u.From, u.To, u.Err)
		}
		seen[u.From] = true
	}
}

// TestRestartReconnects: the restart mode that the benchmark compares
// with drops every client at each upgrade, and they come back.
func TestRestartReconnects(t *testing.T) {
	addr, pidfile := startServer(t, modeRestart)
	r, err := load.Run(load.Config{
		URL: "ws://" + addr, Clients: 50, RoomSize: 10, Echo: 10, Every: 200 * time.Millisecond,
		Upgrades: 2, UpgradeEvery: time.Second, PIDFile: pidfile, Restart: true,
		MinBackoff: 50 * time.Millisecond, Settle: time.Minute, Logf: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", r.Summary())
	if len(r.Upgrades) != 2 {
		t.Fatalf("%d upgrades, want 2", len(r.Upgrades))
	}
	for i, u := range r.Upgrades {
		if u.Err != "" || u.Reconnects < 60 {
			t.Errorf("restart %d: %d reconnects, want every one of the 60 clients; %s", i+1, u.Reconnects, u.Err)
		}
	}
	if r.Resets == 0 {
		t.Error("no client saw the rooms renumbered from scratch after a restart")
	}
	if r.EchoBad != 0 {
		t.Errorf("%d echo replies with a wrong count (a reconnected client counts from 1 again)", r.EchoBad)
	}
}
