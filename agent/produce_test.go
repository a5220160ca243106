package agent_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"silt/agent"
	"silt/auth"
	"silt/binformat"
	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/objectstore"
	"silt/objectstore/objectstoretest"
	"silt/problem"
	"silt/recordjson"
	"silt/segment"
)

type sent struct {
	key, value []byte
	headers    []segment.Header
}

// 10,000 records over 32 partitions from 8 concurrent clients: offsets are
// unique and contiguous per partition, and every record reads back byte for
// byte by decoding the segment objects through the index.
func TestProduceConcurrentClientsReadBackThroughIndex(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Bucket: agenttest.MinIOBucket(t)})
	createTopic(t, a, "load", 32, "")
	const clients, perClient, perRequest = 8, 1250, 50
	var mu sync.Mutex
	got := map[int32]map[int64]sent{}
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for r := 0; r < perClient/perRequest; r++ {
				batch := make([]sent, perRequest)
				for i := range batch {
					v := make([]byte, rng.IntN(300))
					for j := range v {
						v[j] = byte(rng.UintN(256))
					}
					batch[i].value = v
					if i%7 != 0 {
						batch[i].key = []byte(fmt.Sprintf("c%d-r%d-%d", c, r, i))
					}
					if i%3 == 0 {
						batch[i].headers = []segment.Header{{Key: "h", Value: []byte{byte(i)}}, {Key: "nil", Value: nil}}
					}
				}
				offsets, err := produceBatch(a, batch, c%2 == 0)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for i, o := range offsets {
					if got[o.Partition] == nil {
						got[o.Partition] = map[int64]sent{}
					}
					if _, dup := got[o.Partition][o.Offset]; dup {
						t.Errorf("offset %d of partition %d acknowledged twice", o.Offset, o.Partition)
					}
					got[o.Partition][o.Offset] = batch[i]
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	total := 0
	ctx := context.Background()
	top, err := a.Store().GetTopic(ctx, "load")
	if err != nil {
		t.Fatal(err)
	}
	for p := int32(0); p < 32; p++ {
		recs := got[p]
		total += len(recs)
		// Offsets are 0..n-1 with no gap.
		for o := int64(0); o < int64(len(recs)); o++ {
			if _, ok := recs[o]; !ok {
				t.Fatalf("partition %d: offset %d missing among %d", p, o, len(recs))
			}
		}
		// Decode the objects through the index.
		st, refs, err := a.Store().LookupBatches(ctx, top.ID, p, 0, 1<<40, 100_000)
		if err != nil {
			t.Fatal(err)
		}
		if st.HighWatermark != int64(len(recs)) {
			t.Fatalf("partition %d: high watermark %d, acknowledged %d", p, st.HighWatermark, len(recs))
		}
		next := int64(0)
		for _, ref := range refs {
			if ref.BaseOffset != next {
				t.Fatalf("partition %d: chunk at %d, expected %d", p, ref.BaseOffset, next)
			}
			rc, err := a.Raw.GetRange(ctx, ref.SegmentKey, ref.ByteOffset, int64(ref.ByteLength))
			if err != nil {
				t.Fatal(err)
			}
			chunk, _ := io.ReadAll(rc)
			rc.Close()
			b, err := segment.DecodeBatch(chunk, segment.DecodeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range b.Records {
				off := ref.BaseOffset + int64(r.OffsetDelta)
				want := recs[off]
				if !bytes.Equal(r.Key, want.key) || (r.Key == nil) != (want.key == nil) || !bytes.Equal(r.Value, want.value) || !sameHeaders(r.Headers, want.headers) {
					t.Fatalf("partition %d offset %d: read %q/%x, produced %q/%x", p, off, r.Key, r.Value, want.key, want.value)
				}
			}
			next = ref.LastOffset + 1
		}
		if next != int64(len(recs)) {
			t.Fatalf("partition %d: index covers %d offsets, want %d", p, next, len(recs))
		}
	}
	if total != clients*perClient {
		t.Fatalf("%d records acknowledged, want %d", total, clients*perClient)
	}
}

func sameHeaders(a, b []segment.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !bytes.Equal(a[i].Value, b[i].Value) || (a[i].Value == nil) != (b[i].Value == nil) {
			return false
		}
	}
	return true
}

// produceBatch sends records in the binary form or as JSON with base64.
func produceBatch(a *agenttest.Agent, batch []sent, binary bool) ([]agent.RecordOffset, error) {
	var body []byte
	ct := "application/json"
	if binary {
		req := binformat.Request{}
		for _, s := range batch {
			r := binformat.Record{Partition: -1, Timestamp: -1, Key: s.key, Value: s.value}
			for _, h := range s.headers {
				r.Headers = append(r.Headers, binformat.Header{Key: h.Key, Value: h.Value})
			}
			req.Records = append(req.Records, r)
		}
		body, ct = binformat.AppendRequest(nil, &req), binformat.MediaType
	} else {
		req := agent.ProduceRequest{}
		for _, s := range batch {
			r := recordjson.Record{ValueB64: strp(base64.StdEncoding.EncodeToString(s.value))}
			if s.key != nil {
				r.KeyB64 = strp(base64.StdEncoding.EncodeToString(s.key))
			}
			for _, h := range s.headers {
				hj := recordjson.Header{Key: h.Key}
				if h.Value != nil {
					hj.ValueB64 = strp(base64.StdEncoding.EncodeToString(h.Value))
				}
				r.Headers = append(r.Headers, hj)
			}
			req.Records = append(req.Records, r)
		}
		body, _ = json.Marshal(req)
	}
	resp, err := http.Post(a.URL+"/v1/topics/load/records", ct, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("produce: %d %s", resp.StatusCode, b)
	}
	var out agent.ProduceResponse
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	if len(out.Offsets) != len(batch) {
		return nil, fmt.Errorf("%d offsets for %d records", len(out.Offsets), len(batch))
	}
	return out.Offsets, nil
}

// Stopping an agent under load (what SIGTERM does) loses no acknowledged
// record: each one is read back through another agent.
func TestShutdownDuringLoadKeepsAcknowledged(t *testing.T) {
	t.Parallel()
	bucket := agenttest.MinIOBucket(t)
	a := agenttest.Start(t, agenttest.Options{Bucket: bucket, Configure: func(c *agentd.Config) { c.Batcher.Linger = 20 * time.Millisecond }})
	createTopic(t, a, "load", 4, "")
	type ack struct {
		p   int32
		off int64
		val string
	}
	var (
		mu    sync.Mutex
		acked []ack
		seq   atomic.Int64
		wg    sync.WaitGroup
		stop  = make(chan struct{})
	)
	for c := 0; c < 6; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				batch := make([]sent, 10)
				for i := range batch {
					batch[i].value = []byte(fmt.Sprintf("v%d", seq.Add(1)))
				}
				offs, err := produceBatch(a, batch, true)
				if err != nil {
					continue // refused or cut off by the shutdown: not acknowledged
				}
				mu.Lock()
				for i, o := range offs {
					acked = append(acked, ack{o.Partition, o.Offset, string(batch[i].value)})
				}
				mu.Unlock()
			}
		}()
	}
	waitUntil(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) > 500 })
	a.Stop(t)
	close(stop)
	wg.Wait()

	b := agenttest.Start(t, agenttest.Options{DatabaseURL: a.DatabaseURL, Bucket: bucket})
	byPart := map[int32]map[int64]string{}
	for _, k := range acked {
		if byPart[k.p] == nil {
			byPart[k.p] = map[int64]string{}
		}
		byPart[k.p][k.off] = k.val
	}
	for p, want := range byPart {
		read := fetchAll(t, b, "load", p)
		for off, val := range want {
			if got, ok := read[off]; !ok || string(got.value) != val {
				t.Fatalf("partition %d offset %d: acknowledged %q, read %q (present %v)", p, off, val, got.value, ok)
			}
		}
	}
}

