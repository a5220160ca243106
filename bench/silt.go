package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"silt/binformat"
	"silt/client"
	"silt/segment"
)

// window is a run's timeline: producing starts at start, measuring at from
// (after the warmup), and both stop at end.
type window struct {
	start, from, end time.Time
}

func newWindow(o Options) window {
	start := time.Now()
	return window{start: start, from: start.Add(o.Warmup), end: start.Add(o.Warmup + o.Duration)}
}

func (w window) measured(t time.Time) bool { return !t.Before(w.from) && t.Before(w.end) }

func (w window) measuredNanos(ns int64) bool {
	return ns >= w.from.UnixNano() && ns < w.end.UnixNano()
}

// live are counters shown while a run goes.
type live struct {
	acked, ackedBytes atomic.Int64
	consumed          atomic.Int64
	errors, retries   atomic.Int64
}

func (l *live) status(phase string, start time.Time, last *[3]int64, lastAt *time.Time) string {
	now := time.Now()
	a, b, c := l.acked.Load(), l.ackedBytes.Load(), l.consumed.Load()
	dt := now.Sub(*lastAt).Seconds()
	line := fmt.Sprintf("%s %5.0fs  produce %9.0f rec/s %7.1f MB/s  consume %9.0f rec/s  errors %d  retries %d",
		phase, now.Sub(start).Seconds(), float64(a-last[0])/dt, float64(b-last[1])/dt/mb, float64(c-last[2])/dt,
		l.errors.Load(), l.retries.Load())
	*last, *lastAt = [3]int64{a, b, c}, now
	return line
}

// producerStats are one produce goroutine's measured figures.
// setProduce fills the produce and end-to-end figures from the producers'
// stats over the measured window d; tailHist may be nil.
func (res *RunResult) setProduce(stats []*producerStats, d time.Duration, tailHist *Histogram) {
	hist := NewHistogram()
	var p ProduceFigures
	for _, s := range stats {
		hist.Merge(s.hist)
		p.Records += s.records
		p.Bytes += s.bytes
		p.Requests += s.requests
		p.Errors += s.errors
		p.Retries += s.retries
		if s.firstErr != nil && p.FirstError == "" {
			p.FirstError = s.firstErr.Error()
		}
	}
	p.Seconds = d.Seconds()
	p.RecordsPerSec = perSec(float64(p.Records), d)
	p.MBPerSec = perSec(float64(p.Bytes), d) / mb
	p.Latency = hist.Summary()
	res.Produce = p
	res.ProduceCDF = hist.CDF()
	if tailHist != nil {
		res.EndToEnd = &EndToEndFigures{Records: int64(tailHist.Count()), Latency: tailHist.Summary()}
	}
}

type producerStats struct {
	hist                     *Histogram
	records, bytes, requests int64
	errors, retries          int64
	firstErr                 error
}

// siltRun is one Silt run in progress.
type siltRun struct {
	o      Options
	t      *Target
	topics []string
	win    window
	live   live
}

// partitionRef is one partition of one topic.
type partitionRef struct {
	topic     string
	partition int32
}

func (r *siltRun) partitions() []partitionRef {
	var out []partitionRef
	for p := 0; p < r.o.Partitions; p++ { // interleave topics so consumers get a mix
		for _, t := range r.topics {
			out = append(out, partitionRef{t, int32(p)})
		}
	}
	return out
}

