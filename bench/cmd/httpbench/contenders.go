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
	"text/template"
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
	// handshakes is the TLS handshakes the servers counted since the
	// start, and how they were counted; nil without TLS.
	handshakes func() (n int64, how string, err error)
	// notes reads what the servers' logs say of the run, after it; nil
	// if nothing.
	notes func() []string
}

// site is where a contender serves: its temp dir, its port, and with TLS
// the pair it serves.
type site struct {
	dir  string
	port int
	tls  *tlsSetup // nil: plain HTTP
}

// scheme is the URL scheme of the site.
func (st site) scheme() string {
	if st.tls != nil {
		return "https"
	}
	return "http"
}

// contender is a server and its way of upgrading.
type contender struct {
	name  string
	how   string                         // the upgrade, for the table
	start func(st site) (*server, error) // an error skips it
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

// awaitServing waits until GET / on the site answers 200 with a body that
// contains want, or the first process exits (the reason is its log's last
// line), or 15 s pass.
func (s *server) awaitServing(st site, want string) error {
	url := fmt.Sprintf("%s://127.0.0.1:%d/", st.scheme(), st.port)
	client, err := st.tls.client()
	if err != nil {
		return err
	}
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
// With TLS it serves the site's pair and counts its handshakes on
// -metrics (port+100).
func httpdContender(bin, mode string) contender {
	return contender{
		name: "httpd " + mode,
		how:  "SIGHUP (handoff, -upgrade-mode " + mode + ")",
		start: func(st site) (*server, error) {
			exe := filepath.Join(st.dir, "httpd")
			if err := copyFile(filepath.Join(bin, "httpd"), exe); err != nil {
				return nil, err
			}
			pidfile := filepath.Join(st.dir, "httpd.pid")
			args := []string{"-listen", fmt.Sprintf("127.0.0.1:%d", st.port),
				"-pidfile", pidfile, "-upgrade-mode", mode, "-drain-timeout", "5s"}
			metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", st.port+100)
			if st.tls != nil {
				args = append(args, "-tls-cert", st.tls.cert, "-tls-key", st.tls.key,
					"-metrics", fmt.Sprintf("127.0.0.1:%d", st.port+100))
			}
			s, err := launch(filepath.Join(st.dir, "httpd.log"), exe, args...)
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
			if st.tls != nil {
				s.handshakes = func() (int64, string, error) { return httpdHandshakes(metricsURL) }
			}
			return s, s.awaitServing(st, "v1 ")
		},
	}
}

// httpdHandshakes reads the chain's TLS handshakes from httpd's /metrics:
// the TLS layer's count where connections move with it, httpd's own
// count of crypto/tls's handshakes in listeners mode.
func httpdHandshakes(url string) (int64, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	for _, name := range []string{"handoff_tls_handshakes_total", "httpd_tls_handshakes_total"} {
		n, found, err := sumMetric(string(body), name)
		if err != nil || found {
			return int64(n), name, err
		}
	}
	return 0, "", fmt.Errorf("%s: no TLS handshake count", url)
}

// nginxConf is nginx's configuration, a template of a site. With TLS it
// logs one line per connection, at its first request: the handshakes.
var nginxConf = template.Must(template.New("nginx").Parse(`# make bench-http(s): nginx serving a static reply on loopback.
worker_processes 2;
# daemon on (the default): nginx ignores USR2 in a master whose parent
# is the one that started it, taking it for a new binary whose old one
# still runs.
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log notice;
events { worker_connections 4096; }
http {
    keepalive_timeout 65s;
    keepalive_requests 1000000;  # as httpd and HAProxy: no per-connection limit
{{- if .Cert}}
    ssl_certificate {{.Cert}};
    ssl_certificate_key {{.Key}};
    ssl_protocols TLSv1.2 TLSv1.3;
    # One line per connection, at its first request: the handshakes.
    map $connection_requests $first_request { 1 1; default 0; }
    log_format tlsconn 'tlsconn $remote_port $ssl_protocol $ssl_cipher reused=$ssl_session_reused';
    access_log {{.Dir}}/conns.log tlsconn if=$first_request;
{{- else}}
    access_log off;
{{- end}}
    server {
        listen 127.0.0.1:{{.Port}}{{if .Cert}} ssl{{end}};
        location / {
            default_type text/plain;
            return 200 "ok\n";
        }
    }
}
`))

// confData is what a configuration template reads of a site.
type confData struct {
	Dir       string
	Port      int
	Cert, Key string // empty: plain HTTP
}

// writeConf renders tmpl for st into file.
func writeConf(tmpl *template.Template, st site, file string) error {
	d := confData{Dir: st.dir, Port: st.port}
	if st.tls != nil {
		d.Cert, d.Key = st.tls.cert, st.tls.key
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, d); err != nil {
		return err
	}
	return os.WriteFile(file, b.Bytes(), 0o644)
}

// nginxContender is Debian's nginx, upgraded with nginx -s reload or with
// its binary upgrade (USR2, then QUIT to the old master), as
// https://nginx.org/en/docs/control.html describes.
func nginxContender(binary bool) contender {
	c := contender{name: "nginx reload", how: "nginx -s reload (new workers, old ones finish gracefully)"}
	if binary {
		c = contender{name: "nginx binary upgrade", how: "USR2 to the master, then QUIT to the old master"}
	}
	c.start = func(st site) (*server, error) {
		dir := st.dir
		conf := filepath.Join(dir, "nginx.conf")
		if err := writeConf(nginxConf, st, conf); err != nil {
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
		if st.tls != nil {
			s.handshakes = func() (int64, string, error) {
				n, err := countLines(filepath.Join(dir, "conns.log"), "tlsconn ")
				return n, "access_log lines (first request of each connection)", err
			}
		}
		if err := s.awaitServing(st, "ok"); err != nil {
			return s, err
		}
		if !poll(5*time.Second, func() bool { return len(children(master)) >= 2 }) {
			return s, errors.New("nginx: fewer than 2 workers")
		}
		return s, nil
	}
	return c
}

// haproxyConf is HAProxy's configuration, a template of a site. With
// TLS it logs one line per connection, at its first request (a session
// variable marks the ones seen): the handshakes.
var haproxyConf = template.Must(template.New("haproxy").Parse(`# make bench-http(s): HAProxy serving a static reply on loopback.
global
    master-worker
    pidfile {{.Dir}}/haproxy.pid
    hard-stop-after 10s
{{- if .Cert}}
    log stdout format raw local0 info
{{- end}}

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

frontend static
{{- if .Cert}}
    bind 127.0.0.1:{{.Port}} ssl crt {{.Dir}}/haproxy.pem alpn http/1.1
    # One line per connection, at its first request: the handshakes.
    log global
    option dontlognull
    log-format "tlsconn %cp %sslv %sslc"
    http-request set-log-level silent if { var(sess.seen) -m found }
    http-request set-var(sess.seen) bool(1)
{{- else}}
    bind 127.0.0.1:{{.Port}}
{{- end}}
    http-request return status 200 content-type text/plain string "ok\n"
`))

// haproxyContender is Debian's HAProxy in master-worker mode, reloaded by
// USR2 to the master: it executes itself again and starts a new worker;
// the old worker finishes its connections (soft stop).
func haproxyContender() contender {
	return contender{
		name: "HAProxy reload",
		how:  "USR2 to the master (master-worker mode)",
		start: func(st site) (*server, error) {
			dir := st.dir
			conf := filepath.Join(dir, "haproxy.cfg")
			if err := writeConf(haproxyConf, st, conf); err != nil {
				return nil, err
			}
			if st.tls != nil { // HAProxy takes the chain and the key in one file
				if err := concat(filepath.Join(dir, "haproxy.pem"), st.tls.cert, st.tls.key); err != nil {
					return nil, err
				}
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
			if st.tls != nil {
				s.handshakes = func() (int64, string, error) {
					n, err := countLines(filepath.Join(dir, "haproxy.log"), "tlsconn ")
					return n, "log lines (first request of each connection)", err
				}
			}
			s.notes = func() []string { return haproxyNotes(filepath.Join(dir, "haproxy.log")) }
			return s, s.awaitServing(st, "ok")
		},
	}
}

// haproxyNotes counts, in the master's log, the reloads it began and the
// workers that ended on a signal other than its own SIGTERM at cleanup.
func haproxyNotes(file string) []string {
	b, err := os.ReadFile(file)
	if err != nil {
		return []string{err.Error()}
	}
	reloads := strings.Count(string(b), "Reloading HAProxy")
	var crashed []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "Former worker") && strings.Contains(l, "exited with code") &&
			!strings.Contains(l, "exited with code 0 ") {
			_, after, _ := strings.Cut(l, " : ")
			crashed = append(crashed, after)
		}
	}
	notes := []string{fmt.Sprintf("its master's log: %d reloads begun", reloads)}
	if len(crashed) > 0 {
		notes = append(notes, fmt.Sprintf("%d old workers did not exit cleanly: %s", len(crashed), strings.Join(crashed, "; ")))
	}
	return notes
}

// concat writes the files' contents one after the other into to.
func concat(to string, files ...string) error {
	var all []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		all = append(all, b...)
	}
	return os.WriteFile(to, all, 0o600)
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}
