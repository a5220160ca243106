package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"silt/agent"
	"silt/binformat"
	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/problem"
	"silt/recordjson"
	"silt/segment"
)

// batchRecord is a record read back from a batches response.
type batchRecord struct {
	offset  int64
	ts      int64
	key     []byte
	value   []byte
	headers []segment.Header
}

// fetchBatches GETs a partition's records in the batches form and checks
// the response: its content type and length, its framing, every batch's
// CRC and base offset. It returns the header, the batches' codecs and the
// records from the header's offset on (those before it, in the first
// batch, skipped as a client must).
func fetchBatches(t *testing.T, url string, hdr ...string) (binformat.BatchesHeader, []segment.Compression, []batchRecord) {
	t.Helper()
	status, h, body := call(t, "GET", url, "", nil, append([]string{"Accept", binformat.BatchesMediaType}, hdr...)...)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, status, body)
	}
	if ct := h.Get("Content-Type"); ct != binformat.BatchesMediaType {
		t.Fatalf("GET %s: content type %q", url, ct)
	}
	if cl := h.Get("Content-Length"); cl != strconv.Itoa(len(body)) {
		t.Fatalf("GET %s: content length %q for %d bytes", url, cl, len(body))
	}
	resp, err := binformat.DecodeBatches(body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	var codecs []segment.Compression
	var recs []batchRecord
	next := int64(-1)
	for i, raw := range resp.Batches {
		b, err := segment.DecodeBatch(raw, segment.DecodeOptions{})
		if err != nil {
			t.Fatalf("GET %s: batch %d: %v", url, i, err)
		}
		if i == 0 && (b.BaseOffset > resp.Offset || b.LastOffset() < resp.Offset) {
			t.Fatalf("GET %s: the first batch [%d, %d] does not hold offset %d", url, b.BaseOffset, b.LastOffset(), resp.Offset)
		}
		if i > 0 && b.BaseOffset < next {
			t.Fatalf("GET %s: batch %d at %d overlaps the one before (next %d)", url, i, b.BaseOffset, next)
		}
		next = b.LastOffset() + 1
		codecs = append(codecs, b.Compression())
		for _, r := range b.Records {
			off := b.BaseOffset + int64(r.OffsetDelta)
			if off < resp.Offset {
				continue
			}
			recs = append(recs, batchRecord{off, r.Timestamp, bytes.Clone(r.Key), bytes.Clone(r.Value), r.Headers})
		}
	}
	if len(resp.Batches) > 0 && resp.NextOffset != next {
		t.Fatalf("GET %s: next offset %d, the last batch ends at %d", url, resp.NextOffset, next-1)
	}
	return resp.BatchesHeader, codecs, recs
}

