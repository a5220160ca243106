package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"silt/agent"
	"silt/binformat"
	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/problem"
	"silt/recordjson"
	"silt/segment"
)

// twoAgents starts two agents on one database and one MinIO bucket.
func twoAgents(t *testing.T, configure func(*agentd.Config)) (*agenttest.Agent, *agenttest.Agent) {
	t.Helper()
	bucket := agenttest.MinIOBucket(t)
	a := agenttest.Start(t, agenttest.Options{Bucket: bucket, Configure: configure})
	b := agenttest.Start(t, agenttest.Options{Bucket: bucket, DatabaseURL: a.DatabaseURL, Configure: configure})
	return a, b
}

// fetched is a record as read back through the JSON forms.
type fetched struct {
	Offset    int64               `json:"offset"`
	Timestamp int64               `json:"timestamp"`
	Key       json.RawMessage     `json:"key"`
	KeyB64    *string             `json:"key_b64"`
	Value     json.RawMessage     `json:"value"`
	ValueB64  *string             `json:"value_b64"`
	Headers   []recordjson.Header `json:"headers"`
}

type fetchResponse struct {
	Records        []fetched `json:"records"`
	NextOffset     int64     `json:"next_offset"`
	HighWatermark  int64     `json:"high_watermark"`
	LogStartOffset int64     `json:"log_start_offset"`
}

// raw returns the exact bytes a JSON form carries (nil for null).
func raw(t *testing.T, j json.RawMessage, b64 *string) []byte {
	t.Helper()
	if b64 != nil {
		b, err := base64.StdEncoding.DecodeString(*b64)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if j == nil {
		return nil
	}
	return []byte(j)
}

func getJSON(t *testing.T, url string, out any, hdr ...string) {
	t.Helper()
	status, _, b := call(t, "GET", url, "", nil, hdr...)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, status, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("GET %s: %v in %s", url, err, b)
	}
}

