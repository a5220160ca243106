package bench

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"silt/objectstore"
)

// RawOptions configure the raw object store baseline: what the store
// itself does with objects of Silt's segment size, with no Silt in between.
type RawOptions struct {
	// ObjectBytes is the object size: the mean segment size of the Silt
	// run it is compared with.
	ObjectBytes int64
	// PutConcurrency is PUTs in flight: the batcher's in-flight flushes.
	PutConcurrency int
	// GetConcurrency is range GETs in flight: the consumers.
	GetConcurrency int
	// Duration of each of the PUT and GET phases.
	Duration time.Duration
	// Prefix of the keys written (and deleted afterwards).
	Prefix string
}

// Validate checks the options.
func (o RawOptions) Validate() error {
	switch {
	case o.ObjectBytes < 1:
		return fmt.Errorf("raw baseline: object size must be positive")
	case o.PutConcurrency < 1 || o.GetConcurrency < 1:
		return fmt.Errorf("raw baseline: concurrency must be at least 1")
	case o.Duration <= 0:
		return fmt.Errorf("raw baseline: duration must be positive")
	}
	return nil
}

// RawResult is the object store's own throughput and latency.
type RawResult struct {
	ObjectBytes    int64   `json:"object_bytes"`
	PutConcurrency int     `json:"put_concurrency"`
	GetConcurrency int     `json:"get_concurrency"`
	Puts           int64   `json:"puts"`
	PutMBPerSec    float64 `json:"put_mb_per_sec"`
	PutLatency     Summary `json:"put_latency"`
	Gets           int64   `json:"gets"`
	GetMBPerSec    float64 `json:"get_mb_per_sec"`
	// GetLatency runs until the last byte of the range is read.
	GetLatency Summary `json:"get_latency"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
}

// RunRaw PUTs random objects of ObjectBytes for Duration, then range-GETs
// them (each GET reads one whole object as a byte range) for Duration,
// then deletes them.
func RunRaw(ctx context.Context, b objectstore.Bucket, o RawOptions, pr *Progress) (*RawResult, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Prefix == "" {
		o.Prefix = "bench-raw/" + strconv.FormatInt(time.Now().UnixNano(), 36) + "/"
	}
	res := &RawResult{ObjectBytes: o.ObjectBytes, PutConcurrency: o.PutConcurrency, GetConcurrency: o.GetConcurrency}
	pr.Logf("raw: object store PUT then range GET, %s objects, %d PUTs and %d GETs in flight, %s each",
		formatSize(o.ObjectBytes), o.PutConcurrency, o.GetConcurrency, o.Duration)
	var errs atomic.Int64
	var errMu sync.Mutex
	fail := func(err error) {
		errs.Add(1)
		errMu.Lock()
		if res.FirstError == "" {
			res.FirstError = err.Error()
		}
		errMu.Unlock()
	}

	// PUT phase.
	var keysMu sync.Mutex
	var keys []string
	defer func() { deleteAll(context.WithoutCancel(ctx), b, keys) }()
	var done atomic.Int64
	start := time.Now()
	end := start.Add(o.Duration)
	stop := pr.Track(func() string {
		return fmt.Sprintf("raw PUT %5.0fs  %d objects  %.1f MB/s", time.Since(start).Seconds(), done.Load(),
			perSec(float64(done.Load()*o.ObjectBytes), time.Since(start))/mb)
	})
	putHists := make([]*Histogram, o.PutConcurrency)
	var wg sync.WaitGroup
	for w := range o.PutConcurrency {
		putHists[w] = NewHistogram()
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, o.ObjectBytes)
			var seed [32]byte
			_, _ = crand.Read(seed[:])
			rng := rand.NewChaCha8(seed)
			_, _ = rng.Read(buf)
			for n := 0; time.Now().Before(end) && ctx.Err() == nil; n++ {
				// A fresh head per object; the rest stays random.
				_, _ = rng.Read(buf[:min(len(buf), 4096)])
				key := fmt.Sprintf("%sw%d-%d", o.Prefix, w, n)
				t0 := time.Now()
				err := b.Put(ctx, key, bytes.NewReader(buf), int64(len(buf)), objectstore.PutOptions{IfNotExists: true})
				if err != nil {
					if ctx.Err() == nil {
						fail(err)
					}
					continue
				}
				putHists[w].Record(time.Since(t0))
				done.Add(1)
				keysMu.Lock()
				keys = append(keys, key)
				keysMu.Unlock()
			}
		}()
	}
	wg.Wait()
	putElapsed := time.Since(start)
	stop()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	putHist := NewHistogram()
	for _, h := range putHists {
		putHist.Merge(h)
	}
	res.Puts = int64(putHist.Count())
	res.PutMBPerSec = perSec(float64(res.Puts*o.ObjectBytes), putElapsed) / mb
	res.PutLatency = putHist.Summary()
	if len(keys) == 0 {
		return res, fmt.Errorf("raw baseline: no PUT succeeded: %s", res.FirstError)
	}

	// Range GET phase: workers walk the keys from different places.
	var got atomic.Int64
	var next atomic.Int64
	start = time.Now()
	end = start.Add(o.Duration)
	stop = pr.Track(func() string {
		return fmt.Sprintf("raw GET %5.0fs  %d objects  %.1f MB/s", time.Since(start).Seconds(), got.Load(),
			perSec(float64(got.Load()*o.ObjectBytes), time.Since(start))/mb)
	})
	getHists := make([]*Histogram, o.GetConcurrency)
	for w := range o.GetConcurrency {
		getHists[w] = NewHistogram()
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, o.ObjectBytes)
			for time.Now().Before(end) && ctx.Err() == nil {
				key := keys[int(next.Add(1)-1)%len(keys)]
				t0 := time.Now()
				rc, err := b.GetRange(ctx, key, 0, o.ObjectBytes)
				if err == nil {
					_, err = io.ReadFull(rc, buf)
					rc.Close()
				}
				if err != nil {
					if ctx.Err() == nil {
						fail(err)
					}
					continue
				}
				getHists[w].Record(time.Since(t0))
				got.Add(1)
			}
		}()
	}
	wg.Wait()
	getElapsed := time.Since(start)
	stop()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	getHist := NewHistogram()
	for _, h := range getHists {
		getHist.Merge(h)
	}
	res.Gets = int64(getHist.Count())
	res.GetMBPerSec = perSec(float64(res.Gets*o.ObjectBytes), getElapsed) / mb
	res.GetLatency = getHist.Summary()
	res.Errors = errs.Load()
	return res, nil
}

// deleteAll removes the baseline's objects, a few at a time.
func deleteAll(ctx context.Context, b objectstore.Bucket, keys []string) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	ch := make(chan string)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range ch {
				_ = b.Delete(ctx, k)
			}
		}()
	}
	for _, k := range keys {
		ch <- k
	}
	close(ch)
	wg.Wait()
}

// stamp is a unique-enough run id.
func stamp() string {
	var b [8]byte
	_, _ = crand.Read(b[:])
	return strconv.FormatUint(binary.LittleEndian.Uint64(b[:])%(36*36*36*36*36*36), 36)
}
