package demo

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// probeTimeout bounds one request of a probe, upgrade pauses included.
const probeTimeout = 10 * time.Second

// probe is a plain client connection of the demo's own, one request at a
// time, for the checks that need an exact answer at an exact moment.
type probe struct {
	nc  net.Conn
	r   *bufio.Reader
	gw  string
	rid int
}

// dialProbe connects and says HELLO as gw.
func dialProbe(addr, gw string) (*probe, error) {
	nc, err := net.DialTimeout("tcp", addr, probeTimeout)
	if err != nil {
		return nil, fmt.Errorf("demo: probe: %w", err)
	}
	p := &probe{nc: nc, r: bufio.NewReader(nc), gw: gw}
	reply, err := p.exchange("HELLO " + gw)
	if err == nil && reply != "WELCOME "+gw {
		err = fmt.Errorf("demo: probe %s: HELLO got %q", gw, reply)
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return p, nil
}

func (p *probe) close() { p.nc.Close() }

func (p *probe) exchange(line string) (string, error) {
	p.nc.SetDeadline(time.Now().Add(probeTimeout))
	if _, err := p.nc.Write([]byte(line + "\n")); err != nil {
		return "", fmt.Errorf("demo: probe %s: %q: %w", p.gw, line, err)
	}
	reply, err := p.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("demo: probe %s: %q: %w", p.gw, line, err)
	}
	return strings.TrimRight(reply, "\r\n"), nil
}

// ask sends verb with a fresh rid and args, and returns the reply with
// its rid taken out: "STATS d7 800 2" comes back as "STATS 800 2".
func (p *probe) ask(verb string, args ...string) (string, error) {
	p.rid++
	rid := "d" + strconv.Itoa(p.rid)
	reply, err := p.exchange(strings.Join(append([]string{verb, rid}, args...), " "))
	if err != nil {
		return "", err
	}
	f := strings.Fields(reply)
	if len(f) < 2 || f[1] != rid {
		return "", fmt.Errorf("demo: probe %s: %s %s got %q", p.gw, verb, rid, reply)
	}
	return strings.Join(append(f[:1:1], f[2:]...), " "), nil
}

// expect asks and fails unless the reply, rid taken out, is want.
func (p *probe) expect(want, verb string, args ...string) error {
	got, err := p.ask(verb, args...)
	if err == nil && got != want {
		err = fmt.Errorf("demo: probe %s: %s %v got %q, want %q", p.gw, verb, args, got, want)
	}
	return err
}

// version asks which version and pid serve the connection now.
func (p *probe) version() (version string, pid int, err error) {
	got, err := p.ask("VERSION")
	if err != nil {
		return "", 0, err
	}
	f := strings.Fields(got)
	if len(f) == 3 && f[0] == "VERSION" {
		if pid, err = strconv.Atoi(f[2]); err == nil {
			return f[1], pid, nil
		}
	}
	return "", 0, fmt.Errorf("demo: probe %s: VERSION got %q", p.gw, got)
}