// fetchAll reads a partition from offset 0 to its high watermark.
func fetchAll(t *testing.T, a *agenttest.Agent, topic string, p int32) map[int64]sent {
	t.Helper()
	out := map[int64]sent{}
	off := int64(0)
	for {
		status, _, body := call(t, "GET", fmt.Sprintf("%s/v1/topics/%s/partitions/%d/records?offset=%d&max_records=10000", a.URL, topic, p, off), "", nil,
			"Accept", binformat.MediaType)
		if status != http.StatusOK {
			t.Fatalf("fetch: %d %s", status, body)
		}
		resp, err := binformat.DecodeFetch(body)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.Records {
			s := sent{key: r.Key, value: r.Value}
			for _, h := range r.Headers {
				s.headers = append(s.headers, segment.Header{Key: h.Key, Value: h.Value})
			}
			out[r.Offset] = s
		}
		if resp.NextOffset >= resp.HighWatermark {
			return out
		}
		if resp.NextOffset == off {
			t.Fatalf("fetch made no progress at %d (hwm %d)", off, resp.HighWatermark)
		}
		off = resp.NextOffset
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatal("condition not met within 60s")
		case <-tick.C:
		}
	}
}

func highWatermarks(t *testing.T, a *agenttest.Agent, topic string) []int64 {
	t.Helper()
	status, _, b := call(t, "GET", a.URL+"/v1/topics/"+topic, "", nil)
	if status != http.StatusOK {
		t.Fatalf("describe: %d %s", status, b)
	}
	var tj agent.TopicJSON
	if err := json.Unmarshal(b, &tj); err != nil {
		t.Fatal(err)
	}
	out := make([]int64, len(tj.States))
	for i, s := range tj.States {
		out[i] = s.HighWatermark
	}
	return out
}

// A failed PUT answers 503 and consumes no offsets.
func TestPutFailureIs503AndConsumesNoOffsets(t *testing.T) {
	t.Parallel()
	faulty := objectstoretest.NewFaulty(agenttest.MinIOBucket(t))
	a := agenttest.Start(t, agenttest.Options{Bucket: faulty})
	createTopic(t, a, "t", 1, "")
	faulty.FailAlways(objectstoretest.OpPut, errors.New("injected put failure"))
	body := []byte(`{"records":[{"value":1},{"value":2}]}`)
	status, hdr, b := call(t, "POST", a.URL+"/v1/topics/t/records", "application/json", body)
	wantProblem(t, status, hdr, b, http.StatusServiceUnavailable, problem.CodeUnavailable)
	if hw := highWatermarks(t, a, "t"); hw[0] != 0 {
		t.Fatalf("high watermark %d after a failed PUT", hw[0])
	}
	faulty.Reset()
	resp := produceJSON(t, a, "t", agent.ProduceRequest{Records: []recordjson.Record{{Value: json.RawMessage(`3`)}}})
	if resp.Offsets[0].Offset != 0 {
		t.Fatalf("first record after the failure got offset %d, want 0", resp.Offsets[0].Offset)
	}
}