// Produce through one agent and fetch through another, byte for byte, in
// every response form, with headers and null keys and values.
func TestFetchThroughAnotherAgentByteForByte(t *testing.T) {
	t.Parallel()
	a, b := twoAgents(t, nil)
	createTopic(t, a, "events", 1, "")
	invalidUTF8 := []byte{0xff, 0xfe, 0x00, '{'}
	want := []sent{
		{key: []byte(`"user-1"`), value: []byte(`{"amount":5,"tags":["a","b"]}`), headers: []segment.Header{{Key: "trace", Value: []byte(`"abc"`)}, {Key: "nil", Value: nil}}},
		{key: nil, value: []byte(`42`)},
		{key: invalidUTF8, value: nil}, // a tombstone with a binary key
		{key: []byte{}, value: []byte{}},
		{key: []byte(` 1`), value: []byte("plain text, not JSON"), headers: []segment.Header{{Key: "bin", Value: invalidUTF8}}},
	}
	req := agent.ProduceRequest{Records: make([]recordjson.Record, len(want))}
	for i, w := range want {
		r := &req.Records[i]
		r.Partition = i32p(0)
		r.Timestamp = i64p(int64(1000 + i))
		if w.key != nil {
			r.KeyB64 = strp(base64.StdEncoding.EncodeToString(w.key))
		}
		if w.value != nil {
			r.ValueB64 = strp(base64.StdEncoding.EncodeToString(w.value))
		}
		for _, h := range w.headers {
			hj := recordjson.Header{Key: h.Key}
			if h.Value != nil {
				hj.ValueB64 = strp(base64.StdEncoding.EncodeToString(h.Value))
			}
			r.Headers = append(r.Headers, hj)
		}
	}
	produceJSON(t, a, "events", req)

	check := func(form string, got []fetched) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d records, want %d", form, len(got), len(want))
		}
		for i, g := range got {
			w := want[i]
			k, v := raw(t, g.Key, g.KeyB64), raw(t, g.Value, g.ValueB64)
			if g.Offset != int64(i) || g.Timestamp != int64(1000+i) || !bytes.Equal(k, w.key) || (k == nil) != (w.key == nil) ||
				!bytes.Equal(v, w.value) || (v == nil) != (w.value == nil) || len(g.Headers) != len(w.headers) {
				t.Fatalf("%s record %d: got offset %d ts %d key %q value %q headers %d; want key %q value %q", form, i, g.Offset, g.Timestamp, k, v, len(g.Headers), w.key, w.value)
			}
			for j, h := range g.Headers {
				hv := raw(t, h.Value, h.ValueB64)
				if h.Key != w.headers[j].Key || !bytes.Equal(hv, w.headers[j].Value) || (hv == nil) != (w.headers[j].Value == nil) {
					t.Fatalf("%s record %d header %d: %q=%q, want %q=%q", form, i, j, h.Key, hv, w.headers[j].Key, w.headers[j].Value)
				}
			}
		}
	}
	base := b.URL + "/v1/topics/events/partitions/0/records"
	var resp fetchResponse
	getJSON(t, base+"?offset=0", &resp)
	check("json", resp.Records)
	if resp.NextOffset != 5 || resp.HighWatermark != 5 || resp.LogStartOffset != 0 {
		t.Fatalf("offsets %+v", resp)
	}
	// Auto encoding shows compact JSON as JSON.
	if string(resp.Records[0].Value) != `{"amount":5,"tags":["a","b"]}` || resp.Records[4].ValueB64 == nil || resp.Records[4].Key != nil {
		t.Fatalf("auto encoding: value %s / %v, key %s", resp.Records[0].Value, resp.Records[4].ValueB64, resp.Records[4].Key)
	}
	var b64 fetchResponse
	getJSON(t, base+"?offset=0&encoding=base64", &b64)
	check("json base64", b64.Records)
	if b64.Records[0].Value != nil {
		t.Fatal("encoding=base64 still sent a JSON value")
	}

	status, hdr, body := call(t, "GET", base+"?offset=0", "", nil, "Accept", agent.MediaNDJSON)
	if status != http.StatusOK || hdr.Get(agent.HeaderHighWatermark) != "5" || hdr.Get(agent.HeaderNextOffset) != "5" {
		t.Fatalf("ndjson: %d %v", status, hdr)
	}
	var lines []fetched
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		var f fetched
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, f)
	}
	check("ndjson", lines)

	status, _, body = call(t, "GET", base+"?offset=0", "", nil, "Accept", binformat.MediaType)
	if status != http.StatusOK {
		t.Fatalf("binary: %d %s", status, body)
	}
	bin, err := binformat.DecodeFetch(body)
	if err != nil {
		t.Fatal(err)
	}
	var asFetched []fetched
	for _, r := range bin.Records {
		f := fetched{Offset: r.Offset, Timestamp: r.Timestamp}
		if r.Key != nil {
			f.KeyB64 = strp(base64.StdEncoding.EncodeToString(r.Key))
		}
		if r.Value != nil {
			f.ValueB64 = strp(base64.StdEncoding.EncodeToString(r.Value))
		}
		for _, h := range r.Headers {
			hj := recordjson.Header{Key: h.Key}
			if h.Value != nil {
				hj.ValueB64 = strp(base64.StdEncoding.EncodeToString(h.Value))
			}
			f.Headers = append(f.Headers, hj)
		}
		asFetched = append(asFetched, f)
	}
	check("binary", asFetched)

	// Reading from the middle, at the end, and past it (416, as in Kafka).
	getJSON(t, base+"?offset=3", &resp)
	if len(resp.Records) != 2 || resp.Records[0].Offset != 3 {
		t.Fatalf("from 3: %+v", resp.Records)
	}
	getJSON(t, base+"?offset=latest", &resp)
	if len(resp.Records) != 0 || resp.NextOffset != 5 {
		t.Fatalf("latest: %+v", resp)
	}
	status, hdr, body = call(t, "GET", base+"?offset=9", "", nil)
	wantProblem(t, status, hdr, body, http.StatusRequestedRangeNotSatisfiable, problem.CodeOffsetOutOfRange)
}

// counter reads a counter's value from a registry.
func counter(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			total := 0.0
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
			return total
		}
	}
	return 0
}

