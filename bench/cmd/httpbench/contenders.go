package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// server is one contender's running instance.
type server struct {
	cmd    *exec.Cmd
	waited chan struct{} // closed once cmd's process has exited and been reaped
	// pgid is the process group of every process it starts: cmd's, unless
	// it daemonizes (nginx: its master makes a session of its own).
	pgid   int
	daemon bool     // cmd exits at once, leaving a daemon
	logs   []string // files its processes log to
	// upgrade triggers one upgrade and reports, within budget, whether it
	// happened: the processes that serve are new ones.
	upgrade func(budget time.Duration) (ok bool, why string)
}

// contender is a server and its way of upgrading.
type contender struct {
	name  string
	how   string                                      // the upgrade, for the table
	start func(dir string, port int) (*server, error) // an error skips it
}

// launch starts name in a process group of its own, logging to logFile.
func launch(logFile string, name string, args ...string) (*server, error) {
	f, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, waited: make(chan struct{}), pgid: cmd.Process.Pid, logs: []string{logFile}}
	go func() { _ = cmd.Wait(); close(s.waited) }()
	return s, nil
}

// awaitServing waits until GET / on port answers 200 with a body that
// contains want, or the first process exits (the reason is its log's last
// line), or 15 s pass.
func (s *server) awaitServing(port int, want string) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.waited:
			if !s.daemon {
				return fmt.Errorf("exited at start: %s", s.lastLogLine())
			}
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.Contains(string(body), want) {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("not serving after 15s: %s", s.lastLogLine())
}

// lastLogLine is the last non-empty line the server logged: of an slog
// line, its err value only.
func (s *server) lastLogLine() string {
	var last string
	for _, l := range s.logs {
		b, _ := os.ReadFile(l)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if t := strings.TrimSpace(lines[len(lines)-1]); t != "" {
			last = t
		}
	}
	if _, e, ok := strings.Cut(last, ` err="`); ok {
		last, _, _ = strings.Cut(e, `"`)
	}
	return last
}

// newPIDs counts the pids of now that were not in before.
func newPIDs(before, now map[int]bool) int {
	n := 0
	for p := range now {
		if !before[p] {
			n++
		}
	}
	return n
}

// httpdContender is bin/httpd in the given -upgrade-mode, upgraded by
// SIGHUP. Its binary is copied into dir, the path upgrades start again.
func httpdContender(bin, mode string) contender {
	return contender{
		name: "httpd " + mode,
		how:  "SIGHUP (handoff, -upgrade-mode " + mode + ")",
		start: func(dir string, port int) (*server, error) {
			exe := filepath.Join(dir, "httpd")
			if err := copyFile(filepath.Join(bin, "httpd"), exe); err != nil {
				return nil, err
			}
			pidfile := filepath.Join(dir, "httpd.pid")
			s, err := launch(filepath.Join(dir, "httpd.log"), exe, "-listen", fmt.Sprintf("127.0.0.1:%d", port),
				"-pidfile", pidfile, "-upgrade-mode", mode, "-drain-timeout", "5s")
			if err != nil {
				return nil, err
			}
			s.upgrade = func(budget time.Duration) (bool, string) {
				old := readPID(pidfile)
				if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
					return false, fmt.Sprintf("SIGHUP %d: %v", old, err)
				}
				if poll(budget, func() bool { p := readPID(pidfile); return p != 0 && p != old && alive(p) }) {
					return true, ""
				}
				return false, fmt.Sprintf("pid file still names %d", old)
			}
			return s, s.awaitServing(port, "v1 ")
		},
	}
}

const nginxConf = `# make bench-http: nginx serving a static reply on loopback.
worker_processes 2;
# daemon on (the default): nginx ignores USR2 in a master whose parent
# is the one that started it, taking it for a new binary whose old one
# still runs.
pid %[1]s/nginx.pid;
error_log %[1]s/error.log notice;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 65s;
    keepalive_requests 1000000;  # as httpd and HAProxy: no per-connection limit
    server {
        listen 127.0.0.1:%[2]d;
        location / {
            default_type text/plain;
            return 200 "ok\n";
        }
    }
}
`