// A Postgres failure at commit answers 503 and consumes no offsets.
func TestPostgresFailureIs503AndConsumesNoOffsets(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Configure: func(c *agentd.Config) {
		c.HTTP.TopicCacheTTL = time.Hour // the topic stays known while Postgres is away
		c.Batcher.FlushTimeout = 5 * time.Second
		c.DBSession.StatementTimeout, c.DBSession.IdleInTransactionTimeout = 4*time.Second, 4*time.Second // below the flush timeout
	}})
	createTopic(t, a, "t", 1, "")
	produceJSON(t, a, "t", agent.ProduceRequest{Records: []recordjson.Record{{Value: json.RawMessage(`0`)}}})

	ctx := context.Background()
	admin, err := pgx.Connect(ctx, adminURL(t, a.DatabaseURL))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	db := dbName(a.DatabaseURL)
	block := func(allow bool) {
		t.Helper()
		if _, err := admin.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s ALLOW_CONNECTIONS %t", db, allow)); err != nil {
			t.Fatal(err)
		}
		if !allow {
			if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", db); err != nil {
				t.Fatal(err)
			}
		}
	}
	block(false)
	status, hdr, b := call(t, "POST", a.URL+"/v1/topics/t/records", "application/json", []byte(`{"records":[{"value":1}]}`))
	block(true)
	wantProblem(t, status, hdr, b, http.StatusServiceUnavailable, problem.CodeUnavailable)
	waitUntil(t, func() bool {
		status, _, _ := call(t, "GET", a.URL+"/readyz", "", nil)
		return status == http.StatusOK
	})
	resp := produceJSON(t, a, "t", agent.ProduceRequest{Records: []recordjson.Record{{Value: json.RawMessage(`2`)}}})
	if resp.Offsets[0].Offset != 1 {
		t.Fatalf("record after the failure got offset %d, want 1 (the failed one must not use an offset)", resp.Offsets[0].Offset)
	}
}

func dbName(url string) string {
	i := strings.LastIndex(url, "/")
	name := url[i+1:]
	if j := strings.Index(name, "?"); j >= 0 {
		name = name[:j]
	}
	return name
}

func adminURL(t *testing.T, url string) string {
	t.Helper()
	return strings.Replace(url, "/"+dbName(url), "/postgres", 1)
}

func TestIdempotentProduce(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{})
	createTopic(t, a, "t", 2, "")
	status, _, b := call(t, "POST", a.URL+"/v1/producers", "", nil)
	if status != http.StatusCreated {
		t.Fatalf("new producer: %d %s", status, b)
	}
	var p struct {
		ProducerID int64 `json:"producer_id"`
	}
	_ = json.Unmarshal(b, &p)
	if p.ProducerID <= 0 {
		t.Fatalf("producer id %d", p.ProducerID)
	}
	req := agent.ProduceRequest{
		ProducerID: p.ProducerID,
		Sequences:  map[string]int32{"0": 0, "1": 0},
		Records: []recordjson.Record{
			{Partition: i32p(0), Value: json.RawMessage(`"a"`)},
			{Partition: i32p(1), Value: json.RawMessage(`"b"`)},
			{Partition: i32p(0), Value: json.RawMessage(`"c"`)},
		},
	}
	first := produceJSON(t, a, "t", req)
	retry := produceJSON(t, a, "t", req)
	if !retry.Duplicate || first.Duplicate {
		t.Fatalf("duplicate flags: first %v retry %v", first.Duplicate, retry.Duplicate)
	}
	for i := range first.Offsets {
		if first.Offsets[i] != retry.Offsets[i] {
			t.Fatalf("retry offsets %+v differ from %+v", retry.Offsets, first.Offsets)
		}
	}
	if hw := highWatermarks(t, a, "t"); hw[0] != 2 || hw[1] != 1 {
		t.Fatalf("high watermarks %v after a retry, want [2 1]", hw)
	}
	// A gap is refused.
	req.Sequences = map[string]int32{"0": 5, "1": 1}
	status, hdr, b := call(t, "POST", a.URL+"/v1/topics/t/records", "application/json", jsonBody(t, req))
	wantProblem(t, status, hdr, b, http.StatusConflict, problem.CodeSequenceGap)
	// The next sequence on the single-partition route, via NDJSON.
	status, _, b = call(t, "POST", fmt.Sprintf("%s/v1/topics/t/partitions/0/records?producer_id=%d&sequence=2", a.URL, p.ProducerID),
		"application/x-ndjson", []byte("{\"value\":\"d\"}\n"))
	if status != http.StatusOK || !strings.Contains(string(b), `"offset":2`) {
		t.Fatalf("next in sequence: %d %s", status, b)
	}
}

