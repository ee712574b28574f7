package handoff

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/controlwire"
)

func TestParseCommand(t *testing.T) {
	for _, tc := range []struct {
		line string
		want controlwire.Request
		err  string // "": no error
	}{
		{line: "HANDOFF-CONTROL 1 status", want: controlwire.Request{Command: "status"}},
		{line: "HANDOFF-CONTROL 1 upgrade", want: controlwire.Request{Command: "upgrade"}},
		{line: "HANDOFF-CONTROL 1 upgrade binary=/usr/bin/pdf timeout=1s",
			want: controlwire.Request{Command: "upgrade", Binary: "/usr/bin/pdf", Timeout: time.Second}},
		{line: "HANDOFF-CONTROL 1 upgrade app=example.com/chat/cmd/chatd",
			want: controlwire.Request{Command: "upgrade", App: "example.com/chat/cmd/chatd"}},
		{line: "HANDOFF-CONTROL 1 upgrade app=" + strings.Repeat("a", maxAppName+1), err: "at most 256"},
		{line: "  HANDOFF-CONTROL  1  status  ", want: controlwire.Request{Command: "status"}},
		{line: "", err: "want \"HANDOFF-CONTROL 1"},
		{line: "GET / HTTP/1.1", err: "want \"HANDOFF-CONTROL 1"},
		{line: "HANDOFF-CONTROL 2 status", err: "protocol version"},
		{line: "HANDOFF-CONTROL 1 reboot", err: "unknown command"},
		{line: "HANDOFF-CONTROL 1 status verbose=1", err: "takes no arguments"},
		{line: "HANDOFF-CONTROL 1 upgrade binary=pdf", err: "absolute path"},
		{line: "HANDOFF-CONTROL 1 upgrade timeout=-1s", err: "positive duration"},
		{line: "HANDOFF-CONTROL 1 upgrade timeout=soon", err: "positive duration"},
		{line: "HANDOFF-CONTROL 1 upgrade timeout", err: "KEY=VALUE"},
		{line: "HANDOFF-CONTROL 1 upgrade timeout=1s timeout=2s", err: "given twice"},
		{line: "HANDOFF-CONTROL 1 upgrade colour=red", err: "unknown argument"},
		{line: "HANDOFF-CONTROL 1 status\x00", err: "control characters"},
		{line: "HANDOFF-CONTROL 1 status \xff", err: "not UTF-8"},
		{line: "HANDOFF-CONTROL 1 upgrade" + strings.Repeat(" a=b", 17), err: "more than 16"},
		{line: "HANDOFF-CONTROL 1 status" + strings.Repeat(" ", maxControlLine), err: "longer than"},
	} {
		got, err := parseCommand([]byte(tc.line))
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.line, err)
		case tc.err == "" && got != tc.want:
			t.Errorf("%q: %+v, want %+v", tc.line, got, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, errControl)):
			t.Errorf("%q: %v, want an errControl saying %q", tc.line, err, tc.err)
		}
	}
}

// FuzzParseCommand: whatever a peer sends, the parser returns a command
// or an error, never panics, and accepts only what it can serve.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"HANDOFF-CONTROL 1 status",
		"HANDOFF-CONTROL 1 upgrade binary=/bin/true timeout=30s",
		"HANDOFF-CONTROL 1 upgrade timeout=1h2m3.5s",
		"HANDOFF-CONTROL 1 upgrade app=pdf binary=/opt/pdf/current/pdf",
		"HANDOFF-CONTROL 2 status",
		"HANDOFF-CONTROL 1 upgrade ==",
		"HANDOFF-CONTROL 1 upgrade binary=/a binary=/b",
		"\x00\xff\xfe",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		cmd, err := parseCommand(line)
		if err != nil {
			if !errors.Is(err, errControl) {
				t.Fatalf("error %v does not wrap errControl", err)
			}
			return
		}
		if cmd.Command != "status" && cmd.Command != "upgrade" {
			t.Fatalf("accepted command %q", cmd.Command)
		}
		if cmd.Timeout < 0 || cmd.Binary != "" && !strings.HasPrefix(cmd.Binary, "/") || checkAppName(cmd.App) != nil {
			t.Fatalf("accepted %+v", cmd)
		}
		// The client's line for what was accepted says the same
		// (handoffctl sends Request.Line).
		if again, err := parseCommand([]byte(cmd.Line())); err != nil || again != cmd {
			t.Fatalf("%+v: its Line %q parses as %+v, %v", cmd, cmd.Line(), again, err)
		}
	})
}

