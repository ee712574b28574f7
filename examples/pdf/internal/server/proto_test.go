package server

import (
	"bufio"
	"errors"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/examples/pdf/internal/ledger"
)

func TestParse(t *testing.T) {
	tests := []struct {
		line   string
		stats  bool
		want   request
		reason string
	}{
		{"HELLO gw1", false, request{cmd: "HELLO", rid: "-", gw: "gw1"}, ""},
		{"TOPUP r1 alice 100", false, request{cmd: "TOPUP", rid: "r1", acct: "alice", amount: 100}, ""},
		{"CHARGE r2 bob 1", false, request{cmd: "CHARGE", rid: "r2", acct: "bob", amount: 1}, ""},
		{"BALANCE r3 carol", false, request{cmd: "BALANCE", rid: "r3", acct: "carol"}, ""},
		{"WHOAMI r4", false, request{cmd: "WHOAMI", rid: "r4"}, ""},
		{"VERSION r5", false, request{cmd: "VERSION", rid: "r5"}, ""},
		{"STATS r6 dave", true, request{cmd: "STATS", rid: "r6", acct: "dave"}, ""},
		{"TOPUP r7 a 1000000000000", false, request{cmd: "TOPUP", rid: "r7", acct: "a", amount: maxAmount}, ""},
		{"TOPUP r8 a 007", false, request{cmd: "TOPUP", rid: "r8", acct: "a", amount: 7}, ""},
		{"  TOPUP   r9\ta 5  ", false, request{cmd: "TOPUP", rid: "r9", acct: "a", amount: 5}, ""},

		{"", false, request{rid: "-"}, reasonEmpty},
		{"   ", false, request{rid: "-"}, reasonEmpty},
		{"STATS r6 dave", false, request{rid: "r6"}, reasonUnknown},
		{"STATS r6", false, request{rid: "r6"}, reasonUnknown},
		{"FOO r1", false, request{rid: "r1"}, reasonUnknown},
		{"FOO", false, request{rid: "-"}, reasonUnknown},
		{"topup r1 a 5", false, request{rid: "r1"}, reasonUnknown},
		{"HELLO", false, request{rid: "-"}, reasonBadArgs},
		{"HELLO a b", false, request{rid: "a"}, reasonBadArgs},
		{"TOPUP r1 a", false, request{rid: "r1"}, reasonBadArgs},
		{"TOPUP r1 a 5 6", false, request{rid: "r1"}, reasonBadArgs},
		{"CHARGE", false, request{rid: "-"}, reasonBadArgs},
		{"BALANCE r1", false, request{rid: "r1"}, reasonBadArgs},
		{"BALANCE r1 a b", false, request{rid: "r1"}, reasonBadArgs},
		{"WHOAMI", false, request{rid: "-"}, reasonBadArgs},
		{"WHOAMI r1 x", false, request{rid: "r1"}, reasonBadArgs},
		{"VERSION", false, request{rid: "-"}, reasonBadArgs},
		{"STATS r1", true, request{rid: "r1"}, reasonBadArgs},
		{"TOPUP r1 a 0", false, request{}, reasonBadAmount},
		{"TOPUP r1 a -5", false, request{}, reasonBadAmount},
		{"TOPUP r1 a +5", false, request{}, reasonBadAmount},
		{"TOPUP r1 a 1000000000001", false, request{}, reasonBadAmount},
		{"TOPUP r1 a 99999999999999999999999", false, request{}, reasonBadAmount},
		{"CHARGE r1 a 1.5", false, request{}, reasonBadAmount},
		{"CHARGE r1 a 1e3", false, request{}, reasonBadAmount},
		{"CHARGE r1 a x", false, request{}, reasonBadAmount},
	}
	for _, tt := range tests {
		got, reason := parse([]byte(tt.line), tt.stats)
		if reason != tt.reason {
			t.Errorf("parse(%q) reason = %q, want %q", tt.line, reason, tt.reason)
			continue
		}
		if reason == reasonBadAmount {
			if got.rid != "r1" {
				t.Errorf("parse(%q) rid = %q, want r1", tt.line, got.rid)
			}
			continue
		}
		if got != tt.want {
			t.Errorf("parse(%q) = %+v, want %+v", tt.line, got, tt.want)
		}
	}
}