func TestBadRequestsAreProblems(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Configure: func(c *agentd.Config) {
		c.HTTP.MaxRecordBytes = 1000
		c.HTTP.MaxRequestBytes = 64 << 10
		c.HTTP.MaxRecordsPerRequest = 10
	}})
	createTopic(t, a, "t", 2, "")
	big := strings.Repeat("x", 2000)
	tenPlus := `{"records":[` + strings.TrimSuffix(strings.Repeat(`{"value":1},`, 11), ",") + `]}`
	cases := []struct {
		name, method, path, ct, body string
		status                       int
		code                         problem.Code
	}{
		{"malformed json", "POST", "/v1/topics/t/records", "application/json", `{"records":[`, 400, problem.CodeInvalidJSON},
		{"unknown field", "POST", "/v1/topics/t/records", "application/json", `{"records":[],"nope":1}`, 400, problem.CodeInvalidJSON},
		{"bad base64", "POST", "/v1/topics/t/records", "application/json", `{"records":[{"value_b64":"!!"}]}`, 400, problem.CodeInvalidRecord},
		{"key and key_b64", "POST", "/v1/topics/t/records", "application/json", `{"records":[{"key":1,"key_b64":"AA=="}]}`, 400, problem.CodeInvalidRecord},
		{"no records", "POST", "/v1/topics/t/records", "application/json", `{"records":[]}`, 400, problem.CodeInvalidRecord},
		{"unknown topic", "POST", "/v1/topics/nope/records", "application/json", `{"records":[{"value":1}]}`, 404, problem.CodeTopicNotFound},
		{"bad topic name", "POST", "/v1/topics/a%20b/records", "application/json", `{"records":[{"value":1}]}`, 400, problem.CodeInvalidTopicName},
		{"partition out of range (path)", "POST", "/v1/topics/t/partitions/2/records", "application/json", `{"records":[{"value":1}]}`, 404, problem.CodePartitionNotFound},
		{"partition not a number", "POST", "/v1/topics/t/partitions/x/records", "application/json", `{"records":[{"value":1}]}`, 400, problem.CodeInvalidParameter},
		{"partition out of range (body)", "POST", "/v1/topics/t/records", "application/json", `{"records":[{"value":1,"partition":7}]}`, 400, problem.CodeInvalidRecord},
		{"record too large", "POST", "/v1/topics/t/records", "application/json", `{"records":[{"value":"` + big + `"}]}`, 413, problem.CodeRecordTooLarge},
		{"request too large", "POST", "/v1/topics/t/records", "application/json", `{"records":[{"value":"` + strings.Repeat("y", 70<<10) + `"}]}`, 413, problem.CodeRequestTooLarge},
		{"too many records", "POST", "/v1/topics/t/records", "application/json", tenPlus, 413, problem.CodeTooManyRecords},
		{"wrong content type", "POST", "/v1/topics/t/records", "text/plain", `hello`, 415, problem.CodeUnsupportedMediaType},
		{"ndjson bad line", "POST", "/v1/topics/t/records", "application/x-ndjson", "{\"value\":1}\n{oops\n", 400, problem.CodeInvalidJSON},
		{"binary truncated", "POST", "/v1/topics/t/records", binformat.MediaType, "SLP1\x00", 400, problem.CodeInvalidRecord},
		{"sequences without producer", "POST", "/v1/topics/t/records", "application/json", `{"records":[{"value":1}],"sequences":{"0":0}}`, 400, problem.CodeInvalidRecord},
		{"create bad name", "POST", "/v1/topics", "application/json", `{"name":"..","partitions":1}`, 400, problem.CodeInvalidTopicName},
		{"create long name", "POST", "/v1/topics", "application/json", `{"name":"` + strings.Repeat("a", 250) + `"}`, 400, problem.CodeInvalidTopicName},
		{"create exists", "POST", "/v1/topics", "application/json", `{"name":"t","partitions":1}`, 409, problem.CodeTopicExists},
		{"create bad config", "POST", "/v1/topics", "application/json", `{"name":"u","config":{"cleanup.policy":"shred"}}`, 400, problem.CodeInvalidConfig},
		{"create unknown config", "POST", "/v1/topics", "application/json", `{"name":"u","config":{"retention.forever":1}}`, 400, problem.CodeInvalidConfig},
		{"create zero partitions", "POST", "/v1/topics", "application/json", `{"name":"u","partitions":0}`, 400, problem.CodeInvalidPartitions},
		{"shrink", "PATCH", "/v1/topics/t", "application/json", `{"partitions":1}`, 400, problem.CodeInvalidPartitions},
		{"alter missing", "PATCH", "/v1/topics/nope", "application/json", `{"partitions":3}`, 404, problem.CodeTopicNotFound},
		{"delete missing", "DELETE", "/v1/topics/nope", "", ``, 404, problem.CodeTopicNotFound},
		{"unknown route", "GET", "/v1/nothing", "", ``, 404, problem.CodeRouteNotFound},
		{"wrong method", "PUT", "/v1/topics", "", ``, 405, problem.CodeMethodNotAllowed},
		{"NUL member id", "POST", "/v1/groups/g/members/%00/heartbeat", "application/json", `{"generation":1}`, 400, problem.CodeInvalidParameter},
		{"non-UTF-8 member id", "DELETE", "/v1/groups/g/members/%ff", "", ``, 400, problem.CodeInvalidParameter},
		{"member id too long", "GET", "/v1/groups/g/members/" + strings.Repeat("m", 256) + "/records", "", ``, 400, problem.CodeInvalidParameter},
		{"NUL member id in join", "POST", "/v1/groups/g/members", "application/json", `{"topics":["t"],"member_id":"\u0000"}`, 400, problem.CodeInvalidParameter},
		{"NUL in commit metadata", "POST", "/v1/groups/g/offsets", "application/json", `{"offsets":[{"topic":"t","partition":0,"offset":0,"metadata":"a\u0000"}]}`, 400, problem.CodeInvalidParameter},
		{"bad group name", "POST", "/v1/groups/a%20b/members", "application/json", `{"topics":["t"]}`, 400, problem.CodeInvalidGroupName},
		// Strict input (docs/security.md): I-JSON bodies.
		{"duplicate record member", "POST", "/v1/topics/t/records", "application/json", `{"records":[{"value":1,"value":2}]}`, 400, problem.CodeInvalidJSON},
		{"duplicate top-level member", "POST", "/v1/topics/t/records", "application/json", `{"records":[{"value":1}],"records":[{"value":2}]}`, 400, problem.CodeInvalidJSON},
		{"duplicate escaped member", "POST", "/v1/topics/t/records", "application/json", `{"records":[{"value":1,"\u0076alue":2}]}`, 400, problem.CodeInvalidJSON},
		{"duplicate member inside a value", "POST", "/v1/topics/t/records", "application/json", `{"records":[{"value":{"a":1,"b":2,"a":3}}]}`, 400, problem.CodeInvalidJSON},
		{"duplicate member of many", "POST", "/v1/topics/t/records", "application/json", `{"records":[{"value":{` + manyMembers(40) + `,"m7":0}}]}`, 400, problem.CodeInvalidJSON},
		{"duplicate ndjson member", "POST", "/v1/topics/t/records", "application/x-ndjson", "{\"value\":1,\"key\":1,\"key\":2}\n", 400, problem.CodeInvalidJSON},
		{"duplicate topic name", "POST", "/v1/topics", "application/json", `{"name":"u","name":"v"}`, 400, problem.CodeInvalidJSON},
		{"duplicate config key", "POST", "/v1/topics", "application/json", `{"name":"u","config":{"retention.ms":1,"retention.ms":-1}}`, 400, problem.CodeInvalidJSON},
		{"duplicate group field", "POST", "/v1/groups/g/offsets", "application/json", `{"offsets":[{"topic":"t","partition":0,"partition":1,"offset":0}]}`, 400, problem.CodeInvalidJSON},
		{"null record", "POST", "/v1/topics/t/records", "application/json", `{"records":[null]}`, 400, problem.CodeInvalidRecord},
		{"null record after one", "POST", "/v1/topics/t/records", "application/json", `{"records":[{"value":1},null]}`, 400, problem.CodeInvalidRecord},
		{"null header", "POST", "/v1/topics/t/records", "application/json", `{"records":[{"value":1,"headers":[null]}]}`, 400, problem.CodeInvalidRecord},
		{"null ndjson line", "POST", "/v1/topics/t/records", "application/x-ndjson", "{\"value\":1}\nnull\n", 400, problem.CodeInvalidRecord},
		{"invalid UTF-8 in a value", "POST", "/v1/topics/t/records", "application/json", "{\"records\":[{\"value\":\"\xff\"}]}", 400, problem.CodeInvalidJSON},
		{"invalid UTF-8 in a header key", "POST", "/v1/topics/t/records", "application/json", "{\"records\":[{\"value\":1,\"headers\":[{\"key\":\"a\xc3\"}]}]}", 400, problem.CodeInvalidJSON},
		{"invalid UTF-8 in ndjson", "POST", "/v1/topics/t/records", "application/x-ndjson", "{\"value\":\"\xed\xa0\x80\"}\n", 400, problem.CodeInvalidJSON},
		{"invalid UTF-8 in a topic config", "POST", "/v1/topics", "application/json", "{\"name\":\"u\",\"config\":{\"cleanup.policy\":\"\xfe\"}}", 400, problem.CodeInvalidJSON},
		{"lone high surrogate in a header key", "POST", "/v1/topics/t/records", "application/json", `{"records":[{"value":1,"headers":[{"key":"\ud800"}]}]}`, 400, problem.CodeInvalidJSON},
		{"lone low surrogate in a value", "POST", "/v1/topics/t/records", "application/json", `{"records":[{"value":"a\udc00b"}]}`, 400, problem.CodeInvalidJSON},
		{"high surrogate then not low", "POST", "/v1/topics/t/records", "application/json", `{"records":[{"value":"\ud83d\u0041"}]}`, 400, problem.CodeInvalidJSON},
		// Strict input: media types and codings.
		{"no content type (produce)", "POST", "/v1/topics/t/records", "", `{"records":[{"value":1}]}`, 415, problem.CodeUnsupportedMediaType},
		{"no content type (create topic)", "POST", "/v1/topics", "", `{"name":"u"}`, 415, problem.CodeUnsupportedMediaType},
		{"no content type (heartbeat)", "POST", "/v1/groups/g/members/m-1/heartbeat", "", `{"generation":1}`, 415, problem.CodeUnsupportedMediaType},
		{"no content type (commit)", "POST", "/v1/groups/g/offsets", "", `{"offsets":[]}`, 415, problem.CodeUnsupportedMediaType},
		{"charset not UTF-8", "POST", "/v1/topics/t/records", "application/json; charset=latin1", `{"records":[{"value":1}]}`, 415, problem.CodeUnsupportedMediaType},
		{"malformed content type", "POST", "/v1/topics/t/records", "application/json; =", `{"records":[{"value":1}]}`, 415, problem.CodeUnsupportedMediaType},
		// Strict input: canonical integers, percent-encoding, queries.
		{"partition with plus", "POST", "/v1/topics/t/partitions/+1/records", "application/json", `{"records":[{"value":1}]}`, 400, problem.CodeInvalidParameter},
		{"partition with leading zero", "POST", "/v1/topics/t/partitions/01/records", "application/json", `{"records":[{"value":1}]}`, 400, problem.CodeInvalidParameter},
		{"partition minus zero", "GET", "/v1/topics/t/partitions/-0/records", "", ``, 400, problem.CodeInvalidParameter},
		{"partition encoded plus", "GET", "/v1/topics/t/partitions/%2B1/records", "", ``, 400, problem.CodeInvalidParameter},
		{"partition encoded leading zero", "GET", "/v1/topics/t/partitions/%300/offsets", "", ``, 400, problem.CodeInvalidParameter},
		{"partition with space", "GET", "/v1/topics/t/partitions/%201/stream", "", ``, 400, problem.CodeInvalidParameter},
		{"partition in hex", "GET", "/v1/topics/t/partitions/0x1/records", "", ``, 400, problem.CodeInvalidParameter},
		{"offset with plus", "GET", "/v1/topics/t/partitions/0/records?offset=%2B1", "", ``, 400, problem.CodeInvalidParameter},
		{"offset with leading zero", "GET", "/v1/topics/t/partitions/0/records?offset=00", "", ``, 400, problem.CodeInvalidParameter},
		{"sequences key with leading zero", "POST", "/v1/topics/t/records", "application/json", `{"records":[{"value":1,"partition":0}],"producer_id":1000,"sequences":{"00":0}}`, 400, problem.CodeInvalidParameter},
		{"encoded slash in a topic", "GET", "/v1/topics/a%2Fb/partitions/0/records", "", ``, 400, problem.CodeInvalidTopicName},
		{"encoded slash in a group", "DELETE", "/v1/groups/a%2Fb", "", ``, 400, problem.CodeInvalidGroupName},
		{"repeated query parameter", "GET", "/v1/topics/t/partitions/0/records?offset=0&offset=1", "", ``, 400, problem.CodeInvalidParameter},
		{"repeated empty query parameter", "GET", "/v1/topics/t/partitions/0/records?wait_ms=&wait_ms=", "", ``, 400, problem.CodeInvalidParameter},
		{"repeated ndjson sequence", "POST", "/v1/topics/t/partitions/0/records?producer_id=1000&sequence=0&sequence=1", "application/x-ndjson", "{\"value\":1}\n", 400, problem.CodeInvalidParameter},
		{"semicolon in the query", "GET", "/v1/topics/t/partitions/0/records?offset=1;wait_ms=5", "", ``, 400, problem.CodeInvalidParameter},
		{"bad escape in the query", "GET", "/v1/topics/t/partitions/0/records?offset=%zz", "", ``, 400, problem.CodeInvalidParameter},
		{"auto_commit not a bool word", "GET", "/v1/groups/g/members/m-1/records?auto_commit=1", "", ``, 400, problem.CodeInvalidParameter},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, hdr, b := call(t, c.method, a.URL+c.path, c.ct, []byte(c.body))
			wantProblem(t, status, hdr, b, c.status, c.code)
		})
	}
	// A body in a content coding the agent does not decode.
	for _, ce := range []string{"gzip", "br, identity", "x-custom"} {
		status, hdr, b := call(t, "POST", a.URL+"/v1/topics/t/records", "application/json", []byte(`{"records":[{"value":1}]}`), "Content-Encoding", ce)
		wantProblem(t, status, hdr, b, http.StatusUnsupportedMediaType, problem.CodeUnsupportedMediaType)
	}
	// A Last-Event-ID past the largest offset.
	status, hdr, b := call(t, "GET", a.URL+"/v1/topics/t/partitions/0/stream", "", nil, "Accept", "text/event-stream", "Last-Event-ID", "9223372036854775807")
	wantProblem(t, status, hdr, b, http.StatusBadRequest, problem.CodeInvalidParameter)
	// Bodies whose chunked framing is broken or cut short, on every route
	// that reads a body: the client's mistake, 400, never 500.
	badFraming := map[string]func(body string) string{
		"chunk size not hex":   func(b string) string { return "zz\r\n" + b + "\r\n0\r\n\r\n" },
		"negative chunk size":  func(b string) string { return "-1\r\n" + b + "\r\n0\r\n\r\n" },
		"chunk size too large": func(b string) string { return "fffffffffffffffffff\r\n" + b },
		"chunk cut short":      func(b string) string { return fmt.Sprintf("%x\r\n%s", len(b)+100, b) },
		"chunk without CRLF":   func(b string) string { return fmt.Sprintf("%x\r\n%sXX0\r\n\r\n", len(b), b) },
		"no last chunk":        func(b string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(b), b) },
		"truncated size line":  func(string) string { return "1" },
		"trailer never ends":   func(b string) string { return fmt.Sprintf("%x\r\n%s\r\n0\r\nX-Trailer: 1\r\n", len(b), b) },
	}
	binBody := string(binformat.AppendRequest(nil, &binformat.Request{Records: []binformat.Record{{Partition: -1, Timestamp: -1, Value: []byte("v")}}}))
	for _, route := range []struct{ method, path, ct, body string }{
		{"POST", "/v1/topics/t/records", "application/json", `{"records":[{"value":1}]}`},
		{"POST", "/v1/topics/t/partitions/0/records", "application/x-ndjson", "{\"value\":1}\n"},
		{"POST", "/v1/topics/t/records", binformat.MediaType, binBody},
		{"POST", "/v1/topics", "application/json", `{"name":"chunky"}`},
		{"PATCH", "/v1/topics/t", "application/json", `{"partitions":3}`},
		{"POST", "/v1/groups/g/members", "application/json", `{"topics":["t"]}`},
		{"POST", "/v1/groups/g/members/m-1/heartbeat", "application/json", `{"generation":1}`},
		{"POST", "/v1/groups/g/offsets", "application/json", `{"offsets":[{"topic":"t","partition":0,"offset":0}]}`},
	} {
		for name, framing := range badFraming {
			t.Run("chunked "+route.method+" "+route.path+" "+route.ct+" "+name, func(t *testing.T) {
				status, hdr, b := rawCall(t, a.URL, chunkedRequest(route.method, route.path, route.ct, framing(route.body)))
				wantProblem(t, status, hdr, b, http.StatusBadRequest, problem.CodeBadRequest)
			})
		}
	}
	// Nothing above was written.
	if hw := highWatermarks(t, a, "t"); hw[0] != 0 || hw[1] != 0 {
		t.Fatalf("bad requests wrote records: %v", hw)
	}
	// The key routes read bodies too; they serve only with keys required,
	// so their framing is checked on an agent that requires them, with an
	// admin key (a 401 or 403 would not be about the framing).
	sa, admin := secureAgent(t, agenttest.Options{})
	_, keyID := newKey(t, sa, admin, uniq("chunky"), "consume:topic:t")
	for _, route := range []struct{ method, path, body string }{
		{"POST", "/v1/keys", `{"name":"chunky-new","allow":["consume:topic:t"]}`},
		{"PUT", "/v1/keys/" + keyID + "/acls", `{"allow":["produce:topic:t"]}`},
	} {
		for name, framing := range badFraming {
			t.Run("chunked with a key "+route.method+" "+route.path+" "+name, func(t *testing.T) {
				status, hdr, b := rawCall(t, sa.URL, chunkedRequest(route.method, route.path, "application/json", framing(route.body), "Authorization: Bearer "+admin))
				wantProblem(t, status, hdr, b, http.StatusBadRequest, problem.CodeBadRequest)
			})
		}
	}
	var keys struct {
		Keys []auth.Key `json:"keys"`
	}
	if err := json.Unmarshal(mustAs(t, http.StatusOK, admin, "GET", sa.URL+"/v1/keys", nil), &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys.Keys {
		if k.Name == "chunky-new" {
			t.Fatal("a key was created from a broken body")
		}
		if k.ID == keyID && (len(k.ACLs) != 1 || fmt.Sprint(k.ACLs[0].Operations) != "[consume]") {
			t.Fatalf("a broken body changed the key's ACLs: %+v", k.ACLs)
		}
	}
}

