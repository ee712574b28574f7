package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what one wrk run printed.
type wrkResult struct {
	requests                      int64
	reqPerSec                     float64
	connect, read, write, timeout int64
	non2xx                        int64 // wrk's "Non-2xx or 3xx responses": status 400 and up
	p50, p75, p90, p99, max       time.Duration
	raw                           string
}

var (
	reRequests = regexp.MustCompile(`(?m)^\s*(\d+) requests in`)
	reReqSec   = regexp.MustCompile(`(?m)^Requests/sec:\s*([0-9.]+)`)
	reSocket   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	reNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	rePct      = regexp.MustCompile(`(?m)^\s*(50|75|90|99)%\s+(\S+)`)
	reMax      = regexp.MustCompile(`(?m)^\s*Latency\s+\S+\s+\S+\s+(\S+)`)
)

// parseWrk reads wrk --latency's output. Absent socket error and non-2xx
// lines mean zero, as wrk prints them only when they are not.
func parseWrk(out string) (wrkResult, error) {
	r := wrkResult{raw: out}
	m := reRequests.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk: no request count in its output")
	}
	r.requests, _ = strconv.ParseInt(m[1], 10, 64)
	if m := reReqSec.FindStringSubmatch(out); m != nil {
		r.reqPerSec, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := reSocket.FindStringSubmatch(out); m != nil {
		r.connect, _ = strconv.ParseInt(m[1], 10, 64)
		r.read, _ = strconv.ParseInt(m[2], 10, 64)
		r.write, _ = strconv.ParseInt(m[3], 10, 64)
		r.timeout, _ = strconv.ParseInt(m[4], 10, 64)
	}
	if m := reNon2xx.FindStringSubmatch(out); m != nil {
		r.non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	for _, m := range rePct.FindAllStringSubmatch(out, -1) {
		d, err := parseWrkDuration(m[2])
		if err != nil {
			return r, err
		}
		switch m[1] {
		case "50":
			r.p50 = d
		case "75":
			r.p75 = d
		case "90":
			r.p90 = d
		case "99":
			r.p99 = d
		}
	}
	if m := reMax.FindStringSubmatch(out); m != nil {
		r.max, _ = parseWrkDuration(m[1])
	}
	return r, nil
}

// parseWrkDuration reads wrk's units: us, ms, s, m, h.
func parseWrkDuration(s string) (time.Duration, error) {
	unit := strings.TrimLeft(s, "0123456789.")
	num := strings.TrimSuffix(s, unit)
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("wrk: duration %q: %w", s, err)
	}
	scale := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second,
		"m": time.Minute, "h": time.Hour}[unit]
	if scale == 0 {
		return 0, fmt.Errorf("wrk: duration %q: unknown unit", s)
	}
	return time.Duration(v * float64(scale)), nil
}
