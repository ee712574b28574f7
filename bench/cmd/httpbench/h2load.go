package main

import (
	"fmt"
	"regexp"
	"strconv"
)

// h2loadResult is what one h2load run printed.
type h2loadResult struct {
	total, succeeded, failed, errored, timeout int64
	reqPerSec                                  float64
	protocol                                   string // "TLSv1.3 TLS_AES_128_GCM_SHA256 h2"
	raw                                        string
}

var (
	reH2Finished = regexp.MustCompile(`(?m)^finished in \S+, ([0-9.]+) req/s`)
	reH2Requests = regexp.MustCompile(`(?m)^requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	reH2TLS      = regexp.MustCompile(`(?m)^TLS Protocol: (\S+)\nCipher: (\S+)\n(?:.*\n)*?Application protocol: (\S+)`)
)

// parseH2load reads h2load's summary: its request counts and rate, and
// the TLS version, cipher and protocol its first connection negotiated.
func parseH2load(out string) (h2loadResult, error) {
	r := h2loadResult{raw: out}
	m := reH2Requests.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("h2load: no request counts in its output")
	}
	for i, p := range []*int64{&r.total, &r.succeeded, &r.failed, &r.errored, &r.timeout} {
		*p, _ = strconv.ParseInt(m[i+1], 10, 64)
	}
	if m := reH2Finished.FindStringSubmatch(out); m != nil {
		r.reqPerSec, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := reH2TLS.FindStringSubmatch(out); m != nil {
		r.protocol = m[1] + " " + m[2] + " " + m[3]
	}
	return r, nil
}
