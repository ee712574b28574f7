package demo

import "testing"

func TestParseMetrics(t *testing.T) {
	text := `# HELP pdf_requests_total Requests by command.
# TYPE pdf_requests_total counter
pdf_requests_total{command="CHARGE"} 120
pdf_requests_total{command="VERSION"} 30 1700000000000

handoff_upgrades_total{result="committed"} 2
handoff_upgrades_total{result="rolled_back"} 1
handoff_info{version="v2.1.0",note="a \"quoted\\ } value"} 1
handoff_generation 2
`
	samples, err := parseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) != 6 {
		t.Fatalf("%d samples, want 6: %+v", len(samples), samples)
	}
	if got := samples[4].labels["note"]; got != `a "quoted\ } value` {
		t.Errorf("escaped label = %q", got)
	}
	c, err := countersOf(samples)
	if err != nil {
		t.Fatal(err)
	}
	if c != (Counters{Requests: 150, Committed: 2, RolledBack: 1}) {
		t.Errorf("counters = %+v", c)
	}
}

func TestParseMetricsMalformed(t *testing.T) {
	for _, text := range []string{
		"pdf_requests_total\n",
		`pdf_requests_total{command="CHARGE" 1` + "\n",
		`pdf_requests_total{command="CHARGE} 1` + "\n",
		`pdf_requests_total{command=CHARGE} 1` + "\n",
		"pdf_requests_total one\n",
		"pdf_requests_total 1 2 3\n",
		"{} 1\n",
	} {
		if _, err := parseMetrics(text); err == nil {
			t.Errorf("parseMetrics(%q): no error", text)
		}
	}
	if _, err := countersOf(nil); err == nil {
		t.Error("countersOf(nil): no error for missing families")
	}
}

func TestCountersErr(t *testing.T) {
	good := Step{Via: viaCtl, Before: Counters{Requests: 10, Committed: 1}, After: Counters{Requests: 20, Committed: 2}}
	broken := Step{Via: viaCtl, WantFail: true, Before: Counters{Requests: 10}, After: Counters{Requests: 10, RolledBack: 1}}
	for name, tc := range map[string]struct {
		s    Step
		want bool
	}{
		"good":               {good, true},
		"broken":             {broken, true},
		"requests fell":      {func() Step { s := good; s.After.Requests = 5; return s }(), false},
		"no commit counted":  {func() Step { s := good; s.After.Committed = 1; return s }(), false},
		"committed on fail":  {func() Step { s := broken; s.After.Committed = 1; return s }(), false},
		"two rollbacks":      {func() Step { s := broken; s.After.RolledBack = 2; return s }(), false},
		"not via handoffctl": {func() Step { s := good; s.Via = viaSIGHUP; return s }(), false},
	} {
		if got := tc.s.CountersContinued(); got != tc.want {
			t.Errorf("%s: CountersContinued = %v, want %v (%s)", name, got, tc.want, tc.s.CountersLine())
		}
	}
}