// nginxContender is Debian's nginx, upgraded with nginx -s reload or with
// its binary upgrade (USR2, then QUIT to the old master), as
// https://nginx.org/en/docs/control.html describes.
func nginxContender(binary bool) contender {
	c := contender{name: "nginx reload", how: "nginx -s reload (new workers, old ones finish gracefully)"}
	if binary {
		c = contender{name: "nginx binary upgrade", how: "USR2 to the master, then QUIT to the old master"}
	}
	c.start = func(dir string, port int) (*server, error) {
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, port), 0o644); err != nil {
			return nil, err
		}
		// Started by its absolute path: a binary upgrade executes argv[0].
		base := []string{"-p", dir + "/", "-c", conf, "-e", filepath.Join(dir, "error.log")}
		s, err := launch(filepath.Join(dir, "nginx.out"), "/usr/sbin/nginx", base...)
		if err != nil {
			return nil, err
		}
		s.logs = append(s.logs, filepath.Join(dir, "error.log"))
		s.daemon = true
		pidfile := filepath.Join(dir, "nginx.pid")
		var master int
		if !poll(5*time.Second, func() bool { master = readPID(pidfile); return master != 0 && alive(master) }) {
			return s, fmt.Errorf("nginx: no master: %s", s.lastLogLine())
		}
		// The master's session and group, which a binary upgrade's new
		// master shares (an inherited nginx does not daemonize again).
		s.pgid = master
		if binary {
			s.upgrade = func(budget time.Duration) (bool, string) {
				deadline := time.Now().Add(budget)
				old := master
				if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
					return false, fmt.Sprintf("USR2 %d: %v", old, err)
				}
				var next int
				if !poll(time.Until(deadline), func() bool {
					next = readPID(pidfile)
					_, err := os.Stat(pidfile + ".oldbin")
					return err == nil && next != 0 && next != old && alive(next) && len(children(next)) >= 2
				}) {
					return false, "no new master with its workers"
				}
				if err := syscall.Kill(old, syscall.SIGQUIT); err != nil {
					return false, fmt.Sprintf("QUIT %d: %v", old, err)
				}
				master = next
				if !poll(time.Until(deadline), func() bool { return !alive(old) }) {
					return false, fmt.Sprintf("old master %d still runs", old)
				}
				return true, ""
			}
		} else {
			s.upgrade = func(budget time.Duration) (bool, string) {
				before := children(master)
				out, err := exec.Command("/usr/sbin/nginx", append(base, "-s", "reload")...).CombinedOutput()
				if err != nil {
					return false, fmt.Sprintf("nginx -s reload: %v: %s", err, bytes.TrimSpace(out))
				}
				if poll(budget, func() bool { return newPIDs(before, children(master)) >= 2 }) {
					return true, ""
				}
				return false, "no new workers"
			}
		}
		if err := s.awaitServing(port, "ok"); err != nil {
			return s, err
		}
		if !poll(5*time.Second, func() bool { return len(children(master)) >= 2 }) {
			return s, errors.New("nginx: fewer than 2 workers")
		}
		return s, nil
	}
	return c
}

const haproxyConf = `# make bench-http: HAProxy serving a static reply on loopback.
global
    master-worker
    pidfile %[1]s/haproxy.pid
    hard-stop-after 10s

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

frontend static
    bind 127.0.0.1:%[2]d
    http-request return status 200 content-type text/plain string "ok\n"
`

// haproxyContender is Debian's HAProxy in master-worker mode, reloaded by
// USR2 to the master: it executes itself again and starts a new worker;
// the old worker finishes its connections (soft stop).
func haproxyContender() contender {
	return contender{
		name: "HAProxy reload",
		how:  "USR2 to the master (master-worker mode)",
		start: func(dir string, port int) (*server, error) {
			conf := filepath.Join(dir, "haproxy.cfg")
			if err := os.WriteFile(conf, fmt.Appendf(nil, haproxyConf, dir, port), 0o644); err != nil {
				return nil, err
			}
			s, err := launch(filepath.Join(dir, "haproxy.log"), "/usr/sbin/haproxy",
				"-W", "-S", filepath.Join(dir, "master.sock"), "-f", conf)
			if err != nil {
				return nil, err
			}
			master := s.cmd.Process.Pid
			s.upgrade = func(budget time.Duration) (bool, string) {
				before := children(master)
				if err := syscall.Kill(master, syscall.SIGUSR2); err != nil {
					return false, fmt.Sprintf("USR2 %d: %v", master, err)
				}
				if poll(budget, func() bool { return newPIDs(before, children(master)) >= 1 }) {
					return true, ""
				}
				return false, "no new worker"
			}
			return s, s.awaitServing(port, "ok")
		},
	}
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}