// A long-poll on one agent is woken by a commit made through another,
// rather than by its deadline: it returns the record.
func TestLongPollWakesOnCommitFromAnotherAgent(t *testing.T) {
	t.Parallel()
	a, b := twoAgents(t, nil)
	createTopic(t, a, "t", 1, "")
	<-b.Notifier().Ready()
	type result struct {
		resp fetchResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		status, _, body := call(t, "GET", b.URL+"/v1/topics/t/partitions/0/records?offset=0&wait_ms=30000", "", nil)
		if status != http.StatusOK {
			r.err = fmt.Errorf("status %d: %s", status, body)
		} else {
			r.err = json.Unmarshal(body, &r.resp)
		}
		done <- r
	}()
	// Produce only once the poll is parked.
	waitUntil(t, func() bool { return counter(t, b.Metrics(), "silt_fetch_waits_total") >= 1 })
	select {
	case r := <-done:
		t.Fatalf("long-poll returned before any commit: %+v %v", r.resp, r.err)
	default:
	}
	produceJSON(t, a, "t", agent.ProduceRequest{Records: []recordjson.Record{{Value: json.RawMessage(`"wake"`)}}})
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.resp.Records) != 1 || string(r.resp.Records[0].Value) != `"wake"` {
		t.Fatalf("long-poll returned %+v; a wake by the commit returns the record, a deadline returns none", r.resp)
	}
}

// sseEvent is one parsed Server-Sent Event.
type sseEvent struct {
	id, event, data string
}

// openStream starts an SSE request and returns a channel of events; it
// ends when the stream ends.
func openStream(t *testing.T, ctx context.Context, url string, hdr ...string) (<-chan sseEvent, *http.Response) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set("Accept", "text/event-stream")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("stream content type %q", ct)
	}
	out := make(chan sseEvent, 100)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.event != "" || ev.data != "" {
					out <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				out <- sseEvent{event: "comment", data: line}
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			}
		}
	}()
	return out, resp
}

func nextRecord(t *testing.T, events <-chan sseEvent) sseEvent {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("stream ended")
			}
			if ev.event == "record" {
				return ev
			}
		case <-timeout:
			t.Fatal("no record event within 60s")
		}
	}
}

// A tail opened on one agent sees records produced through another,
// resumes with Last-Event-ID, sends heartbeats and ends cleanly when its
// agent shuts down.
func TestStreamTailResumeAndShutdown(t *testing.T) {
	t.Parallel()
	a, b := twoAgents(t, func(c *agentd.Config) { c.HTTP.SSEHeartbeat = 50 * time.Millisecond })
	createTopic(t, a, "t", 1, "")
	for i := 0; i < 5; i++ {
		produceJSON(t, a, "t", agent.ProduceRequest{Records: []recordjson.Record{{Value: json.RawMessage(strconv.Itoa(i))}}})
	}
	ctx, cancel := context.WithCancel(context.Background())
	events, _ := openStream(t, ctx, b.URL+"/v1/topics/t/partitions/0/stream?offset=0")
	for i := 0; i < 5; i++ {
		ev := nextRecord(t, events)
		if ev.id != strconv.Itoa(i) || !strings.Contains(ev.data, fmt.Sprintf(`"value":%d`, i)) {
			t.Fatalf("event %d: %+v", i, ev)
		}
	}
	// Live: a record produced through the other agent arrives.
	produceJSON(t, a, "t", agent.ProduceRequest{Records: []recordjson.Record{{Value: json.RawMessage(`"live"`)}}})
	if ev := nextRecord(t, events); ev.id != "5" || !strings.Contains(ev.data, `"live"`) {
		t.Fatalf("live event %+v", ev)
	}
	// Heartbeats flow while idle.
	sawComment := false
	for !sawComment {
		ev, ok := <-events
		if !ok {
			t.Fatal("stream ended while idle")
		}
		sawComment = ev.event == "comment" && strings.Contains(ev.data, "keepalive")
	}
	cancel()

	// Resume after offset 3 with Last-Event-ID (it overrides ?offset).
	events, _ = openStream(t, context.Background(), b.URL+"/v1/topics/t/partitions/0/stream?offset=0", "Last-Event-ID", "3")
	if ev := nextRecord(t, events); ev.id != "4" {
		t.Fatalf("resume after 3 began at %s", ev.id)
	}
	if ev := nextRecord(t, events); ev.id != "5" {
		t.Fatalf("resume: second event %s", ev.id)
	}
	// Shutdown ends the stream with an end event.
	b.Stop(t)
	sawEnd := false
	for ev := range events {
		if ev.event == "end" {
			sawEnd = true
		}
	}
	if !sawEnd {
		t.Fatal("stream closed without an end event on shutdown")
	}
}