// RunSilt runs the workload against t: producers for Warmup + Duration
// (measuring after the warmup) while consumers tail every partition, then,
// with CatchUp, consumers read everything back from offset 0.
func RunSilt(ctx context.Context, t *Target, o Options, pr *Progress) (*RunResult, *Target, error) {
	if err := o.Validate(); err != nil {
		return nil, t, err
	}
	admin, err := client.New(t.URL, append([]client.Option{client.WithRetry(client.DefaultRetryPolicy())}, t.clientOptions()...)...)
	if err != nil {
		return nil, t, err
	}
	r := &siltRun{o: o, t: t}
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	for i := range o.Topics {
		name := fmt.Sprintf("bench-%s-%d", stamp, i)
		if _, err := admin.CreateTopic(ctx, client.NewTopic{Name: name, Partitions: int32(o.Partitions)}); err != nil {
			return nil, t, err
		}
		r.topics = append(r.topics, name)
	}
	pr.Logf("silt: %s", o.Describe())
	if t.Linger > 0 {
		pr.Logf("silt: agent in this process, linger %s, segment %s", t.Linger, formatSize(t.SegmentBytes))
	}

	r.win = newWindow(o)
	mem := watchMemory(t)
	defer mem.halt()
	var before, after counters
	var metricsErr error
	snap := func(at time.Time, into *counters) {
		select {
		case <-time.After(time.Until(at)):
		case <-ctx.Done():
			return
		}
		c, err := readCounters(t.Metrics)
		if err != nil {
			metricsErr = err
		}
		*into = c
	}
	var snaps sync.WaitGroup
	snaps.Add(1)
	go func() { defer snaps.Done(); snap(r.win.from, &before) }()

	// Tailing consumers run until the producers are done and they have
	// read what was produced, or a drain deadline.
	producersDone := make(chan struct{})
	tailCtx, stopTail := context.WithCancel(ctx)
	defer stopTail()
	var tailHist *Histogram
	var tailWG sync.WaitGroup
	var tailErr error
	if o.Consumers > 0 {
		tailHist, tailErr = nil, nil
		tailWG.Add(1)
		go func() {
			defer tailWG.Done()
			if o.Protocol == ProtocolKafka {
				tailHist, tailErr = r.kafkaTail(tailCtx, producersDone)
			} else {
				tailHist, tailErr = r.tail(tailCtx, producersDone)
			}
		}()
	}

	var last [3]int64
	lastAt := time.Now()
	stopTrack := pr.Track(func() string {
		phase := "measure"
		if time.Now().Before(r.win.from) {
			phase = "warmup "
		}
		return r.live.status(phase, r.win.start, &last, &lastAt)
	})
	var stats []*producerStats
	if o.Protocol == ProtocolKafka {
		stats = r.kafkaProduce(ctx)
	} else {
		stats = r.produce(ctx)
	}
	snaps.Add(1)
	go func() { defer snaps.Done(); snap(time.Now(), &after) }()
	snaps.Wait()
	close(producersDone)
	drain := time.AfterFunc(30*time.Second, stopTail)
	tailWG.Wait()
	drain.Stop()
	stopTrack()
	if err := ctx.Err(); err != nil {
		return nil, t, err
	}

	res := &RunResult{System: "silt", Options: o, LingerMs: ms(t.Linger), SegmentBytes: t.SegmentBytes, Security: t.Security}
	res.setProduce(stats, o.Duration, tailHist)
	if p := res.Produce; p.Records == 0 {
		msg := "no record was acknowledged"
		if p.FirstError != "" {
			msg += ": " + p.FirstError
		}
		return res, t, errors.New(msg)
	}
	if tailErr != nil && !errors.Is(tailErr, context.Canceled) {
		pr.Logf("silt: tail consumers: %v", tailErr)
	}
	if t.Metrics != nil && metricsErr == nil {
		res.Agent = agentFigures(after.sub(before), res.Produce, o.Duration)
	} else if metricsErr != nil {
		pr.Logf("silt: agent metrics: %v", metricsErr)
	}

	if o.CatchUp && o.Consumers > 0 {
		cold := false
		if t.Local() {
			nt, err := t.Restart(ctx)
			if err != nil {
				return res, nil, fmt.Errorf("restart the agent before the catch-up read: %w", err)
			}
			t, cold = nt, true
		}
		var cu *CatchUpFigures
		var err error
		pr.phase("catch-up")
		if o.Protocol == ProtocolKafka {
			cu, err = r.kafkaCatchUp(ctx, t, pr)
		} else {
			cu, err = r.catchUp(ctx, t, pr)
		}
		pr.phase("")
		if err != nil {
			return res, t, err
		}
		cu.Cold = cold
		res.CatchUp = cu
	}
	res.Memory = mem.halt()
	return res, t, nil
}

