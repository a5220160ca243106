package bench

import (
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"strconv"
	"strings"
	"unicode"
)

// Plots are drawn with image/png and a built-in bitmap font: two small
// charts do not justify a plotting library in the module.

var (
	white   = color.RGBA{255, 255, 255, 255}
	black   = color.RGBA{0, 0, 0, 255}
	grid    = color.RGBA{225, 225, 225, 255}
	palette = []color.RGBA{
		{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {214, 39, 40, 255},
		{148, 103, 189, 255}, {140, 86, 75, 255}, {23, 190, 207, 255}, {127, 127, 127, 255},
	}
)

// Series is one line of a chart.
type Series struct {
	Name    string
	Points  [][2]float64 // x, y
	Markers bool
	color   color.RGBA
}

// Axis is one axis of a chart.
type Axis struct {
	Label    string
	Log      bool
	Min, Max float64
	Ticks    []float64
	Format   func(float64) string
}

// Chart is a line chart.
type Chart struct {
	Title  string
	X, Y   Axis
	Series []Series
	// LegendRight puts the legend at the bottom right instead of the top
	// left; LegendOutside puts it right of the plot area.
	LegendRight   bool
	LegendOutside bool
}

const (
	fontScale = 2
	glyphW    = 5 * fontScale
	glyphH    = 7 * fontScale
	advance   = glyphW + fontScale
)

type canvas struct{ *image.RGBA }

func newCanvas(w, h int) canvas {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = 255, 255, 255, 255
	}
	return canvas{img}
}

func (c canvas) dot(x, y int, col color.RGBA, r int) {
	for dy := -r; dy <= r; dy++ {
		for dx := -r; dx <= r; dx++ {
			if dx*dx+dy*dy <= r*r+r && image.Pt(x+dx, y+dy).In(c.Bounds()) {
				c.SetRGBA(x+dx, y+dy, col)
			}
		}
	}
}

// line draws from (x0,y0) to (x1,y1) with a pen of radius r.
func (c canvas) line(x0, y0, x1, y1 float64, col color.RGBA, r int) {
	n := int(math.Max(math.Abs(x1-x0), math.Abs(y1-y0))) + 1
	for i := 0; i <= n; i++ {
		t := float64(i) / float64(n)
		c.dot(int(math.Round(x0+(x1-x0)*t)), int(math.Round(y0+(y1-y0)*t)), col, r)
	}
}

func (c canvas) hline(x0, x1, y int, col color.RGBA) {
	for x := x0; x <= x1; x++ {
		c.SetRGBA(x, y, col)
	}
}

func (c canvas) vline(x, y0, y1 int, col color.RGBA) {
	for y := y0; y <= y1; y++ {
		c.SetRGBA(x, y, col)
	}
}

func textWidth(s string) int { return len([]rune(s)) * advance }

// text draws s with its top-left corner at (x, y).
func (c canvas) text(x, y int, s string, col color.RGBA) {
	for i, r := range []rune(s) {
		c.glyph(r, col, func(u, v int) (int, int) { return x + i*advance + u, y + v })
	}
}

// vtext draws s rotated a quarter turn counter-clockwise, its baseline
// running up from (x, y).
func (c canvas) vtext(x, y int, s string, col color.RGBA) {
	for i, r := range []rune(s) {
		c.glyph(r, col, func(u, v int) (int, int) { return x + v, y - i*advance - u })
	}
}

// glyph draws r's bitmap, scaled by fontScale; place maps a point (u
// across, v down, in pixels from the glyph's corner) to the canvas.
func (c canvas) glyph(r rune, col color.RGBA, place func(u, v int) (int, int)) {
	g, ok := glyphs[r]
	if !ok {
		g, ok = glyphs[unicode.ToUpper(r)]
	}
	if !ok {
		g = glyphs['?']
	}
	for row, bits := range g {
		for colI, b := range bits {
			if b != '#' {
				continue
			}
			for dy := range fontScale {
				for dx := range fontScale {
					px, py := place(colI*fontScale+dx, row*fontScale+dy)
					c.SetRGBA(px, py, col)
				}
			}
		}
	}
}

func (a Axis) pos(v float64, lo, hi int) float64 {
	var f float64
	if a.Log {
		f = (math.Log10(v) - math.Log10(a.Min)) / (math.Log10(a.Max) - math.Log10(a.Min))
	} else {
		f = (v - a.Min) / (a.Max - a.Min)
	}
	return float64(lo) + f*float64(hi-lo)
}

