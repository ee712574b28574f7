package result

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Chart size: wide, because the x axis carries a whole run and its
// upgrades, each a spike a few buckets wide.
const (
	chartWidth  = 10 * vg.Inch
	chartHeight = 5 * vg.Inch
)

// minLatencyMS is the floor latencies are clamped to on the chart: a log
// axis cannot show an empty bucket's zero, and nothing the benchmark
// measures is faster than 10µs.
const minLatencyMS = 0.01

// errNoTimeline is returned by Chart for a scale whose runs have no
// timeline to draw.
var errNoTimeline = errors.New("no timeline")

// Chart draws the worst reply latency per time bucket of every mode run
// at conns connections, on a log scale, with each upgrade (SIGHUP) of a
// mode marked by a thin dashed vertical line in the mode's colour. The
// file's extension picks the format: .png or .svg (or any other that
// plot.Save knows). It fails if no run at conns has a timeline.
func (s *Suite) Chart(path string, conns int) error {
	p, err := s.latencyPlot(conns)
	if err != nil {
		return fmt.Errorf("result: chart of %d conns: %w", conns, err)
	}
	if err := p.Save(chartWidth, chartHeight, path); err != nil {
		return fmt.Errorf("result: save chart %s: %w", path, err)
	}
	return nil
}

// Charts writes one SVG chart per scale that has a timeline, named
// prefix-<conns>.svg in dir, smallest scale first. It returns the paths
// it wrote, including those written before an error.
func (s *Suite) Charts(dir, prefix string) ([]string, error) {
	var paths []string
	for _, conns := range s.chartScales() {
		path := filepath.Join(dir, prefix+"-"+strconv.Itoa(conns)+".svg")
		if err := s.Chart(path, conns); err != nil {
			return paths, err
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// chartScales lists, in order, the scales at which some run has a timeline.
func (s *Suite) chartScales() []int {
	var scales []int
	for _, r := range s.Runs {
		if len(r.Timeline) > 0 && !slices.Contains(scales, r.Conns) {
			scales = append(scales, r.Conns)
		}
	}
	slices.Sort(scales)
	return scales
}

func (s *Suite) latencyPlot(conns int) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Request latency over time, %d connections, %s req/s",
		conns, strconv.FormatFloat(s.Rate, 'f', -1, 64))
	p.X.Label.Text = "time since start of run (s); dashed verticals: upgrades (SIGHUP)"
	// Kept short: plot centres the label's box at the linear midpoint of
	// the range, near the top of a log axis, and pads the plot down by
	// however far a long label would overhang it.
	p.Y.Label.Text = "worst latency (ms)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true

	drawn := 0
	for i, r := range s.runsAt(conns) {
		if len(r.Timeline) == 0 {
			continue
		}
		if err := addMode(p, r, i); err != nil {
			return nil, err
		}
		drawn++
	}
	if drawn == 0 {
		return nil, errNoTimeline
	}
	snapToDecades(&p.Y)
	return p, nil
}

// runsAt returns the runs at conns in mode order.
func (s *Suite) runsAt(conns int) []*Run {
	return slices.DeleteFunc(sortedRuns(s.Runs), func(r *Run) bool { return r.Conns != conns })
}

// addMode adds r's latency line and upgrade marks, styled as the i-th
// mode of the chart. The marks go first so the line is drawn over them.
func addMode(p *plot.Plot, r *Run, i int) error {
	line, err := plotter.NewLine(timelineXYs(r.Timeline))
	if err != nil {
		return fmt.Errorf("%s: %w", r.Mode, err)
	}
	line.LineStyle = modeStyle(r.Mode, i)
	marks := newUpgradeMarks(r.Upgrades, line.Color)
	p.Add(marks, line)
	p.Legend.Add(r.Mode, line, marks)
	return nil
}

// modeStyle gives each known mode the same colour and dashes on every
// chart, so charts of different scales read alike; a mode this package
// does not know takes its place i on the chart instead.
func modeStyle(mode string, i int) draw.LineStyle {
	k := modeRank(mode)
	if k == len(modeOrder) {
		k += i
	}
	return draw.LineStyle{
		Color:  plotutil.DarkColors[k%len(plotutil.DarkColors)],
		Width:  vg.Points(1.5),
		Dashes: plotutil.Dashes(k),
	}
}

func timelineXYs(points []Point) plotter.XYs {
	xys := make(plotter.XYs, len(points))
	for i, pt := range points {
		xys[i].X = pt.At.Seconds()
		xys[i].Y = max(float64(pt.Worst)/float64(1e6), minLatencyMS)
	}
	return xys
}

// snapToDecades widens a log axis to whole powers of ten, so that
// LogTicks labels both ends.
func snapToDecades(a *plot.Axis) {
	a.Min = math.Pow(10, math.Floor(math.Log10(a.Min)))
	a.Max = math.Pow(10, math.Ceil(math.Log10(a.Max)))
	if a.Max <= a.Min {
		a.Max = a.Min * 10
	}
}

// upgradeMarks draws a vertical line across the whole plot at each
// upgrade. It has no data range: an upgrade outside the timeline is
// not drawn rather than stretching the axis.
type upgradeMarks struct {
	at    []float64 // seconds since the start of the run
	style draw.LineStyle
}

var (
	_ plot.Plotter     = upgradeMarks{}
	_ plot.Thumbnailer = upgradeMarks{}
)

// newUpgradeMarks draws the marks thin, dashed and half transparent in
// the mode's colour: they say when, and must not hide the latency line.
func newUpgradeMarks(us []Upgrade, c color.Color) upgradeMarks {
	m := upgradeMarks{style: draw.LineStyle{
		Color:  fade(c),
		Width:  vg.Points(0.75),
		Dashes: []vg.Length{vg.Points(3), vg.Points(3)},
	}}
	for _, u := range us {
		m.at = append(m.at, u.At.Seconds())
	}
	return m
}

func fade(c color.Color) color.Color {
	n := color.NRGBAModel.Convert(c).(color.NRGBA)
	n.A = 0x90
	return n
}

func (m upgradeMarks) Plot(c draw.Canvas, p *plot.Plot) {
	trX, _ := p.Transforms(&c)
	for _, at := range m.at {
		if x := trX(at); c.ContainsX(x) {
			c.StrokeLine2(m.style, x, c.Min.Y, x, c.Max.Y)
		}
	}
}

// Thumbnail draws a short vertical line, over the mode's line in the
// legend entry.
func (m upgradeMarks) Thumbnail(c *draw.Canvas) {
	x := (c.Min.X + c.Max.X) / 2
	c.StrokeLine2(m.style, x, c.Min.Y, x, c.Max.Y)
}