func agentFigures(d counters, p ProduceFigures, dur time.Duration) *AgentFigures {
	gibs := float64(p.Bytes) / gib
	a := &AgentFigures{
		Puts:                int64(d.Puts),
		PutsPerSec:          perSec(d.Puts, dur),
		PutsPerGiB:          ratio(d.Puts, gibs),
		Flushes:             int64(d.Flushes),
		FlushErrors:         int64(d.FlushErrors),
		Commits:             int64(d.Commits),
		CommitsPerSec:       perSec(d.Commits, dur),
		CommitsPerFlush:     ratio(d.Commits, d.Flushes),
		MeanSegment:         ratio(d.SegmentBytes, d.Segments),
		MeanPutMs:           ratio(d.PutSeconds, d.PutsTimed) * 1000,
		MeanCommitMs:        ratio(d.CommitSeconds, d.CommitTimed) * 1000,
		ObjectPerRecordByte: ratio(d.WrittenBytes, float64(p.Bytes)),
		TailGets:            int64(d.Gets + d.GetRanges),
		TailGetsPerGiB:      ratio(d.Gets+d.GetRanges, gibs),
		Backpressure:        int64(d.Backpressure),
		CPUSecondsPerGB:     ratio(d.CPUSeconds, float64(p.Bytes)/1e9),
	}
	return a
}

// produce runs the producers and returns one stats per goroutine.
func (r *siltRun) produce(ctx context.Context) []*producerStats {
	o := r.o
	inflight := o.effectiveInflight()
	var all []*producerStats
	var wg sync.WaitGroup
	var interval time.Duration // between one producer's requests
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(o.Batch) * float64(o.Producers) / o.Rate)
	}
	for p := range o.Producers {
		hc := r.t.client(&http.Transport{
			MaxIdleConnsPerHost: inflight + 1, DisableCompression: true, ForceAttemptHTTP2: false,
		})
		var seq, rr atomic.Int64
		rr.Store(int64(p))
		var idem []*client.IdempotentProducer // one per topic
		if o.Idempotent {
			c, err := client.New(r.t.URL, client.WithHTTPClient(hc))
			for _, topic := range r.topics {
				if err != nil {
					break
				}
				var ip *client.IdempotentProducer
				ip, err = c.NewIdempotentProducer(ctx, topic, client.IdempotentOptions{})
				idem = append(idem, ip)
			}
			if err != nil {
				s := &producerStats{hist: NewHistogram(), errors: 1, firstErr: err}
				all = append(all, s)
				continue
			}
		}
		for range inflight {
			s := &producerStats{hist: NewHistogram()}
			all = append(all, s)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer hc.CloseIdleConnections()
				r.produceLoop(ctx, hc, idem, &seq, &rr, interval, s)
			}()
		}
	}
	wg.Wait()
	return all
}

