package client_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"silt/client"
	"silt/problem"
)

// trickyMessages cover null versus empty, bytes that are not UTF-8, JSON
// that is not compact, JSON with characters HTML escaping would change,
// and headers.
func trickyMessages() []client.Message {
	return []client.Message{
		{Key: nil, Value: []byte(`{"a":1}`)},
		{Key: []byte{}, Value: []byte{}},
		{Key: []byte("k"), Value: nil},
		{Key: []byte{0xff, 0x00, 0xfe}, Value: []byte{0x80, 0x81}},
		{Key: []byte(`"quoted"`), Value: []byte(`{"a": 1}`)},
		{Key: []byte(`42`), Value: []byte(`{"html":"<b>&amp;</b>","u":"\u2028é"}`)},
		{Value: []byte("plain text\twith tab"), Headers: []client.Header{
			{Key: "null", Value: nil}, {Key: "empty", Value: []byte{}}, {Key: "json", Value: []byte(`[1,2]`)}, {Key: "bin", Value: []byte{0xc3}},
		}},
		{Value: []byte(" leading space"), Timestamp: time.UnixMilli(1_600_000_000_123)},
	}
}

// sameBytes compares keeping nil and empty distinct.
func sameBytes(a, b []byte) bool {
	return (a == nil) == (b == nil) && bytes.Equal(a, b)
}

func checkRecords(t *testing.T, got []client.Record, want []client.Message, firstOffset int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	for i, r := range got {
		w := want[i]
		if r.Offset != firstOffset+int64(i) {
			t.Fatalf("record %d: offset %d, want %d", i, r.Offset, firstOffset+int64(i))
		}
		if !sameBytes(r.Key, w.Key) || !sameBytes(r.Value, w.Value) {
			t.Fatalf("record %d: key %q value %q, want key %q value %q (nil: %v %v, want %v %v)",
				i, r.Key, r.Value, w.Key, w.Value, r.Key == nil, r.Value == nil, w.Key == nil, w.Value == nil)
		}
		if !w.Timestamp.IsZero() && !r.Timestamp.Equal(w.Timestamp) {
			t.Fatalf("record %d: timestamp %v, want %v", i, r.Timestamp, w.Timestamp)
		}
		if r.Timestamp.IsZero() {
			t.Fatalf("record %d: no timestamp", i)
		}
		if len(r.Headers) != len(w.Headers) {
			t.Fatalf("record %d: headers %v, want %v", i, r.Headers, w.Headers)
		}
		for j, h := range r.Headers {
			if h.Key != w.Headers[j].Key || !sameBytes(h.Value, w.Headers[j].Value) {
				t.Fatalf("record %d header %d: %q=%q, want %q=%q", i, j, h.Key, h.Value, w.Headers[j].Key, w.Headers[j].Value)
			}
		}
	}
}

func TestFetchRoundTripsBytes(t *testing.T) {
	c, _ := start(t)
	ctx := testContext(t)
	if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	msgs := trickyMessages()
	if _, err := c.Produce(ctx, "t", msgs); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ProduceBinary(ctx, "t", msgs); err != nil {
		t.Fatal(err)
	}
	all := append(append([]client.Message{}, msgs...), msgs...)
	for _, enc := range []struct {
		name string
		opts client.FetchOptions
	}{
		{"batches", client.FetchOptions{}},
		{"binary", client.FetchOptions{Encoding: client.Binary}},
		{"json", client.FetchOptions{Encoding: client.JSON}},
		{"json-base64", client.FetchOptions{Encoding: client.JSON, Base64: true}},
		{"ndjson", client.FetchOptions{Encoding: client.NDJSON}},
		{"ndjson-base64", client.FetchOptions{Encoding: client.NDJSON, Base64: true}},
	} {
		t.Run(enc.name, func(t *testing.T) {
			res, err := c.Fetch(ctx, "t", 0, client.Earliest, enc.opts)
			if err != nil {
				t.Fatal(err)
			}
			checkRecords(t, res.Records, all, 0)
			if res.NextOffset != int64(len(all)) || res.HighWatermark != int64(len(all)) || res.LogStartOffset != 0 {
				t.Fatalf("next %d hwm %d log start %d", res.NextOffset, res.HighWatermark, res.LogStartOffset)
			}
			for _, r := range res.Records {
				if r.Partition != 0 {
					t.Fatalf("record partition %d", r.Partition)
				}
			}
		})
	}
}

