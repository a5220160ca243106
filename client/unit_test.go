package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"silt/binformat"
	"silt/problem"
	"silt/recordjson"
	"silt/segment"
)

func fakeClient(t *testing.T, h http.Handler, opts ...Option) *Client {
	t.Helper()
	srv := httptest.NewServer(h) // listens on 127.0.0.1
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func writeProblem(w http.ResponseWriter, status int, code string, retriable bool, extra string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"type":"urn:silt:problem:%s","title":%q,"status":%d,"detail":"d","instance":"/x","code":%q,"retriable":%v%s}`,
		code, http.StatusText(status), status, code, retriable, extra)
}

func TestEncodeBytes(t *testing.T) {
	cases := []struct {
		in     []byte
		raw    string
		b64    string
		absent bool
	}{
		{in: nil, absent: true},
		{in: []byte{}, b64: ""},
		{in: []byte(`{"a":1}`), raw: `{"a":1}`},
		{in: []byte(`{"a": 1}`), b64: "eyJhIjogMX0="}, // not compact: the agent would compact it
		{in: []byte(`"<&>"`), raw: `"<&>"`},
		{in: []byte(`hello`), b64: "aGVsbG8="},
		{in: []byte(`12`), raw: `12`},
		{in: []byte{'"', 0xff, '"'}, b64: "Iv8i"}, // not UTF-8
		{in: []byte(` 1`), b64: "IDE="},
	}
	for _, tc := range cases {
		raw, b64 := recordjson.Encode(tc.in)
		switch {
		case tc.absent:
			if raw != nil || b64 != nil {
				t.Errorf("%q: raw %q b64 %v, want absent", tc.in, raw, b64)
			}
		case tc.raw != "":
			if string(raw) != tc.raw || b64 != nil {
				t.Errorf("%q: raw %q b64 %v, want raw %q", tc.in, raw, b64, tc.raw)
			}
		default:
			if raw != nil || b64 == nil || *b64 != tc.b64 {
				t.Errorf("%q: raw %q b64 %v, want b64 %q", tc.in, raw, b64, tc.b64)
			}
		}
		// And back.
		got, err := recordjson.Decode("value", raw, b64)
		if err != nil || !bytes.Equal(got, tc.in) || (got == nil) != (tc.in == nil) {
			t.Errorf("%q: decoded %q (%v)", tc.in, got, err)
		}
	}
}

func TestMarshalJSONKeepsRecordBytes(t *testing.T) {
	j := messageJSON(&Message{Value: []byte(`{"h":"<b>&</b>"}`)})
	b, err := marshalJSON(j)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`{"h":"<b>&</b>"}`)) {
		t.Fatalf("record JSON was escaped: %s", b)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"3", 3 * time.Second, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
	} {
		got, ok := parseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%q: %v %v, want %v %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestErrorFromResponse(t *testing.T) {
	c := fakeClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("case") {
		case "416":
			writeProblem(w, 416, "offset_out_of_range", false, `,"log_start_offset":100,"high_watermark":250`)
		case "429":
			w.Header().Set("Retry-After", "7")
			writeProblem(w, 429, "backpressure", true, `,"retry_after":7`)
		case "502":
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(502)
			io.WriteString(w, "<html>bad gateway</html>")
		}
	}))
	ctx := ctxFor(t)
	get := func(kase string) *Error {
		_, err := c.call(ctx, request{method: http.MethodGet, path: []string{"x"}, query: map[string][]string{"case": {kase}}})
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("%s: %v is not an *Error", kase, err)
		}
		return e
	}
	if e := get("416"); e.Status != 416 || e.Code != problem.CodeOffsetOutOfRange || e.LogStartOffset != 100 || e.HighWatermark != 250 || e.Retriable {
		t.Fatalf("416: %+v", e)
	}
	if e := get("429"); e.Code != problem.CodeBackpressure || !e.Retriable || e.RetryAfter != 7*time.Second || e.Detail != "d" || e.Instance != "/x" {
		t.Fatalf("429: %+v", e)
	}
	e := get("502")
	if e.Status != 502 || e.Code != "" || !e.Retriable || !strings.Contains(e.Detail, "bad gateway") {
		t.Fatalf("502: %+v", e)
	}
	if got := e.Error(); !strings.Contains(got, "502") || !strings.Contains(got, "bad gateway") {
		t.Fatalf("message %q", got)
	}
}

// flaky answers 503 (no Retry-After) until fail requests were refused.
type flaky struct {
	fail  int32
	calls atomic.Int32
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.calls.Add(1) <= f.fail {
		writeProblem(w, 503, "unavailable", true, "")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"topics":[{"name":"a","partitions":1}]}`)
}