func (r *siltRun) produceLoop(ctx context.Context, hc *http.Client, idem []*client.IdempotentProducer, seq, rr *atomic.Int64, interval time.Duration, s *producerStats) {
	o := r.o
	g := newGenerator(o)
	recs := make([]binformat.Record, o.Batch)
	msgs := make([]client.Message, 0, o.Batch)
	var body []byte
	urls := make([]string, len(r.topics))
	for i, t := range r.topics {
		urls[i] = r.t.URL + "/v1/topics/" + url.PathEscape(t) + "/records"
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		var sched time.Time
		if interval > 0 {
			n := seq.Add(1) - 1
			sched = r.win.start.Add(time.Duration(n) * interval)
			if !sched.Before(r.win.end) || !time.Now().Before(r.win.end) {
				return // the window is over, whether or not the schedule was kept
			}
			if d := time.Until(sched); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-ctx.Done():
					return
				}
			}
		} else {
			sched = time.Now()
			if !sched.Before(r.win.end) {
				return
			}
		}
		ti := int(rr.Add(1)) % len(r.topics)
		g.reset(o.Batch)
		var size int64
		var err error
		if idem != nil {
			msgs = msgs[:0]
			for range o.Batch {
				m := client.Message{Key: g.key(), Value: g.value(sched)}
				size += int64(len(m.Key) + len(m.Value))
				msgs = append(msgs, m)
			}
			_, err = idem[ti].Send(ctx, msgs)
		} else {
			for i := range recs {
				recs[i] = binformat.Record{Partition: -1, Timestamp: -1, Key: g.key(), Value: g.value(sched)}
				size += int64(len(recs[i].Key) + len(recs[i].Value))
			}
			body = binformat.AppendRequest(body[:0], &binformat.Request{Records: recs})
			err = r.post(ctx, hc, urls[ti], body, s)
		}
		done := time.Now()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.live.errors.Add(1)
			s.errors++
			if s.firstErr == nil {
				s.firstErr = err
			}
			continue
		}
		r.live.acked.Add(int64(o.Batch))
		r.live.ackedBytes.Add(size)
		if r.win.measured(sched) {
			s.hist.RecordN(done.Sub(sched), o.Batch)
			s.records += int64(o.Batch)
			s.bytes += size
			s.requests++
		}
	}
}

// post sends one binary produce request, retrying backpressure (429) and
// unavailability (503) a bounded number of times.
func (r *siltRun) post(ctx context.Context, hc *http.Client, u string, body []byte, s *producerStats) error {
	for attempt := 1; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", binformat.MediaType)
		req.Header.Set("Accept", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		if resp.StatusCode == http.StatusOK {
			_, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return err
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		resp.Body.Close()
		retriable := resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable
		if !retriable || attempt >= 20 {
			return fmt.Errorf("produce: %s: %s", resp.Status, bytes.TrimSpace(msg))
		}
		s.retries++
		r.live.retries.Add(1)
		wait := min(time.Duration(attempt)*50*time.Millisecond, time.Second)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// consumerClients returns one HTTP client of t per consumer, each with its
// own connections.
func consumerClients(t *Target, n, conns int) []*http.Client {
	out := make([]*http.Client, n)
	for i := range out {
		out[i] = t.client(&http.Transport{MaxIdleConnsPerHost: conns + 1, DisableCompression: true})
	}
	return out
}

// fetcher reads one partition page at a time into a buffer it reuses, in
// the stored-batches form (decoded here, as the Go client does) or the
// binary records form.
type fetcher struct {
	hc      *http.Client
	base    string
	records bool          // the binary records form rather than batches
	retries *atomic.Int64 // counts fetches retried after 429 or 503, when set
	buf     []byte
	batch   segment.Batch // reused for every batch decoded
}

// page is what one fetch brought.
type page struct {
	next, hwm int64
	records   int64
}

// fetch reads a page and calls visit for each record from offset on; the
// bytes it is given are valid until visit returns.
func (f *fetcher) fetch(ctx context.Context, p partitionRef, offset int64, maxBytes, maxRecords int, wait time.Duration, visit func(key, value []byte)) (page, error) {
	u := fmt.Sprintf("%s/v1/topics/%s/partitions/%d/records?offset=%d&max_bytes=%d&max_records=%d&wait_ms=%d",
		f.base, url.PathEscape(p.topic), p.partition, offset, maxBytes, maxRecords, wait.Milliseconds())
	accept := binformat.BatchesMediaType
	if f.records {
		accept = binformat.MediaType
	}
	var resp *http.Response
	for attempt := 1; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return page{}, err
		}
		req.Header.Set("Accept", accept)
		if resp, err = f.hc.Do(req); err != nil {
			return page{}, err
		}
		if resp.StatusCode == http.StatusOK {
			break
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		resp.Body.Close()
		// Backpressure (too many response bytes in flight in the agent)
		// and unavailability are retried, as clients do.
		retriable := resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable
		if !retriable || attempt >= 50 {
			return page{}, fmt.Errorf("fetch %s/%d: %s: %s", p.topic, p.partition, resp.Status, bytes.TrimSpace(msg))
		}
		if f.retries != nil {
			f.retries.Add(1)
		}
		select {
		case <-time.After(min(time.Duration(attempt)*20*time.Millisecond, time.Second)):
		case <-ctx.Done():
			return page{}, ctx.Err()
		}
	}
	defer resp.Body.Close()
	if n := resp.ContentLength; n > int64(cap(f.buf)) {
		f.buf = make([]byte, 0, n)
	}
	buf := f.buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // grow; the buffer is kept for the next fetch
		}
		n, err := resp.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return page{}, err
		}
	}
	f.buf = buf
	if f.records {
		res, err := binformat.DecodeFetch(buf)
		if err != nil {
			return page{}, err
		}
		for i := range res.Records {
			visit(res.Records[i].Key, res.Records[i].Value)
		}
		return page{next: res.NextOffset, hwm: res.HighWatermark, records: int64(len(res.Records))}, nil
	}
	res, err := binformat.DecodeBatches(buf)
	if err != nil {
		return page{}, err
	}
	pg := page{next: res.NextOffset, hwm: res.HighWatermark}
	for _, raw := range res.Batches {
		if err := f.batch.Decode(raw, segment.DecodeOptions{}); err != nil {
			return page{}, fmt.Errorf("fetch %s/%d: %w", p.topic, p.partition, err)
		}
		for i := range f.batch.Records {
			r := &f.batch.Records[i]
			if f.batch.BaseOffset+int64(r.OffsetDelta) < res.Offset {
				continue // before the offset asked for, in the first batch
			}
			visit(r.Key, r.Value)
			pg.records++
		}
	}
	return pg, nil
}