// slowReader hands out its bytes a few at a time, then fails with err.
type slowReader struct {
	b   []byte
	err error
}

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, r.err
	}
	n := copy(p[:min(len(p), 3)], r.b)
	r.b = r.b[n:]
	return n, nil
}

func TestReadCommand(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		err  error
		want string // "": an error saying wantErr
		werr string
	}{
		{name: "line", in: "HANDOFF-CONTROL 1 status\nrest", err: io.EOF, want: "HANDOFF-CONTROL 1 status"},
		{name: "longest", in: strings.Repeat("x", maxControlLine-1) + "\n", err: io.EOF, want: strings.Repeat("x", maxControlLine-1)},
		{name: "oversized", in: strings.Repeat("x", maxControlLine) + "\n", err: io.EOF, werr: "longer than"},
		{name: "half written then closed", in: "HANDOFF-CONTROL 1 sta", err: io.EOF, werr: "before the command's newline"},
		{name: "half written then silent", in: "HANDOFF-CONTROL 1 sta", err: os.ErrDeadlineExceeded, werr: "no complete command line"},
	} {
		got, err := readCommand(&slowReader{b: []byte(tc.in), err: tc.err})
		if tc.werr == "" {
			if err != nil || !bytes.Equal(got, []byte(tc.want)) {
				t.Errorf("%s: %q, %v", tc.name, got, err)
			}
		} else if err == nil || !strings.Contains(err.Error(), tc.werr) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.werr)
		}
	}
}

func TestControlDirSafe(t *testing.T) {
	const me = 1000
	for _, tc := range []struct {
		mode  os.FileMode
		owner int
		ok    bool
	}{
		{os.ModeDir | 0o700, me, true},
		{os.ModeDir | 0o755, me, true},
		{os.ModeDir | 0o755, 0, true},
		{os.ModeDir | 0o775, me, false},
		{os.ModeDir | 0o777, me, false},
		{os.ModeDir | os.ModeSticky | 0o777, 0, true}, // /tmp
		{os.ModeDir | os.ModeSticky | 0o777, me, true},
		{os.ModeDir | os.ModeSticky | 0o777, 1001, false},
		{0o600, me, false}, // a file
	} {
		err := controlDirSafe("d", tc.mode, tc.owner, me)
		if (err == nil) != tc.ok {
			t.Errorf("mode %s owner %d: %v, want ok=%v", tc.mode, tc.owner, err, tc.ok)
		}
	}
}

// TestResultPhases: a result says every phase UpgradeStats times, by its
// name, move only in Rolling mode and precopy only if one ran.
func TestResultPhases(t *testing.T) {
	type tc struct {
		mode    Mode
		precopy time.Duration
	}
	for _, c := range []tc{{AllAtOnce, 0}, {AllAtOnce, 512}, {Rolling, 0}, {ListenersOnly, 0}} {
		mode := c.mode
		st := UpgradeStats{Mode: mode, Connected: 1, Fds: 2, Park: 4, Parked: 8, State: 16, Ready: 32, Commit: 64,
			Release: 128, Move: 256, Precopy: c.precopy}
		got := resultMsg(UpgradeResult{Committed: true, Stats: st}, 1).PhasesNS
		for _, p := range Phases {
			ns, ok := got[p]
			if (p == PhaseMove && mode != Rolling) || (p == PhasePrecopy && c.precopy == 0) {
				if ok {
					t.Errorf("%s: phases_ns has %s", mode, p)
				}
				continue
			}
			if !ok || ns != int64(st.Took(p)) {
				t.Errorf("%s: phases_ns[%s] = %d (present %t), want %d", mode, p, ns, ok, st.Took(p))
			}
		}
		want := len(Phases)
		if mode != Rolling {
			want-- // no move
		}
		if c.precopy == 0 {
			want-- // no pre-copy
		}
		if len(got) != want {
			t.Errorf("%s: phases_ns %v: want the phases of Phases only", mode, got)
		}
	}
}