func TestRetry(t *testing.T) {
	ctx := ctxFor(t)
	fast := RetryPolicy{MaxAttempts: 3, Backoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}

	f := &flaky{fail: 2}
	topics, err := fakeClient(t, f, WithRetry(fast)).ListTopics(ctx)
	if err != nil || len(topics) != 1 || f.calls.Load() != 3 {
		t.Fatalf("with retries: %v %v after %d calls", topics, err, f.calls.Load())
	}

	f = &flaky{fail: 3}
	if _, err := fakeClient(t, f, WithRetry(fast)).ListTopics(ctx); !IsCode(err, problem.CodeUnavailable) || f.calls.Load() != 3 {
		t.Fatalf("out of attempts: %v after %d calls", err, f.calls.Load())
	}

	f = &flaky{fail: 1}
	if _, err := fakeClient(t, f).ListTopics(ctx); !IsCode(err, problem.CodeUnavailable) || f.calls.Load() != 1 {
		t.Fatalf("retries are off by default: %v after %d calls", err, f.calls.Load())
	}
}

func TestRetryGivesUpWhenRetryAfterExceedsBudget(t *testing.T) {
	var calls atomic.Int32
	c := fakeClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Retry-After", "3600")
		writeProblem(w, 429, "backpressure", true, "")
	}), WithRetry(RetryPolicy{MaxAttempts: 5, MaxElapsed: time.Minute}))
	start := time.Now()
	_, err := c.ListTopics(ctxFor(t))
	if !IsCode(err, problem.CodeBackpressure) || calls.Load() != 1 {
		t.Fatalf("%v after %d calls", err, calls.Load())
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("waited although the wait could not fit the budget")
	}
}

func TestRetryHonoursRetryAfter(t *testing.T) {
	var mu sync.Mutex
	var times []time.Time
	c := fakeClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		times = append(times, time.Now())
		n := len(times)
		mu.Unlock()
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			writeProblem(w, 503, "shutting_down", true, "")
			return
		}
		io.WriteString(w, `{"topics":[]}`)
	}), WithRetry(RetryPolicy{MaxAttempts: 2, Backoff: time.Millisecond}))
	if _, err := c.ListTopics(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	if len(times) != 2 || times[1].Sub(times[0]) < 900*time.Millisecond {
		t.Fatalf("retried after %v, want about 1s", times[len(times)-1].Sub(times[0]))
	}
}

func TestTransportErrorsRetriedOnlyWhenSafe(t *testing.T) {
	// A transport that fails every produce request after sending it.
	var tries atomic.Int32
	hc := &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
		tries.Add(1)
		return nil, errors.New("connection reset")
	})}
	c, err := New("http://127.0.0.1:1", WithHTTPClient(hc), WithRetry(RetryPolicy{MaxAttempts: 3, Backoff: time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t)
	msgs := []Message{{Value: []byte("x")}}
	if _, err := c.ProduceBinary(ctx, "t", msgs); err == nil || tries.Load() != 1 {
		t.Fatalf("plain produce: %v after %d tries; a resend could duplicate", err, tries.Load())
	}
	tries.Store(0)
	if _, err := c.ProduceBinary(ctx, "t", msgs, WithSequences(9, map[int32]int32{0: 0})); err == nil || tries.Load() != 3 {
		t.Fatalf("idempotent produce: %v after %d tries", err, tries.Load())
	}
	tries.Store(0)
	if _, err := c.ListTopics(ctx); err == nil || tries.Load() != 3 {
		t.Fatalf("list: %v after %d tries", err, tries.Load())
	}
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestAttemptTimeoutRetries(t *testing.T) {
	var calls atomic.Int32
	release := make(chan struct{})
	defer close(release)
	c := fakeClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			select { // hang until the client gives up on this try
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		io.WriteString(w, `{"topics":[]}`)
	}), WithRetry(RetryPolicy{MaxAttempts: 2, Backoff: time.Millisecond, AttemptTimeout: 200 * time.Millisecond}))
	if _, err := c.ListTopics(ctxFor(t)); err != nil || calls.Load() != 2 {
		t.Fatalf("%v after %d calls", err, calls.Load())
	}
}