// tail long-polls every partition from offset 0, recording the end-to-end
// latency of records sent in the measured window. Consumer i serves the
// partitions i, i+n, i+2n... One goroutine per partition.
func (r *siltRun) tail(ctx context.Context, producersDone <-chan struct{}) (*Histogram, error) {
	parts := r.partitions()
	clients := consumerClients(r.t, r.o.Consumers, (len(parts)+r.o.Consumers-1)/r.o.Consumers)
	hists := make([]*Histogram, len(clients))
	mus := make([]sync.Mutex, len(clients))
	for i := range hists {
		hists[i] = NewHistogram()
	}
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	for i, pr := range parts {
		ci := i % len(clients)
		fc := &fetcher{hc: clients[ci], base: r.t.URL, records: r.o.FetchEncoding == FetchRecords}
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(0)
			var sent []int64 // send times of the page's records in the window
			visit := func(_, value []byte) {
				if ts, ok := sendTime(value); ok && r.win.measuredNanos(ts) {
					sent = append(sent, ts)
				}
			}
			for {
				sent = sent[:0]
				res, err := fc.fetch(ctx, pr, off, 4<<20, 20000, time.Second, visit)
				now := time.Now()
				mus[ci].Lock()
				for _, ts := range sent {
					hists[ci].Record(now.Sub(time.Unix(0, ts)))
				}
				mus[ci].Unlock()
				if err != nil {
					if ctx.Err() == nil {
						errMu.Lock()
						firstErr = cmpErr(firstErr, err)
						errMu.Unlock()
						r.live.errors.Add(1)
						select { // a failing agent: don't spin
						case <-time.After(100 * time.Millisecond):
							continue
						case <-ctx.Done():
						}
					}
					return
				}
				r.live.consumed.Add(res.records)
				off = res.next
				select {
				case <-producersDone:
					if off >= res.hwm {
						return
					}
				default:
				}
			}
		}()
	}
	wg.Wait()
	total := NewHistogram()
	for _, h := range hists {
		total.Merge(h)
	}
	return total, firstErr
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// catchUpFetchBytes is the size of one catch-up fetch of a partition.
const catchUpFetchBytes = 8 << 20