func TestOffsetsAndTimestampLookup(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Bucket: agenttest.MinIOBucket(t)})
	createTopic(t, a, "t", 1, "")
	// Separate requests make separate chunks; timestamps need not be ordered.
	for _, ts := range []int64{1000, 2000, 1500, 3000, 2500} {
		produceJSON(t, a, "t", agent.ProduceRequest{Records: []recordjson.Record{{Value: json.RawMessage(`1`), Timestamp: i64p(ts)}}})
	}
	base := a.URL + "/v1/topics/t/partitions/0/offsets"
	var st map[string]int64
	getJSON(t, base, &st)
	if st["log_start_offset"] != 0 || st["high_watermark"] != 5 {
		t.Fatalf("offsets %v", st)
	}
	cases := []struct {
		ts   int64
		want *int64
	}{
		{0, i64p(0)}, {1000, i64p(0)}, {1001, i64p(1)}, {1600, i64p(1)}, {2001, i64p(3)}, {2600, i64p(3)}, {3000, i64p(3)}, {3001, nil},
	}
	for _, c := range cases {
		var got struct {
			Timestamp int64  `json:"timestamp"`
			Offset    *int64 `json:"offset"`
		}
		getJSON(t, fmt.Sprintf("%s?timestamp=%d", base, c.ts), &got)
		if (got.Offset == nil) != (c.want == nil) || (got.Offset != nil && *got.Offset != *c.want) || got.Timestamp != c.ts {
			t.Errorf("timestamp %d: offset %v, want %v", c.ts, got.Offset, c.want)
		}
	}
}

// max_bytes never splits a record; a single record larger than max_bytes
// is still returned whole; max_records caps the count. Records are priced
// by their encoded size: 5,025 bytes for a 5,000-byte value.
func TestFetchMaxBytesAndRecords(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{})
	createTopic(t, a, "t", 1, "")
	val := `"` + strings.Repeat("v", 4998) + `"` // 5000 bytes
	var recs []recordjson.Record
	for i := 0; i < 4; i++ {
		recs = append(recs, recordjson.Record{Value: json.RawMessage(val)})
	}
	produceJSON(t, a, "t", agent.ProduceRequest{Records: recs})
	base := a.URL + "/v1/topics/t/partitions/0/records?offset=0"
	for _, c := range []struct {
		query string
		want  int
	}{
		{"&max_bytes=1", 1}, {"&max_bytes=5025", 1}, {"&max_bytes=10049", 1}, {"&max_bytes=10050", 2}, {"&max_bytes=12000", 2},
		{"&max_records=3", 3}, {"&max_records=3&max_bytes=10050", 2}, {"", 4},
	} {
		var resp fetchResponse
		getJSON(t, base+c.query, &resp)
		if len(resp.Records) != c.want || resp.NextOffset != int64(c.want) {
			t.Errorf("%q: %d records next %d, want %d", c.query, len(resp.Records), resp.NextOffset, c.want)
		}
	}
}