func TestFetchPages(t *testing.T) {
	c, _ := start(t)
	ctx := testContext(t)
	if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "t", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	var msgs []client.Message
	for i := range 10 {
		msgs = append(msgs, client.Message{Partition: client.Partition(1), Value: fmt.Appendf(nil, "v%d", i)})
	}
	// Separate requests, so records span several commits.
	for i := 0; i < len(msgs); i += 4 {
		if _, err := c.ProduceBinary(ctx, "t", msgs[i:min(i+4, len(msgs))]); err != nil {
			t.Fatal(err)
		}
	}
	// Pages of at most 3 records, from the middle of a batch of 4: the
	// agent sends whole batches in the batches form, the client keeps 3.
	for _, enc := range []client.Encoding{client.Batches, client.Binary} {
		var got []client.Record
		offset := int64(3)
		for offset < 10 {
			res, err := c.Fetch(ctx, "t", 1, offset, client.FetchOptions{MaxRecords: 3, Encoding: enc})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Records) == 0 || len(res.Records) > 3 {
				t.Fatalf("encoding %d: fetch at %d: %d records with max_records=3", enc, offset, len(res.Records))
			}
			if res.NextOffset != res.Records[len(res.Records)-1].Offset+1 || res.HighWatermark != 10 {
				t.Fatalf("encoding %d: fetch at %d: next %d hwm %d", enc, offset, res.NextOffset, res.HighWatermark)
			}
			got = append(got, res.Records...)
			offset = res.NextOffset
		}
		checkRecords(t, got, msgs[3:], 3)
	}

	// Latest and past the end: no records, and the position to go on from.
	for _, off := range []int64{client.Latest, 10} {
		res, err := c.Fetch(ctx, "t", 1, off, client.FetchOptions{Wait: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Records) != 0 || res.NextOffset != 10 || res.HighWatermark != 10 {
			t.Fatalf("fetch at %d: %d records, next %d, hwm %d", off, len(res.Records), res.NextOffset, res.HighWatermark)
		}
	}
	// The other partition is empty.
	res, err := c.Fetch(ctx, "t", 0, client.Earliest, client.FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Records) != 0 || res.HighWatermark != 0 {
		t.Fatalf("empty partition: %+v", res)
	}
}

func TestFetchLongPollSeesNewRecords(t *testing.T) {
	c, _ := start(t)
	ctx := testContext(t)
	if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		res client.FetchResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := c.Fetch(ctx, "t", 0, 0, client.FetchOptions{Wait: 20 * time.Second})
		done <- result{res, err}
	}()
	if _, err := c.Produce(ctx, "t", []client.Message{{Value: []byte("hello")}}); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.res.Records) != 1 || string(r.res.Records[0].Value) != "hello" {
		t.Fatalf("long-poll returned %+v", r.res)
	}
}

func TestFetchErrors(t *testing.T) {
	c, _ := start(t)
	ctx := testContext(t)
	if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "t", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Fetch(ctx, "nope", 0, client.Earliest, client.FetchOptions{})
	if e := asError(t, err); e.Status != 404 || e.Code != problem.CodeTopicNotFound {
		t.Fatalf("missing topic: %v", err)
	}
	_, err = c.Fetch(ctx, "t", 2, client.Earliest, client.FetchOptions{})
	if e := asError(t, err); e.Status != 404 || e.Code != problem.CodePartitionNotFound {
		t.Fatalf("missing partition: %v", err)
	}
	if _, err := c.ListOffsets(ctx, "nope", 0); !client.IsCode(err, problem.CodeTopicNotFound) {
		t.Fatalf("offsets of a missing topic: %v", err)
	}
	if _, err := c.Fetch(ctx, "t", 0, -7, client.FetchOptions{}); err == nil {
		t.Fatal("a negative offset was accepted")
	}
}