// Batches that Kafka clients compressed with every codec are served as
// stored, and decode to what was produced from any offset; Accept picks
// the form.
func TestFetchBatchesOfEveryCodec(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Kafka: true, Configure: func(c *agentd.Config) {
		c.Kafka.RawBatchMinBytes = 1 // every compressed client batch is stored as sent
	}})
	codecs := []struct {
		name  string
		codec kgo.CompressionCodec
		want  segment.Compression
	}{
		{"gzip", kgo.GzipCompression(), segment.CompressionGzip},
		{"snappy", kgo.SnappyCompression(), segment.CompressionSnappy},
		{"lz4", kgo.Lz4Compression(), segment.CompressionLZ4},
		{"zstd", kgo.ZstdCompression(), segment.CompressionZstd},
		{"none", kgo.NoCompression(), -1}, // compressed by the agent, or kept raw: either
	}
	createTopic(t, a, "codecs", len(codecs), "")
	const batches, perBatch = 3, 4
	for p, c := range codecs {
		cl, err := kgo.NewClient(kgo.SeedBrokers(a.KafkaAddr), kgo.ProducerBatchCompression(c.codec),
			kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RetryTimeout(20*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for b := range batches {
			var recs []*kgo.Record
			for i := range perBatch {
				n := b*perBatch + i
				recs = append(recs, &kgo.Record{Topic: "codecs", Partition: int32(p), Timestamp: time.UnixMilli(int64(5000 + n)),
					Key: []byte(fmt.Sprintf("k%d", n)), Value: bytes.Repeat([]byte(fmt.Sprintf("%s-%d ", c.name, n)), 50),
					Headers: []kgo.RecordHeader{{Key: "h", Value: []byte{byte(n)}}}})
			}
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
		}
		cancel()
		cl.Close()
	}

	for p, c := range codecs {
		base := fmt.Sprintf("%s/v1/topics/codecs/partitions/%d/records", a.URL, p)
		for _, from := range []int64{0, 1, perBatch - 1, perBatch, 2*perBatch + 2} {
			h, got, recs := fetchBatches(t, fmt.Sprintf("%s?offset=%d", base, from))
			if h.Partition != int32(p) || h.Offset != from || h.NextOffset != batches*perBatch || h.HighWatermark != batches*perBatch || h.LogStartOffset != 0 {
				t.Fatalf("%s from %d: header %+v", c.name, from, h)
			}
			if int64(len(got)) != batches-from/perBatch {
				t.Fatalf("%s from %d: %d batches", c.name, from, len(got))
			}
			for _, codec := range got {
				if c.want >= 0 && codec != c.want {
					t.Fatalf("%s: a batch stored as %v", c.name, codec)
				}
			}
			if int64(len(recs)) != batches*perBatch-from {
				t.Fatalf("%s from %d: %d records", c.name, from, len(recs))
			}
			for i, r := range recs {
				n := from + int64(i)
				want := bytes.Repeat([]byte(fmt.Sprintf("%s-%d ", c.name, n)), 50)
				if r.offset != n || r.ts != 5000+n || string(r.key) != fmt.Sprintf("k%d", n) || !bytes.Equal(r.value, want) ||
					len(r.headers) != 1 || r.headers[0].Key != "h" || !bytes.Equal(r.headers[0].Value, []byte{byte(n)}) {
					t.Fatalf("%s from %d: record %d is %+v", c.name, from, i, r)
				}
			}
		}
		// max_records stops after the batch that reaches it; max_bytes
		// after the first batch when it alone is larger.
		if h, got, _ := fetchBatches(t, base+"?offset=1&max_records="+strconv.Itoa(perBatch)); len(got) != 2 || h.NextOffset != 2*perBatch {
			t.Fatalf("%s: max_records: %d batches, next %d", c.name, len(got), h.NextOffset)
		}
		if h, got, _ := fetchBatches(t, base+"?offset=0&max_bytes=1"); len(got) != 1 || h.NextOffset != perBatch {
			t.Fatalf("%s: max_bytes=1: %d batches, next %d", c.name, len(got), h.NextOffset)
		}
	}

	// Content negotiation: the highest q among the forms named wins, the
	// batches form on a tie; JSON when none is named.
	url := a.URL + "/v1/topics/codecs/partitions/0/records?offset=0"
	for accept, want := range map[string]string{
		binformat.BatchesMediaType:                                                binformat.BatchesMediaType,
		binformat.MediaType + ", " + binformat.BatchesMediaType:                   binformat.BatchesMediaType,
		binformat.MediaType + ", " + binformat.BatchesMediaType + ";q=0.5":        binformat.MediaType,
		agent.MediaNDJSON + ";q=0.9, " + binformat.BatchesMediaType + ";q=0.8":    agent.MediaNDJSON,
		binformat.BatchesMediaType + ";q=0":                                       "application/json",
		binformat.BatchesMediaType + ";q=oops, " + binformat.MediaType + ";q=0.1": binformat.MediaType,
		"*/*":              "application/json",
		"application/json": "application/json",
		"":                 "application/json",
	} {
		status, h, body := call(t, "GET", url, "", nil, "Accept", accept)
		if status != http.StatusOK || h.Get("Content-Type") != want {
			t.Errorf("Accept %q: %d %q, want %q (%.60s)", accept, status, h.Get("Content-Type"), want, body)
		}
	}
}

// A merged row holds several batches: each is served on its own, those
// wholly before the offset are left out.
func TestFetchBatchesOfMergedRows(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Configure: func(c *agentd.Config) {
		c.Ownership.Janitor.MergeInterval = 100 * time.Millisecond
		c.Ownership.Janitor.MergeMinAge = 0
		c.Ownership.Janitor.MergeMinChunks = 2
	}})
	createTopic(t, a, "m", 1, "")
	const flushes, perFlush = 6, 3
	for f := range flushes {
		var recs []recordjson.Record
		for i := range perFlush {
			recs = append(recs, recordjson.Record{Value: json.RawMessage(strconv.Itoa(f*perFlush + i))})
		}
		produceJSON(t, a, "m", agent.ProduceRequest{Records: recs})
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, a.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	waitUntil(t, func() bool {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM batches WHERE batch_count > 1`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
	for from := int64(0); from < flushes*perFlush; from++ {
		h, got, recs := fetchBatches(t, fmt.Sprintf("%s/v1/topics/m/partitions/0/records?offset=%d", a.URL, from))
		if h.NextOffset != flushes*perFlush || int64(len(got)) != flushes-from/perFlush || int64(len(recs)) != flushes*perFlush-from {
			t.Fatalf("from %d: %d batches, %d records, next %d", from, len(got), len(recs), h.NextOffset)
		}
		for i, r := range recs {
			if n := from + int64(i); r.offset != n || string(r.value) != strconv.FormatInt(n, 10) {
				t.Fatalf("from %d: record %d is %d %q", from, i, r.offset, r.value)
			}
		}
	}
}

// The batches form keeps the bounds of every fetch: 416 out of range, 429
// when the in-flight bytes are taken, 404 for a topic deleted under a
// long-poll, 403 without consume, and a long-poll that wakes on a commit.
func TestFetchBatchesBounds(t *testing.T) {
	t.Parallel()
	a, admin := secureAgent(t, agenttest.Options{Configure: func(c *agentd.Config) {
		c.Fetch.MaxInflightBytes = 8 << 20
		// Too small for a span of these objects: batches are read by
		// range and held in the in-flight budget (batches in a span hold
		// the span instead, bounded by the object-span cache).
		c.Fetch.ObjectCacheBytes = 1 << 20
		c.HTTP.MaxWait = 10 * time.Minute
	}})
	mustAs(t, http.StatusCreated, admin, "POST", a.URL+"/v1/topics", map[string]any{"name": "b", "partitions": 2})
	// Two batches of 6 MiB of random bytes: more than socket buffers hold.
	for range 2 {
		var recs []map[string]any
		for range 12 {
			v := make([]byte, 512<<10)
			_, _ = rand.Read(v)
			recs = append(recs, map[string]any{"value_b64": base64.StdEncoding.EncodeToString(v)})
		}
		mustAs(t, http.StatusOK, admin, "POST", a.URL+"/v1/topics/b/partitions/0/records", map[string]any{"records": recs})
	}
	auth := []string{"Authorization", "Bearer " + admin}
	base := a.URL + "/v1/topics/b/partitions/0/records"

	for _, q := range []string{"?offset=25", "?offset=25&wait_ms=30000"} {
		status, hdr, body := call(t, "GET", base+q, "", nil, append(auth, "Accept", binformat.BatchesMediaType)...)
		p := wantProblem(t, status, hdr, body, http.StatusRequestedRangeNotSatisfiable, problem.CodeOffsetOutOfRange)
		if p.HighWatermark == nil || *p.HighWatermark != 24 {
			t.Fatalf("%s: %s", q, body)
		}
	}
	if h, got, _ := fetchBatches(t, base+"?offset=24", auth...); len(got) != 0 || h.NextOffset != 24 || h.HighWatermark != 24 {
		t.Fatalf("at the high watermark: %+v, %d batches", h, len(got))
	}

	// A client that does not read holds its response's bytes: with the
	// budget taken, the next fetch is refused with 429.
	hold := dialNonReader(t, a, "/v1/topics/b/partitions/0/records?offset=0&max_bytes=1", append(auth, "Accept", binformat.BatchesMediaType)...)
	defer hold.Close()
	waitUntil(t, func() bool { return metricValue(t, a, "silt_fetch_inflight_bytes") > 6<<20 })
	status, hdr, body := call(t, "GET", base+"?offset=12", "", nil, append(auth, "Accept", binformat.BatchesMediaType)...)
	wantProblem(t, status, hdr, body, http.StatusTooManyRequests, problem.CodeBackpressure)
	hold.Close()
	waitUntil(t, func() bool { return metricValue(t, a, "silt_fetch_inflight_bytes") == 0 })

	// A key that may describe but not consume is refused before anything.
	reader, _ := newKey(t, a, admin, uniq("describer"), "describe:topic:b")
	status, hdr, body = call(t, "GET", base+"?offset=0", "", nil, "Authorization", "Bearer "+reader, "Accept", binformat.BatchesMediaType)
	wantProblem(t, status, hdr, body, http.StatusForbidden, problem.CodeForbidden)

	// A long-poll wakes on a commit, and ends 404 when the topic goes.
	woke := make(chan []batchRecord, 1)
	go func() {
		_, _, recs := fetchBatches(t, a.URL+"/v1/topics/b/partitions/1/records?offset=0&wait_ms=600000", auth...)
		woke <- recs
	}()
	waitUntil(t, func() bool { return metricValue(t, a, "silt_fetch_waits_total") >= 1 })
	mustAs(t, http.StatusOK, admin, "POST", a.URL+"/v1/topics/b/partitions/1/records", map[string]any{"records": []map[string]any{{"value": 7}}})
	if recs := <-woke; len(recs) != 1 || string(recs[0].value) != "7" {
		t.Fatalf("long-poll woke with %+v", recs)
	}
	gone := make(chan error, 1)
	go func() {
		status, hdr, body := call(t, "GET", a.URL+"/v1/topics/b/partitions/1/records?offset=1&wait_ms=600000", "", nil, append(auth, "Accept", binformat.BatchesMediaType)...)
		if status != http.StatusNotFound || hdr.Get("Content-Type") != problem.MediaType {
			gone <- fmt.Errorf("long-poll of a deleted topic: %d %s", status, body)
			return
		}
		gone <- nil
	}()
	waitUntil(t, func() bool { return metricValue(t, a, "silt_fetch_waits_total") >= 2 })
	mustAs(t, http.StatusNoContent, admin, "DELETE", a.URL+"/v1/topics/b", nil)
	if err := <-gone; err != nil {
		t.Fatal(err)
	}
}
