package proto

import (
	"bufio"
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		line   string
		stats  bool
		want   Request
		reason string
	}{
		{"HELLO gw1", false, Request{Kind: Hello, RID: "-", GW: "gw1"}, ""},
		{"TOPUP r1 alice 100", false, Request{Kind: TopUp, RID: "r1", Acct: "alice", Amount: 100}, ""},
		{"CHARGE r2 bob 1", false, Request{Kind: Charge, RID: "r2", Acct: "bob", Amount: 1}, ""},
		{"BALANCE r3 carol", false, Request{Kind: Balance, RID: "r3", Acct: "carol"}, ""},
		{"WHOAMI r4", false, Request{Kind: WhoAmI, RID: "r4"}, ""},
		{"VERSION r5", false, Request{Kind: Version, RID: "r5"}, ""},
		{"STATS r6 dave", true, Request{Kind: Stats, RID: "r6", Acct: "dave"}, ""},
		{"TOPUP r7 a 1000000000000", false, Request{Kind: TopUp, RID: "r7", Acct: "a", Amount: MaxAmount}, ""},
		{"TOPUP r8 a 007", false, Request{Kind: TopUp, RID: "r8", Acct: "a", Amount: 7}, ""},
		{"  TOPUP   r9\ta 5  ", false, Request{Kind: TopUp, RID: "r9", Acct: "a", Amount: 5}, ""},

		{"", false, Request{RID: "-"}, ReasonEmpty},
		{"   ", false, Request{RID: "-"}, ReasonEmpty},
		{"STATS r6 dave", false, Request{RID: "r6"}, ReasonUnknown},
		{"STATS r6", false, Request{RID: "r6"}, ReasonUnknown},
		{"FOO r1", false, Request{RID: "r1"}, ReasonUnknown},
		{"FOO", false, Request{RID: "-"}, ReasonUnknown},
		{"topup r1 a 5", false, Request{RID: "r1"}, ReasonUnknown},
		{"HELLO", false, Request{RID: "-"}, ReasonBadArgs},
		{"HELLO a b", false, Request{RID: "a"}, ReasonBadArgs},
		{"TOPUP r1 a", false, Request{RID: "r1"}, ReasonBadArgs},
		{"TOPUP r1 a 5 6", false, Request{RID: "r1"}, ReasonBadArgs},
		{"CHARGE", false, Request{RID: "-"}, ReasonBadArgs},
		{"BALANCE r1", false, Request{RID: "r1"}, ReasonBadArgs},
		{"BALANCE r1 a b", false, Request{RID: "r1"}, ReasonBadArgs},
		{"WHOAMI", false, Request{RID: "-"}, ReasonBadArgs},
		{"WHOAMI r1 x", false, Request{RID: "r1"}, ReasonBadArgs},
		{"VERSION", false, Request{RID: "-"}, ReasonBadArgs},
		{"STATS r1", true, Request{RID: "r1"}, ReasonBadArgs},
		{"TOPUP r1 a 0", false, Request{}, ReasonBadAmount},
		{"TOPUP r1 a -5", false, Request{}, ReasonBadAmount},
		{"TOPUP r1 a +5", false, Request{}, ReasonBadAmount},
		{"TOPUP r1 a 1000000000001", false, Request{}, ReasonBadAmount},
		{"TOPUP r1 a 99999999999999999999999", false, Request{}, ReasonBadAmount},
		{"CHARGE r1 a 1.5", false, Request{}, ReasonBadAmount},
		{"CHARGE r1 a 1e3", false, Request{}, ReasonBadAmount},
		{"CHARGE r1 a x", false, Request{}, ReasonBadAmount},
	}
	for _, tt := range tests {
		got, reason := Parse([]byte(tt.line), tt.stats)
		if reason != tt.reason {
			t.Errorf("Parse(%q) reason = %q, want %q", tt.line, reason, tt.reason)
			continue
		}
		if reason == ReasonBadAmount {
			if got.RID != "r1" {
				t.Errorf("Parse(%q) rid = %q, want r1", tt.line, got.RID)
			}
			continue
		}
		if got != tt.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tt.line, got, tt.want)
		}
	}
}

func TestReplies(t *testing.T) {
	tests := []struct {
		got  []byte
		want string
	}{
		{Welcome("gw1"), "WELCOME gw1\n"},
		{OK("r1", 150), "OK r1 150\n"},
		{Deny("r2", 3), "DENY r2 3\n"},
		{Bal("r3", 0), "BAL r3 0\n"},
		{You("r4", "", 0), "YOU r4 - 0\n"},
		{You("r4", "gw1", 12), "YOU r4 gw1 12\n"},
		{VersionReply("r5", "v1.0.0", 42), "VERSION r5 v1.0.0 42\n"},
		{StatsReply("r6", 10, 2), "STATS r6 10 2\n"},
		{Err("-", ReasonEmpty), "ERR - empty-line\n"},
		{TooLong(), "ERR - too-long\n"},
	}
	for _, tt := range tests {
		if string(tt.got) != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

// scan runs SplitLine over input as bufio.Scanner would.
func scan(input string) ([]string, error) {
	sc := bufio.NewScanner(strings.NewReader(input))
	sc.Buffer(make([]byte, 16), 1<<20)
	sc.Split(SplitLine)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, sc.Err()
}

func TestSplitLine(t *testing.T) {
	long := strings.Repeat("x", MaxLine)
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
		{"too long", long + "x\n", nil, ErrTooLong},
		{"too long CR inside", long + "\rx\n", nil, ErrTooLong},
		{"too long no newline", long + "xx", nil, ErrTooLong},
		{"after good lines", "A\n" + long + "x\nB\n", []string{"A"}, ErrTooLong},
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
	data := []byte(strings.Repeat("x", MaxLine+2))
	if _, _, err := SplitLine(data, false); !errors.Is(err, ErrTooLong) {
		t.Fatalf("err = %v, want ErrTooLong", err)
	}
	adv, tok, err := SplitLine(data[:MaxLine+1], false)
	if adv != 0 || tok != nil || !errors.Is(err, ErrTooLong) {
		t.Fatalf("MaxLine+1 bytes: %d %q %v, want ErrTooLong", adv, tok, err)
	}
	data[MaxLine] = '\r'
	if adv, tok, err := SplitLine(data[:MaxLine+1], false); adv != 0 || tok != nil || err != nil {
		t.Fatalf("MaxLine bytes and CR: %d %q %v, want more data", adv, tok, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("TOPUP r1 a 5"), true)
	f.Add([]byte("HELLO x"), false)
	f.Fuzz(func(t *testing.T, line []byte, stats bool) {
		req, reason := Parse(line, stats)
		if req.RID == "" {
			t.Fatalf("empty rid for %q", line)
		}
		if reason == "" && (req.Kind == TopUp || req.Kind == Charge) &&
			(req.Amount < MinAmount || req.Amount > MaxAmount) {
			t.Fatalf("amount %d accepted from %q", req.Amount, line)
		}
	})
}
