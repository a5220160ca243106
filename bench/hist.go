package bench

import (
	"math"
	"math/bits"
	"time"
)

// Histogram is a log-linear latency histogram in the manner of
// HdrHistogram: each power-of-two range of nanoseconds is split into
// 2^subBits equal buckets, so every recorded value is kept within a
// relative error of 1/2^subBits (0.8%) at a fixed memory cost (58 KiB),
// whatever the range. Values below 2^subBits ns are exact. Quantiles report
// the highest value of their bucket (never below the true value), clamped
// to the exact maximum; min, max, count and sum are exact.
//
// A Histogram is not safe for concurrent use: keep one per goroutine and
// Merge them, or guard it.
type Histogram struct {
	counts   [numBuckets]uint64
	count    uint64
	sum      float64 // ns
	min, max int64   // ns
}

const (
	subBits    = 7
	subCount   = 1 << subBits
	numBuckets = (64 - subBits + 1) * subCount
)

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram { return &Histogram{min: math.MaxInt64} }

// bucketOf returns the bucket index of v >= 0.
func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(v) - 1 - subBits // v>>shift is in [subCount, 2*subCount)
	return (shift+1)<<subBits + int(v>>uint(shift)) - subCount
}

// bucketRange returns the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi uint64) {
	if i < subCount {
		return uint64(i), uint64(i)
	}
	shift := uint(i>>subBits - 1)
	m := uint64(i&(subCount-1) + subCount)
	lo = m << shift
	return lo, lo + (1 << shift) - 1
}

// Record adds one observation.
func (h *Histogram) Record(d time.Duration) { h.RecordN(d, 1) }

// RecordN adds n observations of d (a request of n records, say).
// Negative durations count as 0.
func (h *Histogram) RecordN(d time.Duration, n int) {
	if n <= 0 {
		return
	}
	v := max(int64(d), 0)
	h.counts[bucketOf(uint64(v))] += uint64(n)
	h.count += uint64(n)
	h.sum += float64(v) * float64(n)
	h.min = min(h.min, v)
	h.max = max(h.max, v)
}

// Merge adds o's observations to h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.count == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.count += o.count
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// Count is the number of observations.
func (h *Histogram) Count() uint64 { return h.count }

// Min is the smallest observation (0 when empty).
func (h *Histogram) Min() time.Duration {
	if h.count == 0 {
		return 0
	}
	return time.Duration(h.min)
}

// Max is the largest observation (0 when empty).
func (h *Histogram) Max() time.Duration {
	if h.count == 0 {
		return 0
	}
	return time.Duration(h.max)
}

// Mean is the average observation (0 when empty).
func (h *Histogram) Mean() time.Duration {
	if h.count == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.count))
}

// Quantile returns the value at or below which a fraction q (0..1) of the
// observations fall, with the histogram's precision (0 when empty).
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.count == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(h.count)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			_, hi := bucketRange(i)
			return time.Duration(min(max(int64(hi), h.min), h.max))
		}
	}
	return time.Duration(h.max)
}

// CDFPoint is one step of a cumulative distribution.
type CDFPoint struct {
	Value    time.Duration `json:"value_ns"`
	Fraction float64       `json:"fraction"`
}

// CDF returns the cumulative distribution at each non-empty bucket, values
// ascending; the last point has fraction 1.
func (h *Histogram) CDF() []CDFPoint {
	var out []CDFPoint
	var seen uint64
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		seen += c
		_, hi := bucketRange(i)
		v := min(max(int64(hi), h.min), h.max)
		out = append(out, CDFPoint{Value: time.Duration(v), Fraction: float64(seen) / float64(h.count)})
	}
	return out
}

// Summary is a histogram's figures in milliseconds, for reports.
type Summary struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Summary returns the standard quantiles.
func (h *Histogram) Summary() Summary {
	return Summary{
		Count: h.count,
		Mean:  ms(h.Mean()),
		P50:   ms(h.Quantile(0.50)),
		P90:   ms(h.Quantile(0.90)),
		P99:   ms(h.Quantile(0.99)),
		P999:  ms(h.Quantile(0.999)),
		Max:   ms(h.Max()),
	}
}
