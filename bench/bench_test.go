package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

func TestHistogramBuckets(t *testing.T) {
	// Every value lands in a bucket whose range holds it, and buckets are
	// ordered and within 1/128 relative width.
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		v := r.Uint64() >> r.IntN(64)
		i := bucketOf(v)
		lo, hi := bucketRange(i)
		if v < lo || v > hi {
			t.Fatalf("value %d in bucket %d [%d, %d]", v, i, lo, hi)
		}
		if lo >= subCount && float64(hi-lo+1)/float64(lo) > 1.0/subCount+1e-12 {
			t.Fatalf("bucket %d [%d, %d] too wide", i, lo, hi)
		}
		if i >= numBuckets {
			t.Fatalf("bucket %d out of range", i)
		}
	}
	for v := uint64(0); v < 5000; v++ {
		if bucketOf(v+1) < bucketOf(v) {
			t.Fatalf("buckets not monotonic at %d", v)
		}
	}
	if bucketOf(math.MaxInt64) >= numBuckets {
		t.Fatal("max int64 out of range")
	}
}

func TestHistogramQuantiles(t *testing.T) {
	h := NewHistogram()
	if h.Quantile(0.5) != 0 || h.Max() != 0 || h.Mean() != 0 || len(h.CDF()) != 0 {
		t.Fatal("empty histogram must report zeros")
	}
	// 1..10000 microseconds, once each.
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := time.Duration(math.Ceil(q*10000)) * time.Microsecond
		got := h.Quantile(q)
		if got < want || float64(got-want) > float64(want)/subCount {
			t.Fatalf("q%.3f = %v, want %v within 1/%d above", q, got, want, subCount)
		}
	}
	if h.Quantile(1) != 10*time.Millisecond || h.Max() != 10*time.Millisecond || h.Min() != time.Microsecond {
		t.Fatalf("max %v min %v q1 %v", h.Max(), h.Min(), h.Quantile(1))
	}
	if m := h.Mean(); m < 5000*time.Microsecond || m > 5001*time.Microsecond {
		t.Fatalf("mean %v", m)
	}
	cdf := h.CDF()
	if cdf[len(cdf)-1].Fraction != 1 || !slices.IsSortedFunc(cdf, func(a, b CDFPoint) int { return int(a.Value - b.Value) }) {
		t.Fatalf("cdf end %+v", cdf[len(cdf)-1])
	}

	// RecordN weighs, Merge adds, negatives count as zero.
	a, b := NewHistogram(), NewHistogram()
	a.RecordN(time.Millisecond, 99)
	b.RecordN(time.Second, 1)
	b.Record(-time.Second)
	a.Merge(b)
	a.Merge(nil)
	if a.Count() != 101 || a.Min() != 0 || a.Max() != time.Second {
		t.Fatalf("merged: count %d min %v max %v", a.Count(), a.Min(), a.Max())
	}
	if q := a.Quantile(0.5); q != time.Millisecond && float64(q-time.Millisecond) > float64(time.Millisecond)/subCount {
		t.Fatalf("p50 %v", q)
	}
	if q := a.Quantile(0.999); q != time.Second {
		t.Fatalf("p99.9 %v, want the max", q)
	}
	s := a.Summary()
	if s.Count != 101 || s.Max != 1000 {
		t.Fatalf("summary %+v", s)
	}
}

