package demo

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// scrapeTimeout bounds one GET /metrics.
const scrapeTimeout = 5 * time.Second

// Counters is what the demo reads from /metrics around a handoffctl
// upgrade.
type Counters struct {
	// Requests is the sum of pdf_requests_total over every command.
	Requests float64
	// Committed and RolledBack are handoff_upgrades_total by result.
	Committed, RolledBack float64
}

// scrape reads addr's /metrics. A server that answers is the one serving:
// the metrics listener is shared during an upgrade, so scrape only once
// the old process is gone or the upgrade has failed.
func scrape(ctx context.Context, addr string) (Counters, error) {
	ctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return Counters{}, fmt.Errorf("demo: scrape: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Counters{}, fmt.Errorf("demo: scrape: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Counters{}, fmt.Errorf("demo: scrape: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return Counters{}, fmt.Errorf("demo: scrape: %s", resp.Status)
	}
	samples, err := parseMetrics(string(b))
	if err != nil {
		return Counters{}, fmt.Errorf("demo: scrape: %w", err)
	}
	return countersOf(samples)
}

// countersOf picks the demo's counters out of samples; a family missing
// altogether is an error, since 0 would hide a server that stopped
// exporting it.
func countersOf(samples []sample) (Counters, error) {
	var c Counters
	var seenReq, seenUp bool
	for _, s := range samples {
		switch s.name {
		case "pdf_requests_total":
			c.Requests += s.value
			seenReq = true
		case "handoff_upgrades_total":
			seenUp = true
			switch s.labels["result"] {
			case "committed":
				c.Committed += s.value
			case "rolled_back":
				c.RolledBack += s.value
			}
		}
	}
	if !seenReq || !seenUp {
		return c, fmt.Errorf("demo: scrape: pdf_requests_total seen %v, handoff_upgrades_total seen %v", seenReq, seenUp)
	}
	return c, nil
}

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// parseMetrics parses the Prometheus text exposition format: comments
// and blank lines are skipped, every other line is
// name[{label="value",...}] value [timestamp]. It returns the first
// malformed line as an error and never panics.
func parseMetrics(text string) ([]sample, error) {
	var out []sample
	n := 0
	for line := range strings.Lines(text) {
		n++
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return out, fmt.Errorf("metrics line %d: %w", n, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func parseSample(line string) (sample, error) {
	s := sample{labels: map[string]string{}}
	i := strings.IndexAny(line, "{ \t")
	if i <= 0 {
		return s, fmt.Errorf("no value in %q", line)
	}
	s.name, line = line[:i], line[i:]
	if line[0] == '{' {
		var err error
		if line, err = parseLabels(line[1:], s.labels); err != nil {
			return s, err
		}
	}
	fields := strings.Fields(line)
	if len(fields) < 1 || len(fields) > 2 {
		return s, fmt.Errorf("%s: want a value and an optional timestamp, got %q", s.name, line)
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, fmt.Errorf("%s: %w", s.name, err)
	}
	s.value = v
	return s, nil
}

// parseLabels reads label="value" pairs up to the closing brace into
// labels and returns what follows it.
func parseLabels(rest string, labels map[string]string) (string, error) {
	for {
		rest = strings.TrimLeft(rest, " \t,")
		if rest == "" {
			return "", fmt.Errorf("labels not closed")
		}
		if rest[0] == '}' {
			return rest[1:], nil
		}
		name, after, ok := strings.Cut(rest, "=")
		if !ok || len(after) == 0 || after[0] != '"' {
			return "", fmt.Errorf("label %q: want name=\"value\"", rest)
		}
		var v strings.Builder
		i := 1
		for ; i < len(after) && after[i] != '"'; i++ {
			c := after[i]
			if c == '\\' && i+1 < len(after) {
				i++
				switch after[i] {
				case 'n':
					c = '\n'
				default:
					c = after[i] // \\ and \"
				}
			}
			v.WriteByte(c)
		}
		if i >= len(after) {
			return "", fmt.Errorf("label %s: value not closed", name)
		}
		labels[strings.TrimSpace(name)] = v.String()
		rest = after[i+1:]
	}
}