func TestOffsets(t *testing.T) {
	c, _ := start(t)
	ctx := testContext(t)
	if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	o, err := c.ListOffsets(ctx, "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	if o != (client.Offsets{}) {
		t.Fatalf("empty partition: %+v", o)
	}
	if _, found, err := c.OffsetForTimestamp(ctx, "t", 0, time.UnixMilli(0)); err != nil || found {
		t.Fatalf("empty partition by time: found %v, err %v", found, err)
	}
	var msgs []client.Message
	for _, ts := range []int64{1000, 2000, 3000} {
		msgs = append(msgs, client.Message{Value: []byte("v"), Timestamp: time.UnixMilli(ts)})
	}
	if _, err := c.ProduceBinary(ctx, "t", msgs); err != nil {
		t.Fatal(err)
	}
	if o, err = c.ListOffsets(ctx, "t", 0); err != nil {
		t.Fatal(err)
	}
	if o != (client.Offsets{LogStartOffset: 0, HighWatermark: 3}) {
		t.Fatalf("offsets %+v", o)
	}
	for _, tc := range []struct {
		ts     int64
		offset int64
		found  bool
	}{{0, 0, true}, {1000, 0, true}, {1001, 1, true}, {2500, 2, true}, {3000, 2, true}, {3001, 0, false}} {
		off, found, err := c.OffsetForTimestamp(ctx, "t", 0, time.UnixMilli(tc.ts))
		if err != nil {
			t.Fatal(err)
		}
		if found != tc.found || (found && off != tc.offset) {
			t.Fatalf("timestamp %d: offset %d found %v, want %d %v", tc.ts, off, found, tc.offset, tc.found)
		}
	}
}

// collect ranges over a stream until n records arrived, returning them.
func collect(t *testing.T, seq func(func(client.Record, error) bool), n int) []client.Record {
	t.Helper()
	var out []client.Record
	for r, err := range seq {
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		out = append(out, r)
		if len(out) == n {
			break
		}
	}
	if len(out) != n {
		t.Fatalf("stream ended after %d records, want %d", len(out), n)
	}
	return out
}

func TestStreamTails(t *testing.T) {
	c, _ := start(t)
	ctx := testContext(t)
	if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	msgs := trickyMessages()
	if _, err := c.Produce(ctx, "t", msgs[:3]); err != nil {
		t.Fatal(err)
	}
	got := make(chan []client.Record, 1)
	go func() {
		var out []client.Record
		for r, err := range c.Stream(ctx, "t", 0, client.Earliest, client.StreamOptions{}) {
			if err != nil {
				t.Errorf("stream: %v", err)
				break
			}
			out = append(out, r)
			if len(out) == 3 {
				// Produce the rest only once the first ones arrived, so
				// they can only reach the stream live.
				go func() {
					if _, err := c.Produce(ctx, "t", msgs[3:]); err != nil {
						t.Errorf("produce: %v", err)
					}
				}()
			}
			if len(out) == len(msgs) {
				break
			}
		}
		got <- out
	}()
	checkRecords(t, <-got, msgs, 0)

	// From an offset in the middle.
	checkRecords(t, collect(t, c.Stream(ctx, "t", 0, 5, client.StreamOptions{}), 3), msgs[5:], 5)
}

func TestStreamStopsOnPermanentError(t *testing.T) {
	c, _ := start(t)
	ctx := testContext(t)
	var errs []error
	for _, err := range c.Stream(ctx, "nope", 0, client.Earliest, client.StreamOptions{}) {
		errs = append(errs, err)
	}
	if len(errs) != 1 || !client.IsCode(errs[0], problem.CodeTopicNotFound) {
		t.Fatalf("stream of a missing topic yielded %v", errs)
	}
}

// cuttingTransport ends every event stream after its first record event,
// as a dropped connection would, and notes the Last-Event-ID each stream
// request carried.
type cuttingTransport struct {
	mu     sync.Mutex
	lastID []string
}

func (ct *cuttingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil || !strings.HasSuffix(r.URL.Path, "/stream") || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	ct.mu.Lock()
	ct.lastID = append(ct.lastID, r.Header.Get("Last-Event-ID"))
	ct.mu.Unlock()
	pr, pw := io.Pipe()
	body := resp.Body
	go func() {
		defer body.Close()
		sc := bufio.NewScanner(body)
		sc.Buffer(nil, 1<<20)
		inRecord := false
		for sc.Scan() {
			line := sc.Text()
			if _, err := io.WriteString(pw, line+"\n"); err != nil {
				return
			}
			if line == "event: record" {
				inRecord = true
			}
			if line == "" && inRecord {
				pw.CloseWithError(errors.New("cutting transport: connection dropped"))
				return
			}
		}
		pw.CloseWithError(sc.Err())
	}()
	resp.Body = pr
	return resp, nil
}

func (ct *cuttingTransport) ids() []string {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return append([]string(nil), ct.lastID...)
}