func TestFetchBadParametersAndRange(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{})
	createTopic(t, a, "t", 1, "")
	produceJSON(t, a, "t", agent.ProduceRequest{Records: []recordjson.Record{{Value: json.RawMessage(`1`)}, {Value: json.RawMessage(`2`)}}})
	base := a.URL + "/v1/topics/t/partitions/0"
	for _, c := range []struct {
		path   string
		status int
		code   problem.Code
	}{
		{"/records?offset=-1", 400, problem.CodeInvalidParameter},
		{"/records?offset=abc", 400, problem.CodeInvalidParameter},
		{"/records?max_records=0", 400, problem.CodeInvalidParameter},
		{"/records?max_bytes=0", 400, problem.CodeInvalidParameter},
		{"/records?max_bytes=x", 400, problem.CodeInvalidParameter},
		{"/records?wait_ms=99999999", 400, problem.CodeInvalidParameter},
		{"/records?encoding=hex", 400, problem.CodeInvalidParameter},
		{"/offsets?timestamp=yesterday", 400, problem.CodeInvalidParameter},
		{"/stream?offset=-4", 400, problem.CodeInvalidParameter},
	} {
		status, hdr, b := call(t, "GET", base+c.path, "", nil)
		wantProblem(t, status, hdr, b, c.status, c.code)
	}
	status, hdr, b := call(t, "GET", a.URL+"/v1/topics/t/partitions/1/records", "", nil)
	wantProblem(t, status, hdr, b, 404, problem.CodePartitionNotFound)
	status, hdr, b = call(t, "GET", a.URL+"/v1/topics/none/partitions/0/records", "", nil)
	wantProblem(t, status, hdr, b, 404, problem.CodeTopicNotFound)

	// Below the log start (as after retention): 416 with the offsets.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, a.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "UPDATE partitions SET log_start_offset = 1"); err != nil {
		t.Fatal(err)
	}
	status, hdr, b = call(t, "GET", base+"/records?offset=0", "", nil)
	p := wantProblem(t, status, hdr, b, http.StatusRequestedRangeNotSatisfiable, problem.CodeOffsetOutOfRange)
	if p.LogStartOffset == nil || *p.LogStartOffset != 1 || p.HighWatermark == nil || *p.HighWatermark != 2 {
		t.Fatalf("416 problem without offsets: %s", b)
	}
	status, hdr, b = call(t, "GET", base+"/stream?offset=0", "", nil, "Accept", "text/event-stream")
	wantProblem(t, status, hdr, b, http.StatusRequestedRangeNotSatisfiable, problem.CodeOffsetOutOfRange)
	var resp fetchResponse
	getJSON(t, base+"/records?offset=earliest", &resp)
	if len(resp.Records) != 1 || resp.Records[0].Offset != 1 {
		t.Fatalf("earliest after the log start moved: %+v", resp)
	}

	// Past the high watermark (2): 416 with the offsets, in every form,
	// as in Kafka; no record will ever be there. At it, an empty page.
	for _, q := range []string{"/records?offset=3", "/records?offset=9223372036854775807", "/records?offset=3&wait_ms=30000"} {
		for _, accept := range []string{"application/json", "application/x-ndjson", binformat.MediaType} {
			status, hdr, b := call(t, "GET", base+q, "", nil, "Accept", accept)
			p := wantProblem(t, status, hdr, b, http.StatusRequestedRangeNotSatisfiable, problem.CodeOffsetOutOfRange)
			if p.LogStartOffset == nil || *p.LogStartOffset != 1 || p.HighWatermark == nil || *p.HighWatermark != 2 ||
				!strings.Contains(p.Detail, "past the high watermark 2") {
				t.Fatalf("%s (%s): 416 without the offsets: %s", q, accept, b)
			}
		}
	}
	status, hdr, b = call(t, "GET", base+"/stream?offset=3", "", nil, "Accept", "text/event-stream")
	wantProblem(t, status, hdr, b, http.StatusRequestedRangeNotSatisfiable, problem.CodeOffsetOutOfRange)
	status, hdr, b = call(t, "GET", base+"/stream", "", nil, "Accept", "text/event-stream", "Last-Event-ID", "2")
	wantProblem(t, status, hdr, b, http.StatusRequestedRangeNotSatisfiable, problem.CodeOffsetOutOfRange)
	getJSON(t, base+"/records?offset=2", &resp)
	if len(resp.Records) != 0 || resp.NextOffset != 2 || resp.HighWatermark != 2 {
		t.Fatalf("at the high watermark: %+v", resp)
	}
}