// gatedBucket holds every Put until released.
type gatedBucket struct {
	objectstore.Bucket
	gate chan struct{}
}

func (g *gatedBucket) Put(ctx context.Context, key string, r io.Reader, size int64, opts objectstore.PutOptions) error {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Bucket.Put(ctx, key, r, size, opts)
}

// A full buffer answers 429 with Retry-After, and the accepted requests
// still commit once the store catches up.
func TestFullBufferIs429(t *testing.T) {
	t.Parallel()
	mem := agenttest.Start(t, agenttest.Options{}).Raw // a fresh in-memory bucket
	gated := &gatedBucket{Bucket: mem, gate: make(chan struct{})}
	a := agenttest.Start(t, agenttest.Options{Bucket: gated, Configure: func(c *agentd.Config) {
		c.Batcher.MaxSegmentBytes = 4 << 10
		c.Batcher.MaxBufferBytes = 32 << 10
		c.Batcher.MaxInflightFlushes = 1
	}})
	createTopic(t, a, "t", 1, "")
	body := []byte(`{"records":[{"value":"` + strings.Repeat("z", 3000) + `"}]}`)
	var wg sync.WaitGroup
	results := make(chan int, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, hdr, b := call(t, "POST", a.URL+"/v1/topics/t/records", "application/json", body)
			if status == http.StatusTooManyRequests {
				wantProblem(t, status, hdr, b, 429, problem.CodeBackpressure)
			}
			results <- status
		}()
	}
	// Release the PUTs only once some request was refused.
	var statuses []int
	for len(statuses) < 64 {
		s := <-results
		statuses = append(statuses, s)
		if s == http.StatusTooManyRequests {
			break
		}
	}
	close(gated.gate)
	wg.Wait()
	close(results)
	for s := range results {
		statuses = append(statuses, s)
	}
	sort.Ints(statuses)
	ok, refused := 0, 0
	for _, s := range statuses {
		switch s {
		case 200:
			ok++
		case 429:
			refused++
		default:
			t.Fatalf("unexpected status %d", s)
		}
	}
	if refused == 0 || ok == 0 {
		t.Fatalf("%d accepted, %d refused; want both", ok, refused)
	}
	if hw := highWatermarks(t, a, "t"); hw[0] != int64(ok) {
		t.Fatalf("high watermark %d, accepted %d", hw[0], ok)
	}
}