func (a Axis) format(v float64) string {
	if a.Format != nil {
		return a.Format(v)
	}
	return trimFloat(v)
}

func trimFloat(v float64) string {
	if v >= 1000 {
		return fInt(v)
	}
	s := strconv.FormatFloat(v, 'f', 2, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

// draw renders the chart into the rectangle r of c.
func (ch *Chart) draw(c canvas, r image.Rectangle) {
	lw := 0
	for _, s := range ch.Series {
		lw = max(lw, textWidth(s.Name))
	}
	left, right := r.Min.X+110, r.Max.X-45
	if ch.LegendOutside {
		right = r.Max.X - lw - 80
	}
	top, bottom := r.Min.Y+50, r.Max.Y-70
	c.text((r.Min.X+r.Max.X-textWidth(ch.Title))/2, r.Min.Y+12, ch.Title, black)
	// grid and ticks
	for _, t := range ch.X.Ticks {
		if t < ch.X.Min || t > ch.X.Max {
			continue
		}
		x := int(math.Round(ch.X.pos(t, left, right)))
		c.vline(x, top, bottom, grid)
		c.vline(x, bottom, bottom+6, black)
		lbl := ch.X.format(t)
		c.text(x-textWidth(lbl)/2, bottom+12, lbl, black)
	}
	for _, t := range ch.Y.Ticks {
		if t < ch.Y.Min || t > ch.Y.Max {
			continue
		}
		y := int(math.Round(ch.Y.pos(t, bottom, top)))
		c.hline(left, right, y, grid)
		c.hline(left-6, left, y, black)
		lbl := ch.Y.format(t)
		c.text(left-12-textWidth(lbl), y-glyphH/2, lbl, black)
	}
	c.hline(left, right, bottom, black)
	c.vline(left, top, bottom, black)
	c.text((left+right-textWidth(ch.X.Label))/2, bottom+40, ch.X.Label, black)
	c.vtext(r.Min.X+12, (top+bottom+textWidth(ch.Y.Label))/2, ch.Y.Label, black)

	clampX := func(v float64) float64 { return math.Min(math.Max(v, ch.X.Min), ch.X.Max) }
	clampY := func(v float64) float64 { return math.Min(math.Max(v, ch.Y.Min), ch.Y.Max) }
	for i := range ch.Series {
		s := &ch.Series[i]
		s.color = palette[i%len(palette)]
		var px, py float64
		for j, p := range s.Points {
			x := ch.X.pos(clampX(p[0]), left, right)
			y := ch.Y.pos(clampY(p[1]), bottom, top)
			if j > 0 {
				c.line(px, py, x, y, s.color, 1)
			}
			if s.Markers {
				c.dot(int(x), int(y), s.color, 4)
			}
			px, py = x, y
		}
	}
	// legend
	lx, ly := left+15, top+10
	switch {
	case ch.LegendOutside:
		lx, ly = right+30, top+10
	case ch.LegendRight:
		lx, ly = right-lw-50, bottom-10-len(ch.Series)*(glyphH+8)
	}
	for _, s := range ch.Series {
		c.line(float64(lx), float64(ly+glyphH/2), float64(lx+25), float64(ly+glyphH/2), s.color, 2)
		c.text(lx+32, ly, s.Name, black)
		ly += glyphH + 8
	}
}

// SavePNG draws charts side by side, each w x h, into path.
func SavePNG(path string, w, h int, charts ...*Chart) error {
	c := newCanvas(w*len(charts), h)
	for i, ch := range charts {
		ch.draw(c, image.Rect(i*w, 0, (i+1)*w, h))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, c.RGBA); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// logTicks returns 1-2-5 ticks between lo and hi, or powers of ten when
// that would crowd the axis.
func logTicks(lo, hi float64) []float64 {
	var out []float64
	mults := []float64{1, 2, 5}
	if math.Log10(hi)-math.Log10(lo) > 3 {
		mults = []float64{1}
	}
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range mults {
			v := m * math.Pow(10, e)
			if v >= lo*0.999 && v <= hi*1.001 {
				out = append(out, v)
			}
		}
	}
	return out
}

// linTicks returns about n round ticks from 0 to hi.
func linTicks(hi float64, n int) (ticks []float64, top float64) {
	if hi <= 0 {
		hi = 1
	}
	raw := hi / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	for v := 0.0; v <= hi+step*0.999; v += step {
		ticks = append(ticks, v)
		top = v
	}
	return ticks, top
}

// LatencyCDFChart plots produce latency distributions.
func LatencyCDFChart(title string, runs []*RunResult, names []string) *Chart {
	ch := &Chart{Title: title, LegendOutside: true,
		X: Axis{Label: "PRODUCE LATENCY (MS, LOG SCALE)", Log: true},
		Y: Axis{Label: "PERCENTILE", Min: 0, Max: 100, Ticks: []float64{0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100}},
	}
	lo, hi := math.Inf(1), 0.0
	for i, r := range runs {
		if r == nil || len(r.ProduceCDF) == 0 {
			continue
		}
		s := Series{Name: names[i]}
		prev := 0.0
		for _, p := range r.ProduceCDF {
			v := math.Max(float64(p.Value)/1e6, 0.01)
			s.Points = append(s.Points, [2]float64{v, prev * 100}, [2]float64{v, p.Fraction * 100})
			prev = p.Fraction
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
		ch.Series = append(ch.Series, s)
	}
	if hi == 0 {
		lo, hi = 1, 1000
	}
	ch.X.Min = math.Pow(10, math.Floor(math.Log10(lo)))
	ch.X.Max = math.Pow(10, math.Ceil(math.Log10(hi)))
	ch.X.Ticks = logTicks(ch.X.Min, ch.X.Max)
	return ch
}

// SweepCharts plots throughput and PUTs per GiB against partitions.
func SweepCharts(runs []*RunResult) (*Chart, *Chart) {
	tp := Series{Name: "SILT PRODUCE MB/S", Markers: true}
	puts := Series{Name: "PUTS PER GIB", Markers: true}
	maxTP, maxPuts := 0.0, 0.0
	lo, hi := math.Inf(1), 0.0
	for _, r := range runs {
		x := float64(r.Options.Partitions * r.Options.Topics)
		lo, hi = math.Min(lo, x), math.Max(hi, x)
		tp.Points = append(tp.Points, [2]float64{x, r.Produce.MBPerSec})
		maxTP = math.Max(maxTP, r.Produce.MBPerSec)
		if r.Agent != nil {
			puts.Points = append(puts.Points, [2]float64{x, r.Agent.PutsPerGiB})
			maxPuts = math.Max(maxPuts, r.Agent.PutsPerGiB)
		}
	}
	if hi == 0 {
		lo, hi = 1, 10
	}
	xa := Axis{Label: "PARTITIONS (LOG SCALE)", Log: true, Min: math.Pow(10, math.Floor(math.Log10(lo))), Max: math.Pow(10, math.Ceil(math.Log10(hi)))}
	xa.Ticks = logTicks(xa.Min, xa.Max)
	xa.Format = func(v float64) string { return fInt(v) }
	y1, top1 := linTicks(maxTP*1.15, 6)
	y2, top2 := linTicks(maxPuts*1.15, 6)
	a := &Chart{Title: "PRODUCE THROUGHPUT VS PARTITIONS", X: xa, Y: Axis{Label: "MB/S", Min: 0, Max: top1, Ticks: y1}, Series: []Series{tp}, LegendRight: true}
	b := &Chart{Title: "OBJECT PUTS PER GIB VS PARTITIONS", X: xa, Y: Axis{Label: "PUTS PER GIB", Min: 0, Max: top2, Ticks: y2}, Series: []Series{puts}, LegendRight: true}
	return a, b
}

// LingerChart plots produce latency quantiles against linger.
func LingerChart(runs []*RunResult) *Chart {
	names := []string{"P50", "P99", "P99.9"}
	get := []func(Summary) float64{
		func(s Summary) float64 { return s.P50 }, func(s Summary) float64 { return s.P99 }, func(s Summary) float64 { return s.P999 },
	}
	ch := &Chart{Title: "PRODUCE LATENCY VS LINGER"}
	maxY, maxX := 0.0, 0.0
	for i, n := range names {
		s := Series{Name: n, Markers: true}
		for _, r := range runs {
			y := get[i](r.Produce.Latency)
			s.Points = append(s.Points, [2]float64{r.LingerMs, y})
			maxY, maxX = math.Max(maxY, y), math.Max(maxX, r.LingerMs)
		}
		ch.Series = append(ch.Series, s)
	}
	xt, xtop := linTicks(maxX*1.05, 5)
	yt, ytop := linTicks(maxY*1.1, 6)
	ch.X = Axis{Label: "LINGER (MS)", Min: 0, Max: xtop, Ticks: xt}
	ch.Y = Axis{Label: "PRODUCE LATENCY (MS)", Min: 0, Max: ytop, Ticks: yt}
	return ch
}