// TestReplies: each reply's words, numbers in decimal, one space apart;
// before any HELLO, WHOAMI names the gateway "-".
func TestReplies(t *testing.T) {
	noHello := New("v1.0.0", ledger.NewV1(), quiet()).handle(&session{}, []byte("WHOAMI r4"))
	tests := []struct {
		got  []byte
		want string
	}{
		{reply("WELCOME", "gw1"), "WELCOME gw1\n"},
		{reply("OK", "r1", int64(150)), "OK r1 150\n"},
		{reply("DENY", "r2", int64(3)), "DENY r2 3\n"},
		{reply("BAL", "r3", int64(0)), "BAL r3 0\n"},
		{noHello, "YOU r4 - 0\n"},
		{reply("YOU", "r4", "gw1", uint64(12)), "YOU r4 gw1 12\n"},
		{reply("VERSION", "r5", "v1.0.0", 42), "VERSION r5 v1.0.0 42\n"},
		{reply("STATS", "r6", int64(10), uint64(2)), "STATS r6 10 2\n"},
		{reply("ERR", "-", reasonEmpty), "ERR - empty-line\n"},
		{reply("ERR", "-", reasonTooLong), "ERR - too-long\n"},
	}
	for _, tt := range tests {
		if string(tt.got) != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

// scan runs splitLine over input as bufio.Scanner would.
func scan(input string) ([]string, error) {
	sc := bufio.NewScanner(strings.NewReader(input))
	sc.Buffer(make([]byte, 16), 1<<20)
	sc.Split(splitLine)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, sc.Err()
}

func TestSplitLine(t *testing.T) {
	long := strings.Repeat("x", maxLine)
	tests := []struct {
		name  string
		input string
		want  []string
		err   error
	}{
		{"lines", "A\nB\r\n\nC", []string{"A", "B", "", "C"}, nil},
		{"final CR", "A\r", []string{"A"}, nil},
		{"max line", long + "\n", []string{long}, nil},
		{"max line CRLF", long + "\r\n", []string{long}, nil},
		{"max line at EOF", long, []string{long}, nil},
		{"too long", long + "x\n", nil, errTooLong},
		{"too long CR inside", long + "\rx\n", nil, errTooLong},
		{"too long no newline", long + "xx", nil, errTooLong},
		{"after good lines", "A\n" + long + "x\nB\n", []string{"A"}, errTooLong},
	}
	for _, tt := range tests {
		got, err := scan(tt.input)
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.err)
		}
		if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
			t.Errorf("%s: lines = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// A long line is refused as soon as it is too long, without waiting for the
// newline that may never come.
func TestSplitLineRefusesEarly(t *testing.T) {
	data := []byte(strings.Repeat("x", maxLine+2))
	if _, _, err := splitLine(data, false); !errors.Is(err, errTooLong) {
		t.Fatalf("err = %v, want errTooLong", err)
	}
	adv, tok, err := splitLine(data[:maxLine+1], false)
	if adv != 0 || tok != nil || !errors.Is(err, errTooLong) {
		t.Fatalf("maxLine+1 bytes: %d %q %v, want errTooLong", adv, tok, err)
	}
	data[maxLine] = '\r'
	if adv, tok, err := splitLine(data[:maxLine+1], false); adv != 0 || tok != nil || err != nil {
		t.Fatalf("maxLine bytes and CR: %d %q %v, want more data", adv, tok, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("TOPUP r1 a 5"), true)
	f.Add([]byte("HELLO x"), false)
	f.Fuzz(func(t *testing.T, line []byte, stats bool) {
		req, reason := parse(line, stats)
		if req.rid == "" {
			t.Fatalf("empty rid for %q", line)
		}
		if reason == "" && (req.cmd == "TOPUP" || req.cmd == "CHARGE") &&
			(req.amount < minAmount || req.amount > maxAmount) {
			t.Fatalf("amount %d accepted from %q", req.amount, line)
		}
	})
}