func TestFetchDecodesEachFormat(t *testing.T) {
	recs := []binformat.Record{
		{Offset: 7, Timestamp: 1000, Key: nil, Value: []byte("v"), Headers: []binformat.Header{{Key: "h", Value: nil}}},
		{Offset: 9, Timestamp: 2000, Key: []byte{}, Value: []byte(`{"a":1}`)},
	}
	var gotQuery, gotAccept string
	c := fakeClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotQuery, gotAccept = r.URL.RawQuery, r.Header.Get("Accept")
		if r.URL.Path != "/v1/topics/a.b/partitions/3/records" {
			writeProblem(w, 404, "route_not_found", false, "")
			return
		}
		switch gotAccept {
		case acceptBatches:
			b := kafkaBatch(t, []segment.Record{
				{OffsetDelta: 0, Timestamp: 1000, Key: nil, Value: []byte("v"), Headers: []segment.Header{{Key: "h", Value: nil}}},
				{OffsetDelta: 2, Timestamp: 2000, Key: []byte{}, Value: []byte(`{"a":1}`)},
			}, segment.CompressionGzip, 7)
			w.Header().Set("Content-Type", binformat.BatchesMediaType)
			w.Write(batchesBody(binformat.BatchesHeader{Partition: 3, Offset: 7, NextOffset: 10, HighWatermark: 12, LogStartOffset: 5}, b))
		case binformat.MediaType:
			b := binformat.AppendFetchHeader(nil, 10, 12, 5, len(recs))
			for i := range recs {
				b = binformat.AppendFetchRecord(b, &recs[i])
			}
			w.Header().Set("Content-Type", binformat.MediaType)
			w.Write(b)
		case mediaJSON:
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			io.WriteString(w, `{"records":[{"offset":7,"timestamp":1000,"key":null,"value_b64":"dg==","headers":[{"key":"h"}]},`+
				`{"offset":9,"timestamp":2000,"key_b64":"","value":{"a":1}}],"next_offset":10,"high_watermark":12,"log_start_offset":5}`)
		case mediaNDJSON:
			w.Header().Set("Content-Type", mediaNDJSON)
			w.Header().Set("Silt-Next-Offset", "10")
			w.Header().Set("Silt-High-Watermark", "12")
			w.Header().Set("Silt-Log-Start-Offset", "5")
			io.WriteString(w, `{"offset":7,"timestamp":1000,"value_b64":"dg==","headers":[{"key":"h","value":null}]}`+"\n\n"+
				`{"offset":9,"timestamp":2000,"key_b64":"","value":{"a":1}}`+"\n")
		}
	}))
	ctx := ctxFor(t)
	for _, enc := range []Encoding{Batches, Binary, JSON, NDJSON} {
		res, err := c.Fetch(ctx, "a.b", 3, 7, FetchOptions{MaxRecords: 2, MaxBytes: 1000, Wait: 1500 * time.Millisecond, Encoding: enc})
		if err != nil {
			t.Fatalf("encoding %d: %v", enc, err)
		}
		if gotQuery != "max_bytes=1000&max_records=2&offset=7&wait_ms=1500" {
			t.Fatalf("query %q", gotQuery)
		}
		if res.NextOffset != 10 || res.HighWatermark != 12 || res.LogStartOffset != 5 || len(res.Records) != 2 {
			t.Fatalf("encoding %d: %+v", enc, res)
		}
		r0, r1 := res.Records[0], res.Records[1]
		if r0.Partition != 3 || r0.Offset != 7 || r0.Key != nil || string(r0.Value) != "v" || r0.Timestamp.UnixMilli() != 1000 ||
			len(r0.Headers) != 1 || r0.Headers[0].Key != "h" || r0.Headers[0].Value != nil {
			t.Fatalf("encoding %d: record 0 %+v", enc, r0)
		}
		if r1.Offset != 9 || r1.Key == nil || len(r1.Key) != 0 || string(r1.Value) != `{"a":1}` {
			t.Fatalf("encoding %d: record 1 %+v", enc, r1)
		}
	}
	if _, err := c.Fetch(ctx, "a.b", 3, Earliest, FetchOptions{}); err != nil || gotQuery != "offset=earliest" || gotAccept != acceptBatches {
		t.Fatalf("earliest: %v, query %q accept %q", err, gotQuery, gotAccept)
	}
	if _, err := c.Fetch(ctx, "a.b", 3, Latest, FetchOptions{Encoding: JSON, Base64: true}); err != nil || gotQuery != "encoding=base64&offset=latest" {
		t.Fatalf("latest: %v, query %q", err, gotQuery)
	}
}