// Problem details speak the client's terms: what is wrong with the
// request, never the agent's packages or Go's types.
func TestProblemDetailsSpeakTheClientsTerms(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{})
	createTopic(t, a, "t", 2, "")
	for _, c := range []struct {
		method, path, ct, body string
		status                 int
		detail                 string
	}{
		{"POST", "/v1/topics/nope/records", "application/json", `{"records":[{"value":1}]}`, 404, `topic "nope" does not exist`},
		{"GET", "/v1/topics/nope", "", ``, 404, `topic "nope" does not exist`},
		{"POST", "/v1/topics", "application/json", `{"name":"t"}`, 409, `topic "t" already exists`},
		{"PATCH", "/v1/topics/t", "application/json", `{"partitions":1}`, 400, `topic "t" has 2 partitions and cannot shrink to 1`},
		{"POST", "/v1/topics", "application/json", `{"name":"u","config":{"retention.ms":0}}`, 400, `retention.ms must be positive or -1`},
		{"POST", "/v1/topics", "application/json", `{"name":"u","config":{"retention.ms":1e400}}`, 400, `config.retention.ms must be an integer from -9223372036854775808 to 9223372036854775807, not number 1e400`},
		{"POST", "/v1/topics", "application/json", `{"name":"u","config":[]}`, 400, `config must be an object, not array`},
		{"POST", "/v1/topics/t/records", "application/json", `{"records":"x"}`, 400, `records must be an array, not string`},
		{"POST", "/v1/topics/t/records", "application/json", `{"records":[1]}`, 400, `records[0] must be an object, not number`},
		{"POST", "/v1/topics/t/records", "application/json", `{"records":[{},{"partition":1.5}]}`, 400, `records[1].partition must be an integer from -2147483648 to 2147483647, not number 1.5`},
		{"POST", "/v1/topics/t/records", "application/json", `{"records":[{"headers":[{"key":"a"},{"key":5}]}]}`, 400, `records[0].headers[1].key must be a string, not number`},
		{"POST", "/v1/topics/t/records", "application/json", `[]`, 400, `the body must be an object, not array`},
		{"POST", "/v1/topics/t/records", "application/json", `{"records":[`, 400, `malformed JSON: the body ends in the middle of a value`},
		{"POST", "/v1/topics/t/records", "application/json", `{"records":[}`, 400, `malformed JSON at byte 13: invalid character '}' looking for beginning of value`},
		{"POST", "/v1/topics/t/records", "application/json", `{"records":[],"nope":1}`, 400, `unknown field "nope"`},
		{"POST", "/v1/topics/t/records", "application/vnd.silt.records.v1", "SLP1\x00", 400, `malformed binary body: truncated`},
		{"DELETE", "/v1/groups/nope", "", ``, 404, `group "nope" does not exist`},
		{"POST", "/v1/groups/nope/members/m-1/heartbeat", "application/json", `{"generation":1}`, 404, `group "nope" does not exist, so it has no member m-1; join again without a member id`},
		{"POST", "/v1/groups/g/members", "application/json", `{"topics":["nope"]}`, 404, `topic "nope" does not exist`},
		{"POST", "/v1/groups/g/members", "application/json", `{"topics":["t"],"session_timeout_ms":1}`, 400, `session_timeout_ms 1 must be from`},
		{"POST", "/v1/groups/a%20b/members", "application/json", `{"topics":["t"]}`, 400, `group name "a b" must be 1 to 249 characters`},
	} {
		t.Run(c.method+" "+c.path+" "+c.body, func(t *testing.T) {
			status, hdr, b := call(t, c.method, a.URL+c.path, c.ct, []byte(c.body))
			var p problem.Details
			if err := json.Unmarshal(b, &p); err != nil {
				t.Fatalf("%d %s: %v", status, b, err)
			}
			wantProblem(t, status, hdr, b, c.status, p.Code)
			if !strings.HasPrefix(p.Detail, c.detail) {
				t.Fatalf("detail %q, want it to start %q", p.Detail, c.detail)
			}
		})
	}
}