func TestParseKeyDist(t *testing.T) {
	for in, want := range map[string]KeyDist{
		"none": {Kind: KeysNone}, "random": {Kind: KeysRandom}, "uniform:100": {Kind: KeysUniform, N: 100},
	} {
		got, err := ParseKeyDist(in)
		if err != nil || got != want || got.String() != in {
			t.Fatalf("%q: %+v %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "zipf", "uniform", "uniform:0", "uniform:x", "random:3"} {
		if _, err := ParseKeyDist(bad); err == nil {
			t.Fatalf("%q: no error", bad)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*Options){
		"producers": func(o *Options) { o.Producers = 0 },
		"record":    func(o *Options) { o.RecordSize = 8 },
		"duration":  func(o *Options) { o.Duration = 0 },
		"batch":     func(o *Options) { o.Batch = 0 },
		"values":    func(o *Options) { o.Values = "zeros" },
		"keys":      func(o *Options) { o.Keys = KeyDist{Kind: "zipf"} },
		"rate":      func(o *Options) { o.Rate = -1 },
	} {
		o := DefaultOptions()
		edit(&o)
		if err := o.Validate(); err == nil {
			t.Fatalf("%s: no error", name)
		}
	}
	o := DefaultOptions()
	o.Idempotent = true
	if o.effectiveInflight() != 1 || !strings.Contains(o.Describe(), "idempotent") {
		t.Fatalf("idempotent: %s", o.Describe())
	}
}

func TestOptionsJSONRoundTrip(t *testing.T) {
	o := DefaultOptions()
	o.Keys = KeyDist{Kind: KeysUniform, N: 7}
	o.Warmup = 1500 * time.Millisecond
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"Warmup":"1.5s"`)) || !bytes.Contains(b, []byte(`"Keys":"uniform:7"`)) {
		t.Fatalf("json: %s", b)
	}
	var back Options
	if err := json.Unmarshal(b, &back); err != nil || back != o {
		t.Fatalf("round trip: %+v %v", back, err)
	}
}

func TestGeneratorValues(t *testing.T) {
	for _, kind := range []string{ValuesRandom, ValuesText} {
		o := DefaultOptions()
		o.Values, o.RecordSize, o.Keys = kind, 1000, KeyDist{Kind: KeysUniform, N: 3}
		g := newGenerator(o)
		g.reset(500)
		sent := time.Unix(0, 1234567890123456789)
		var all []byte
		seen := map[string]bool{}
		for range 500 {
			k := g.key()
			v := g.value(sent)
			if len(v) != 1000 {
				t.Fatalf("%s: value of %d bytes", kind, len(v))
			}
			if ts, ok := sendTime(v); !ok || ts != sent.UnixNano() {
				t.Fatalf("%s: send time %d %v", kind, ts, ok)
			}
			seen[string(k)] = true
			all = append(all, v...)
		}
		if len(seen) > 3 {
			t.Fatalf("uniform:3 gave %d keys", len(seen))
		}
		// Values must not be identical, or zstd makes the numbers
		// meaningless: random ones must not compress, text ones about 3:1.
		enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
		ratio := float64(len(all)) / float64(len(enc.EncodeAll(all, nil)))
		switch kind {
		case ValuesRandom:
			if ratio > 1.02 {
				t.Fatalf("random values compress %.2f:1", ratio)
			}
		case ValuesText:
			if ratio < 1.5 || ratio > 8 {
				t.Fatalf("text values compress %.2f:1", ratio)
			}
		}
	}
	o := DefaultOptions()
	o.Keys = KeyDist{Kind: KeysRandom}
	g := newGenerator(o)
	g.reset(2)
	if a, b := g.key(), g.key(); bytes.Equal(a, b) || len(a) != 16 {
		t.Fatalf("random keys %q %q", a, b)
	}
	if _, ok := sendTime([]byte("short")); ok {
		t.Fatal("a short value has no send time")
	}
}

func testReport() *Report {
	lat := Summary{Count: 10, P50: 120, P90: 150, P99: 200, P999: 250, Max: 260}
	r := &Report{
		Silt: &RunResult{System: "silt", Options: DefaultOptions(), LingerMs: 100, SegmentBytes: 8 << 20,
			Produce:  ProduceFigures{Records: 1000, Bytes: 1 << 30, RecordsPerSec: 100000, MBPerSec: 100, Latency: lat},
			EndToEnd: &EndToEndFigures{Records: 1000, Latency: lat},
			CatchUp:  &CatchUpFigures{Records: 1000, MBPerSec: 300, Complete: true},
			Agent:    &AgentFigures{Puts: 100, Flushes: 100, Commits: 100, CommitsPerFlush: 1, PutsPerGiB: 100},
		},
		Raw: &RawResult{PutMBPerSec: 150, GetMBPerSec: 400, PutLatency: Summary{P99: 80}},
		NATS: &RunResult{System: "nats", Produce: ProduceFigures{RecordsPerSec: 50000, MBPerSec: 50, Latency: Summary{P99: 100}},
			EndToEnd: &EndToEndFigures{Latency: Summary{P99: 100}}, CatchUp: &CatchUpFigures{MBPerSec: 600}},
	}
	r.Compare()
	return r
}

func TestCompareTargets(t *testing.T) {
	r := testReport()
	c := r.Comparison
	if math.Abs(c.ProduceOverRawPut-100.0/150) > 1e-9 || c.CatchUpOverRawGet != 0.75 || c.ProduceOverNATS != 2 || c.CatchUpOverNATS != 0.5 || c.ProduceP99OverNATS != 2 {
		t.Fatalf("ratios %+v", c)
	}
	met := map[string]bool{}
	for _, tg := range c.Targets {
		met[tg.Name] = tg.Met
	}
	want := map[string]bool{
		"produce throughput vs raw PUT bandwidth":     true,  // 67% >= 60%
		"produce p99 vs linger + raw PUT p99 + 25 ms": true,  // 200 <= 100 + 80 + 25
		"catch-up read vs raw range-GET bandwidth":    false, // 75% < 80%
		"Postgres transactions per flush":             true,
	}
	if len(met) != len(want) {
		t.Fatalf("targets %+v", c.Targets)
	}
	for k, v := range want {
		if got, ok := met[k]; !ok || got != v {
			t.Fatalf("target %q: met %v, want %v", k, got, v)
		}
	}
	r.Silt.Agent.Commits = 101
	r.Compare()
	for _, tg := range r.Comparison.Targets {
		if strings.HasPrefix(tg.Name, "Postgres") && tg.Met {
			t.Fatal("101 transactions for 100 flushes must miss the target")
		}
	}
}

func TestReportRendering(t *testing.T) {
	r := testReport()
	var text, md bytes.Buffer
	r.WriteText(&text)
	for _, tb := range r.Tables() {
		tb.Markdown(&md)
	}
	for _, want := range []string{"records/s", "100,000", "Silt/raw", "Silt/NATS", "0.67x", "2.00x", "Targets", "exactly 1"} {
		if !strings.Contains(text.String(), want) {
			t.Fatalf("text lacks %q:\n%s", want, text.String())
		}
	}
	if !strings.Contains(md.String(), "| --- |") && !strings.Contains(md.String(), "|---|") {
		t.Fatalf("markdown:\n%s", md.String())
	}
	// Without baselines the table has one value column.
	solo := &Report{Silt: r.Silt}
	solo.Compare()
	text.Reset()
	solo.WriteText(&text)
	if strings.Contains(text.String(), "NATS") || strings.Contains(text.String(), "raw store") {
		t.Fatalf("solo report shows baselines:\n%s", text.String())
	}
}

func TestNumberFormats(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.6: "1,234,568", -4321: "-4,321"} {
		if got := fInt(v); got != want {
			t.Fatalf("fInt(%v) = %q, want %q", v, got, want)
		}
	}
	if fMs(1234.4) != "1234" || fMs(12.34) != "12.3" || fMs(1.234) != "1.23" || fRatio(0) != none {
		t.Fatal("fMs/fRatio")
	}
	if formatSize(8<<20) != "8MiB" || formatSize(6815744+1) != "6.5MiB" {
		t.Fatalf("formatSize: %s %s", formatSize(8<<20), formatSize(6815744+1))
	}
}

func TestSuiteWritesPlots(t *testing.T) {
	r := testReport()
	h := NewHistogram()
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * 200 * time.Microsecond)
	}
	r.Silt.ProduceCDF = h.CDF()
	var sweep []*RunResult
	for _, n := range []int{1, 64, 1024, 10000} {
		o := DefaultOptions()
		o.Partitions = n
		sweep = append(sweep, &RunResult{Options: o, Produce: ProduceFigures{MBPerSec: 100 - float64(n)/200}, Agent: &AgentFigures{PutsPerGiB: 120}})
	}
	var lingers []*RunResult
	for _, l := range []float64{10, 50, 100, 250} {
		lingers = append(lingers, &RunResult{LingerMs: l, Options: DefaultOptions(), Produce: ProduceFigures{Latency: Summary{P50: l + 20, P99: l + 60, P999: l + 90}}, ProduceCDF: h.CDF()})
	}
	s := &SuiteReport{Machine: DescribeMachine(), Main: *r, LingerSweep: lingers, PartitionSweep: sweep}
	dir := t.TempDir()
	if err := s.Write(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"results.json", "results.md", "produce-latency-cdf.png", "partitions.png", "linger.png"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Size() == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}
	md, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	for _, want := range []string{"Produce latency against linger", "Partitions (max rate", "10,000"} {
		if !strings.Contains(string(md), want) {
			t.Fatalf("results.md lacks %q", want)
		}
	}
	var back SuiteReport
	b, _ := os.ReadFile(filepath.Join(dir, "results.json"))
	if err := json.Unmarshal(b, &back); err != nil || len(back.PartitionSweep) != 4 {
		t.Fatalf("results.json: %v", err)
	}
}

func TestProgress(t *testing.T) {
	var nilP *Progress
	nilP.Logf("ignored")
	nilP.Track(func() string { return "" })()
	var buf bytes.Buffer
	p := NewProgress(&buf, false)
	p.Logf("hello %d", 1)
	stop := p.Track(func() string { return "status" })
	stop()
	stop()
	if !strings.HasPrefix(buf.String(), "hello 1\n") {
		t.Fatalf("%q", buf.String())
	}
}