func TestSSEReader(t *testing.T) {
	in := ": hello\n\n" + // a heartbeat alone dispatches nothing
		"id: 1\r\nevent: record\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n" + // CRLF, two data lines
		"data:no space\nid\n\n" + // field without a value; default event type
		"event: other\n\n" + // no data: nothing
		"id: 3\ndata: x" // unterminated: incomplete
	var lines int
	r := newSSEReader(strings.NewReader(in), 1<<10, func() { lines++ })
	ev, err := r.next()
	if err != nil || ev.id != "1" || !ev.hasID || ev.event != "record" || string(ev.data) != "{\"a\":\n1}" {
		t.Fatalf("event 1: %+v %v", ev, err)
	}
	ev, err = r.next()
	if err != nil || ev.id != "" || !ev.hasID || ev.event != "message" || string(ev.data) != "no space" {
		t.Fatalf("event 2: %+v %v", ev, err)
	}
	if _, err = r.next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("incomplete event: %v", err)
	}
	if lines != 13 {
		t.Fatalf("%d lines seen", lines)
	}
	long := newSSEReader(strings.NewReader("data: "+strings.Repeat("x", 1<<17)+"\n\n"), 1<<16, nil)
	if _, err := long.next(); !errors.Is(err, errLineTooLong) {
		t.Fatalf("long line: %v", err)
	}
	ok := newSSEReader(strings.NewReader("data: "+strings.Repeat("x", 1<<17)+"\n\n"), 1<<20, nil)
	if ev, err := ok.next(); err != nil || len(ev.data) != 1<<17 {
		t.Fatalf("line longer than the buffer: %d bytes, %v", len(ev.data), err)
	}
}

// sseServer serves scripted connections, one per stream request, and
// records the Last-Event-ID of each.
type sseServer struct {
	mu      sync.Mutex
	scripts []func(w http.ResponseWriter, r *http.Request)
	lastIDs []string
	queries []string
	// connected, when set, is closed once a silent connection is open.
	connected chan struct{}
}

func (s *sseServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	n := len(s.lastIDs)
	s.lastIDs = append(s.lastIDs, r.Header.Get("Last-Event-ID"))
	s.queries = append(s.queries, r.URL.RawQuery)
	var script func(http.ResponseWriter, *http.Request)
	if n < len(s.scripts) {
		script = s.scripts[n]
	}
	s.mu.Unlock()
	if r.Header.Get("Accept") != mediaSSE || r.URL.Path != "/v1/topics/t/partitions/2/stream" {
		writeProblem(w, 400, "bad_request", false, "")
		return
	}
	if script == nil {
		w.Header().Set("Content-Type", mediaSSE)
		w.(http.Flusher).Flush()
		if s.connected != nil && n == 0 {
			close(s.connected)
		}
		<-r.Context().Done()
		return
	}
	script(w, r)
}

func sseRecord(w io.Writer, offset int64, value string) {
	fmt.Fprintf(w, "id: %d\nevent: record\ndata: {\"offset\":%d,\"timestamp\":5,\"value_b64\":%q}\n\n", offset, offset, value)
}

func events(records ...int64) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, ": connected\n\n")
		for _, o := range records {
			sseRecord(w, o, "")
		}
	}
}