// manyMembers is n distinct JSON members "m0":0,"m1":0,...
func manyMembers(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`"m%d":0`, i)
	}
	return strings.Join(parts, ",")
}

// Strict input refuses only what is ambiguous: percent-encoded path
// parameters mean what they decode to, a surrogate pair is a character,
// UTF-8 may be named as the charset, and identity is no content coding.
func TestStrictInputKeepsWhatIsValid(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{})
	createTopic(t, a, "t", 1, "")
	body := `{"records":[{"value":"\ud83d\ude00","headers":[{"key":"\ud83d\ude00 \u00e9","value":1}]},{"value":{` + manyMembers(40) + `}}]}`
	status, _, b := call(t, "POST", a.URL+"/v1/topics/%74/partitions/%30/records", "application/json; charset=UTF-8", []byte(body), "Content-Encoding", "identity")
	if status != http.StatusOK {
		t.Fatalf("produce: %d %s", status, b)
	}
	var resp fetchResponse
	getJSON(t, a.URL+"/v1/topics/t/partitions/0/records?offset=0", &resp)
	if len(resp.Records) != 2 || string(resp.Records[0].Value) != `"\ud83d\ude00"` || resp.Records[0].Headers[0].Key != "😀 é" {
		t.Fatalf("read back %+v", resp)
	}
	getJSON(t, a.URL+"/v1/topics/%74/partitions/0/records?offset=1&max_records=1", &resp)
	if len(resp.Records) != 1 || resp.Records[0].Offset != 1 {
		t.Fatalf("percent-encoded topic: %+v", resp)
	}
}
