package metrics

import (
	"context"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/handoff-dev/handoff/handoff"
)

// firstNew is set by the first round of TestUpgrader in this process.
var firstNew atomic.Bool

// TestUpgrader runs the one Upgrader this test process may create through
// a first process's life: before Ready, serving, a rolled-back upgrade.
// The upgrades that commit are tested with real processes in the pdf
// example (examples/pdf/internal/app/metrics_test.go).
//
// handoff.New succeeds once per process, so a -count above 1 runs it once.
func TestUpgrader(t *testing.T) {
	if !firstNew.CompareAndSwap(false, true) {
		t.Skip("handoff.New succeeds once per process and ran in an earlier round of -count")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "exits")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	up, err := handoff.New(handoff.Options{Version: "v9.8.7", Binary: bin, NoSignal: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Stop()
	reg := prometheus.NewRegistry()
	col := NewCollector(up)
	reg.MustRegister(col)
	requests := prometheus.NewCounter(prometheus.CounterOpts{Name: "app_requests_total", Help: "Requests."})
	reg.MustRegister(requests)
	Continue(up, "requests", requests)
	srv := httptest.NewServer(Handler(up, reg))
	defer srv.Close()

	expectGet(t, srv.URL+"/alive", http.StatusOK, "alive")
	expectGet(t, srv.URL+"/ready", http.StatusServiceUnavailable, "starting")
	if err := up.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	expectGet(t, srv.URL+"/ready", http.StatusOK, "ready")
	requests.Add(3)

	m := scrape(t, srv.URL)
	for series, want := range map[string]float64{
		`handoff_upgrades_total{result="committed"}`:         0,
		`handoff_upgrades_total{result="rolled_back"}`:       0,
		`handoff_rollbacks_total{cause="exited"}`:            0,
		`handoff_connections_handed_over_total`:              0,
		`handoff_generation`:                                 0,
		`handoff_info{version="v9.8.7"}`:                     1,
		`handoff_serving`:                                    1,
		`handoff_upgrade_phase_seconds_count{phase="pause"}`: 0,
		`app_requests_total`:                                 3,
	} {
		expectValue(t, m, series, want)
	}
	if _, ok := m["handoff_state_bytes"]; ok {
		t.Errorf("handoff_state_bytes before any upgrade: %v", m["handoff_state_bytes"])
	}

	res, err := up.UpgradeWith(context.Background(), handoff.UpgradeRequest{})
	if err == nil || res.Committed {
		t.Fatalf("upgrade to a binary that exits: %+v, %v", res, err)
	}
	m = scrape(t, srv.URL)
	expectValue(t, m, `handoff_upgrades_total{result="rolled_back"}`, 1)
	expectValue(t, m, `handoff_rollbacks_total{cause="`+res.Cause+`"}`, 1)
	expectValue(t, m, `handoff_upgrades_total{result="committed"}`, 0)
	expectValue(t, m, `handoff_upgrade_phase_seconds_count{phase="connected"}`, 0)
	expectValue(t, m, `handoff_serving`, 1)
	expectGet(t, srv.URL+"/ready", http.StatusOK, "ready")

	if err := up.Stop(); err != nil {
		t.Fatal(err)
	}
	expectGet(t, srv.URL+"/ready", http.StatusServiceUnavailable, "stopped")
	expectGet(t, srv.URL+"/alive", http.StatusOK, "alive")
	expectValue(t, scrape(t, srv.URL), "handoff_serving", 0)
}

// TestTakenOver: the upgrade that started a process is added to its
// histogram once, whatever triggered it, and the old process's own last
// committed upgrade once too.
func TestTakenOver(t *testing.T) {
	c := &Collector{phases: map[string]*histogram{}}
	for _, p := range Phases {
		c.phases[p] = newHistogram()
	}
	st := handoff.Status{TakenOver: &handoff.UpgradeResult{Committed: true,
		Stats: handoff.UpgradeStats{Connected: time.Millisecond, Park: 2 * time.Millisecond}}}
	c.observe(st)
	c.observe(st)
	if got := c.phases["park"].count; got != 1 {
		t.Fatalf("park observed %v times, want 1", got)
	}
	if got := c.phases["park"].sum; got != 0.002 {
		t.Fatalf("park sum %v, want 0.002", got)
	}
	st.Last = &handoff.UpgradeResult{Committed: true, Began: time.Unix(5, 0)}
	c.observe(st)
	c.observe(st)
	if got := c.phases["connected"].count; got != 2 {
		t.Fatalf("connected observed %v times, want 2 (taken over, then handed over)", got)
	}
}

// TestHistogram: the carried numbers are the exposition's, and adding a
// carried histogram to a fresh one gives the same buckets.
func TestHistogram(t *testing.T) {
	h := newHistogram()
	for _, v := range []float64{0.00005, 0.003, 0.003, 2, 100} {
		h.observe(v)
	}
	b := h.buckets()
	for le, want := range map[float64]uint64{0.0001: 1, 0.0025: 1, 0.005: 3, 2.5: 4, 25: 4} {
		if b[le] != want {
			t.Errorf("bucket le=%v: %d, want %d", le, b[le], want)
		}
	}
	if h.count != 5 || math.Abs(h.sum-102.00605) > 1e-9 {
		t.Errorf("count %v sum %v", h.count, h.sum)
	}
	vals := h.values("park")
	if len(vals) != len(Buckets)+2 {
		t.Fatalf("%d carried values, want %d", len(vals), len(Buckets)+2)
	}
	next := newHistogram()
	for name, v := range next.values("park") {
		*v += *vals[name]
	}
	if next.count != h.count || next.sum != h.sum || !equal(next.counts, h.counts) {
		t.Errorf("restored %+v, want %+v", next, h)
	}
	if _, ok := vals["metrics.phase.park.bucket.0"]; !ok {
		t.Errorf("carry names: %v", vals)
	}
}

// TestStatusMetrics: the chain's totals, by result and cause, and a cause
// this package does not know yet.
func TestStatusMetrics(t *testing.T) {
	st := handoff.Status{Version: "v2", Generation: 4, Last: &handoff.UpgradeResult{StateBytes: 77},
		Totals: handoff.Totals{Committed: 4, ConnsHandedOver: 9,
			RolledBack: map[string]uint64{handoff.CauseTimeout: 2, handoff.CauseExited: 1, "novel": 5}}}
	got := map[string]float64{}
	for _, m := range statusMetrics(st, 1) {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		got[seriesName(m.Desc().String(), &pb)] = pb.GetCounter().GetValue() + pb.GetGauge().GetValue()
	}
	for series, want := range map[string]float64{
		`handoff_upgrades_total{result="committed"}`:   4,
		`handoff_upgrades_total{result="rolled_back"}`: 8,
		`handoff_rollbacks_total{cause="timeout"}`:     2,
		`handoff_rollbacks_total{cause="exited"}`:      1,
		`handoff_rollbacks_total{cause="novel"}`:       5,
		`handoff_rollbacks_total{cause="protocol"}`:    0,
		`handoff_connections_handed_over_total`:        9,
		`handoff_generation`:                           4,
		`handoff_state_bytes`:                          77,
		`handoff_info{version="v2"}`:                   1,
		`handoff_serving`:                              1,
	} {
		expectValue(t, got, series, want)
	}
}

func seriesName(desc string, m *dto.Metric) string {
	// Desc{fqName: "name", ...}
	name := desc[strings.Index(desc, `"`)+1:]
	name = name[:strings.Index(name, `"`)]
	return name + labels(m.GetLabel())
}

func labels(ls []*dto.LabelPair) string {
	if len(ls) == 0 {
		return ""
	}
	var parts []string
	for _, l := range ls {
		parts = append(parts, l.GetName()+"="+strconv.Quote(l.GetValue()))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func equal(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func expectGet(t *testing.T, url string, code int, body string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != code || strings.TrimSpace(string(b)) != body {
		t.Errorf("GET %s: %d %q, want %d %q", url, resp.StatusCode, b, code, body)
	}
	if resp.Header.Get(PIDHeader) != strconv.Itoa(os.Getpid()) {
		t.Errorf("GET %s: %s %q, want this pid", url, PIDHeader, resp.Header.Get(PIDHeader))
	}
}

// scrape reads /metrics into series → value; a histogram gives its
// _count and _sum.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				out[name+"_count"+labels(m.GetLabel())] = float64(m.GetHistogram().GetSampleCount())
				out[name+"_sum"+labels(m.GetLabel())] = m.GetHistogram().GetSampleSum()
			default:
				out[name+labels(m.GetLabel())] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return out
}

func expectValue(t *testing.T, m map[string]float64, series string, want float64) {
	t.Helper()
	got, ok := m[series]
	if !ok {
		t.Errorf("%s: missing", series)
		return
	}
	if got != want {
		t.Errorf("%s = %v, want %v", series, got, want)
	}
}