func TestStreamReconnects(t *testing.T) {
	srv := &sseServer{scripts: []func(http.ResponseWriter, *http.Request){
		events(4, 5),
		func(w http.ResponseWriter, r *http.Request) { writeProblem(w, 503, "unavailable", true, "") },
		func(w http.ResponseWriter, r *http.Request) { // drops mid-event
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "id: 6\nevent: record\ndata: {\"offset\":6")
		},
		events(5, 6, 7), // 5 again: skipped
	}}
	c := fakeClient(t, srv)
	ctx, cancel := context.WithCancel(ctxFor(t))
	defer cancel()
	var got []int64
	for r, err := range c.Stream(ctx, "t", 2, 4, StreamOptions{MaxBackoff: time.Millisecond}) {
		if err != nil {
			t.Fatal(err)
		}
		if r.Partition != 2 || r.Value == nil || len(r.Value) != 0 || r.Timestamp.UnixMilli() != 5 {
			t.Fatalf("record %+v", r)
		}
		got = append(got, r.Offset)
		if len(got) == 4 {
			break
		}
	}
	if fmt.Sprint(got) != "[4 5 6 7]" {
		t.Fatalf("offsets %v", got)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if fmt.Sprint(srv.lastIDs) != "[ 5 5 5]" {
		t.Fatalf("Last-Event-IDs %q", srv.lastIDs)
	}
	if srv.queries[0] != "offset=4" {
		t.Fatalf("query %q", srv.queries[0])
	}
}

func TestStreamPermanentError(t *testing.T) {
	srv := &sseServer{scripts: []func(http.ResponseWriter, *http.Request){
		events(0),
		func(w http.ResponseWriter, r *http.Request) {
			writeProblem(w, 416, "offset_out_of_range", false, `,"log_start_offset":50,"high_watermark":60`)
		},
	}}
	c := fakeClient(t, srv)
	var offsets []int64
	var errs []error
	for r, err := range c.Stream(ctxFor(t), "t", 2, Earliest, StreamOptions{MaxBackoff: time.Millisecond}) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		offsets = append(offsets, r.Offset)
	}
	var e *Error
	if len(offsets) != 1 || len(errs) != 1 || !errors.As(errs[0], &e) || e.LogStartOffset != 50 {
		t.Fatalf("offsets %v errors %v", offsets, errs)
	}
	if !strings.Contains(errs[0].Error(), "stream t/2") {
		t.Fatalf("error not wrapped: %v", errs[0])
	}
}

func TestStreamIdleTimeoutReconnects(t *testing.T) {
	srv := &sseServer{scripts: []func(http.ResponseWriter, *http.Request){
		func(w http.ResponseWriter, r *http.Request) { // one record, then silence
			events(0)(w, r)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		},
		events(1),
	}}
	c := fakeClient(t, srv)
	var got []int64
	for r, err := range c.Stream(ctxFor(t), "t", 2, 0, StreamOptions{IdleTimeout: 100 * time.Millisecond, MaxBackoff: time.Millisecond}) {
		if err != nil {
			t.Fatal(err)
		}
		if got = append(got, r.Offset); len(got) == 2 {
			break
		}
	}
	if fmt.Sprint(got) != "[0 1]" {
		t.Fatalf("offsets %v", got)
	}
}

func TestStreamEndsWhenContextEnds(t *testing.T) {
	srv := &sseServer{connected: make(chan struct{})} // every connection stays silent
	c := fakeClient(t, srv)
	ctx, cancel := context.WithCancel(ctxFor(t))
	done := make(chan []error)
	go func() {
		var errs []error
		for _, err := range c.Stream(ctx, "t", 2, Latest, StreamOptions{}) {
			errs = append(errs, err)
		}
		done <- errs
	}()
	<-srv.connected // the stream is waiting for records
	cancel()
	if errs := <-done; len(errs) != 0 {
		t.Fatalf("yielded %v after cancel", errs)
	}
}