// catchUp reads every partition from offset 0 to its high watermark.
// Consumer i reads the partitions i, i+n, ...: all at once, one fetch in
// flight for each (as a Kafka consumer fetches its partitions), or one
// after another with CatchUpOrder sequential.
func (r *siltRun) catchUp(ctx context.Context, t *Target, pr *Progress) (*CatchUpFigures, error) {
	ctx, cancel := context.WithTimeout(ctx, r.o.CatchUpTimeout)
	defer cancel()
	parts := r.partitions()
	sequential := r.o.CatchUpOrder == CatchUpSequential
	conns := 1
	if !sequential {
		conns = (len(parts) + r.o.Consumers - 1) / r.o.Consumers
	}
	clients := consumerClients(t, r.o.Consumers, conns)
	before, _ := readCounters(t.Metrics)
	var records, byteCount, retries atomic.Int64
	var complete atomic.Bool
	complete.Store(true)
	start := time.Now()
	stopTrack := pr.TrackCatchUp(start, &records, "")
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	// readPartition reads p to the high watermark its first page gives.
	readPartition := func(fc *fetcher, p partitionRef) bool {
		var n int64
		count := func(key, value []byte) { n += int64(len(key) + len(value)) }
		off, hwm := int64(0), int64(-1)
		for hwm < 0 || off < hwm {
			n = 0
			res, err := fc.fetch(ctx, p, off, catchUpFetchBytes, 100_000, 0, count)
			if err != nil {
				errMu.Lock()
				firstErr = cmpErr(firstErr, err)
				errMu.Unlock()
				complete.Store(false)
				return false
			}
			if hwm < 0 {
				hwm = res.hwm
			}
			records.Add(res.records)
			byteCount.Add(n)
			if res.next <= off {
				complete.Store(false)
				break
			}
			off = res.next
		}
		return true
	}
	for ci, hc := range clients {
		if sequential {
			wg.Go(func() {
				fc := &fetcher{hc: hc, base: t.URL, records: r.o.FetchEncoding == FetchRecords, retries: &retries}
				for i := ci; i < len(parts); i += len(clients) {
					if !readPartition(fc, parts[i]) {
						return
					}
				}
			})
			continue
		}
		for i := ci; i < len(parts); i += len(clients) {
			wg.Go(func() {
				readPartition(&fetcher{hc: hc, base: t.URL, records: r.o.FetchEncoding == FetchRecords, retries: &retries}, parts[i])
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopTrack()
	if firstErr != nil {
		return nil, fmt.Errorf("catch-up read: %w", firstErr)
	}
	after, _ := readCounters(t.Metrics)
	d := after.sub(before)
	cu := &CatchUpFigures{
		Records:       records.Load(),
		Bytes:         byteCount.Load(),
		Seconds:       elapsed.Seconds(),
		RecordsPerSec: perSec(float64(records.Load()), elapsed),
		MBPerSec:      perSec(float64(byteCount.Load()), elapsed) / mb,
		Complete:      complete.Load(),
		Retries:       retries.Load(),
	}
	if t.Metrics != nil {
		cu.Gets = int64(d.Gets + d.GetRanges)
		cu.GetsPerGiB = ratio(d.Gets+d.GetRanges, float64(cu.Bytes)/gib)
		cu.ObjectBytesRead = d.ReadBytes
		cu.ReadAmplification = ratio(d.ReadBytes, float64(cu.Bytes))
	}
	return cu, nil
}

func formatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