func TestStreamResumesWithLastEventID(t *testing.T) {
	ct := &cuttingTransport{}
	c, _ := start(t, client.WithHTTPClient(&http.Client{Transport: ct}))
	ctx := testContext(t)
	if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	msgs := trickyMessages()[:4]
	if _, err := c.ProduceBinary(ctx, "t", msgs); err != nil {
		t.Fatal(err)
	}
	got := collect(t, c.Stream(ctx, "t", 0, client.Earliest, client.StreamOptions{MaxBackoff: 10 * time.Millisecond}), len(msgs))
	checkRecords(t, got, msgs, 0)
	ids := ct.ids()
	if want := []string{"", "0", "1", "2"}; fmt.Sprint(ids[:min(len(ids), 4)]) != fmt.Sprint(want) {
		t.Fatalf("stream requests carried Last-Event-ID %q, want %q first", ids, want)
	}
}

// Streams end when their context does, without an error.
func TestStreamEndsWithContext(t *testing.T) {
	c, _ := start(t)
	ctx := testContext(t)
	if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Produce(ctx, "t", []client.Message{{Value: []byte("only")}}); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := 0
	for _, err := range c.Stream(sctx, "t", 0, client.Earliest, client.StreamOptions{}) {
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		n++
		cancel() // then the stream waits for more until it sees this
	}
	if n != 1 {
		t.Fatalf("%d records", n)
	}
}

// An offset out of range fails with offset_out_of_range and the
// partition's range, or moves to the log start or the high watermark, as
// FetchOptions.OffsetReset and StreamOptions.OffsetReset say.
func TestOffsetReset(t *testing.T) {
	c, _ := start(t)
	ctx := testContext(t)
	if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	msgs := []client.Message{{Value: []byte("a")}, {Value: []byte("b")}, {Value: []byte("c")}}
	if _, err := c.Produce(ctx, "t", msgs); err != nil {
		t.Fatal(err)
	}
	for _, reset := range []string{"", client.ResetError} {
		_, err := c.Fetch(ctx, "t", 0, 4, client.FetchOptions{OffsetReset: reset})
		e := asError(t, err)
		if e.Status != 416 || e.Code != problem.CodeOffsetOutOfRange || e.LogStartOffset != 0 || e.HighWatermark != 3 {
			t.Fatalf("past the high watermark with reset %q: %v (%+v)", reset, err, e)
		}
	}
	res, err := c.Fetch(ctx, "t", 0, 1<<62, client.FetchOptions{OffsetReset: client.ResetEarliest})
	if err != nil || !res.Reset || res.ResetTo != 0 {
		t.Fatalf("reset to earliest: %+v, %v", res, err)
	}
	checkRecords(t, res.Records, msgs, 0)
	res, err = c.Fetch(ctx, "t", 0, 4, client.FetchOptions{OffsetReset: client.ResetLatest})
	if err != nil || !res.Reset || res.ResetTo != 3 || len(res.Records) != 0 || res.NextOffset != 3 {
		t.Fatalf("reset to latest: %+v, %v", res, err)
	}
	if res, err = c.Fetch(ctx, "t", 0, 3, client.FetchOptions{OffsetReset: client.ResetEarliest}); err != nil || res.Reset {
		t.Fatalf("at the high watermark: %+v, %v", res, err)
	}
	if _, err := c.Fetch(ctx, "t", 0, 0, client.FetchOptions{OffsetReset: "nearest"}); err == nil {
		t.Fatal("an unknown reset policy was accepted")
	}

	// A stream past the high watermark ends with the error, or starts
	// where the policy says.
	var errs []error
	for _, err := range c.Stream(ctx, "t", 0, 9, client.StreamOptions{}) {
		errs = append(errs, err)
	}
	if len(errs) != 1 || !client.IsCode(errs[0], problem.CodeOffsetOutOfRange) {
		t.Fatalf("stream past the high watermark yielded %v", errs)
	}
	checkRecords(t, collect(t, c.Stream(ctx, "t", 0, 9, client.StreamOptions{OffsetReset: client.ResetEarliest}), 3), msgs, 0)
	got := make(chan []client.Record, 1)
	go func() {
		var out []client.Record
		for r, err := range c.Stream(ctx, "t", 0, 9, client.StreamOptions{OffsetReset: client.ResetLatest}) {
			if err != nil {
				t.Errorf("stream: %v", err)
				break
			}
			got <- append(out, r)
			break
		}
	}()
	// The latest reset starts at 3: only a record produced later arrives.
	// Produce until one does (the stream may not be connected yet).
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case recs := <-got:
			if recs[0].Offset < 3 || string(recs[0].Value) != "d" {
				t.Fatalf("latest reset streamed %+v", recs)
			}
			return
		case <-tick.C:
			if _, err := c.Produce(ctx, "t", []client.Message{{Value: []byte("d")}}); err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatal("no record from the stream reset to latest")
		}
	}
}