func TestProduceRequestBodies(t *testing.T) {
	var ctype string
	var body []byte
	c := fakeClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctype = r.Header.Get("Content-Type")
		body, _ = io.ReadAll(r.Body)
		io.WriteString(w, `{"offsets":[{"partition":1,"offset":3},{"partition":0,"offset":8}]}`)
	}))
	ctx := ctxFor(t)
	msgs := []Message{
		{Partition: Partition(1), Key: []byte("k"), Value: []byte(`{"a":[1,2]}`), Timestamp: time.UnixMilli(42), Headers: []Header{{Key: "h", Value: []byte{1}}}},
		{Value: nil},
	}
	res, err := c.Produce(ctx, "t", msgs, WithSequences(5, map[int32]int32{1: 10, 0: 3}))
	if err != nil {
		t.Fatal(err)
	}
	if res.Offsets[1] != (RecordOffset{Partition: 0, Offset: 8}) {
		t.Fatalf("result %+v", res)
	}
	want := `{"records":[{"partition":1,"timestamp":42,"key_b64":"aw==","value":{"a":[1,2]},"headers":[{"key":"h","value_b64":"AQ=="}]},{}],"producer_id":5,"sequences":{"0":3,"1":10}}`
	if ctype != mediaJSON || string(body) != want {
		t.Fatalf("JSON body %s %s\nwant %s", ctype, body, want)
	}

	if _, err := c.ProduceBinary(ctx, "t", msgs, WithSequences(5, map[int32]int32{1: 10, 0: 3})); err != nil {
		t.Fatal(err)
	}
	req, err := binformat.DecodeRequest(body, binformat.Limits{})
	if err != nil || ctype != binformat.MediaType {
		t.Fatalf("binary body %s: %v", ctype, err)
	}
	if req.ProducerID != 5 || fmt.Sprint(req.Sequences) != "[{0 3} {1 10}]" {
		t.Fatalf("binary idempotence %+v", req)
	}
	r0, r1 := req.Records[0], req.Records[1]
	if r0.Partition != 1 || r0.Timestamp != 42 || string(r0.Key) != "k" || r0.Headers[0].Value[0] != 1 ||
		r1.Partition != -1 || r1.Timestamp != -1 || r1.Value != nil || r1.Key != nil {
		t.Fatalf("binary records %+v", req.Records)
	}

	// One offset per record, or an error.
	if _, err := c.Produce(ctx, "t", msgs[:1]); err == nil {
		t.Fatal("a result with the wrong offset count was accepted")
	}
	if _, err := c.Produce(ctx, "t", nil); err == nil {
		t.Fatal("an empty produce was sent")
	}
}

func TestTopicRequests(t *testing.T) {
	var method, path, body string
	c := fakeClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		method, path, body = r.Method, r.URL.EscapedPath(), string(b)
		if r.Method == http.MethodDelete {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"name":"x","partitions":2,"producer_id":77}`)
	}))
	ctx := ctxFor(t)
	retention := int64(5)
	if _, err := c.CreateTopic(ctx, NewTopic{Name: "x", Partitions: 2, Config: ConfigPatch{RetentionMs: &retention}}); err != nil {
		t.Fatal(err)
	}
	if method != "POST" || path != "/v1/topics" || body != `{"name":"x","partitions":2,"config":{"retention.ms":5}}` {
		t.Fatalf("create: %s %s %s", method, path, body)
	}
	if _, err := c.CreateTopic(ctx, NewTopic{Name: "x"}); err != nil || body != `{"name":"x"}` {
		t.Fatalf("create with defaults: %s %v", body, err)
	}
	if _, err := c.AlterTopic(ctx, "x", TopicUpdate{Partitions: 4}); err != nil || method != "PATCH" || path != "/v1/topics/x" || body != `{"partitions":4}` {
		t.Fatalf("alter: %s %s %s %v", method, path, body, err)
	}
	if err := c.DeleteTopic(ctx, "we/ird"); err != nil || method != "DELETE" || path != "/v1/topics/we%2Fird" {
		t.Fatalf("delete: %s %s %v", method, path, err)
	}
	if id, err := c.NewProducerID(ctx); err != nil || id != 77 || path != "/v1/producers" {
		t.Fatalf("producer id %d %v %s", id, err, path)
	}
}

// The base URL may carry a path prefix (an agent behind a proxy).
func TestBaseURLPrefix(t *testing.T) {
	var path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		json.NewEncoder(w).Encode(map[string]any{"log_start_offset": 1, "high_watermark": 2})
	}))
	defer srv.Close()
	c, err := New(srv.URL + "/silt/")
	if err != nil {
		t.Fatal(err)
	}
	o, err := c.ListOffsets(ctxFor(t), "t", 0)
	if err != nil || o != (Offsets{1, 2}) || path != "/silt/v1/topics/t/partitions/0/offsets" {
		t.Fatalf("%+v %v %s", o, err, path)
	}
}
