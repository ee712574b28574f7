package main

import (
	"testing"
	"time"
)

const wrkOutput = `Running 22s test @ http://127.0.0.1:7801/
  2 threads and 200 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.21ms    3.10ms  210.33ms   90.12%
    Req/Sec    19.50k     1.20k   22.00k    75.00%
  Latency Distribution
     50%    4.80ms
     75%    6.01ms
     90%    7.50ms
     99%   12.34ms
  858000 requests in 22.00s, 120.00MB read
  Socket errors: connect 0, read 17, write 2, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  39000.12
Transfer/sec:      5.45MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkOutput)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{requests: 858000, reqPerSec: 39000.12, read: 17, write: 2, timeout: 1, non2xx: 5,
		p50: 4800 * time.Microsecond, p75: 6010 * time.Microsecond, p90: 7500 * time.Microsecond,
		p99: 12340 * time.Microsecond, max: 210330 * time.Microsecond, raw: wrkOutput}
	if r != want {
		t.Errorf("parseWrk:\n got %+v\nwant %+v", r, want)
	}
	// No error lines: zero errors.
	r, err = parseWrk("  10 requests in 1.00s, 1KB read\nRequests/sec: 10.00\n")
	if err != nil || r.read != 0 || r.non2xx != 0 || r.requests != 10 {
		t.Errorf("parseWrk without error lines: %+v, %v", r, err)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:7801 Connection refused\n"); err == nil {
		t.Error("parseWrk of a failed run: no error")
	}
}
