package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"silt/binformat"
	"silt/problem"
)

// Fuzz targets for every decoder of client input: produce bodies (JSON,
// NDJSON, binary), the SSE Last-Event-ID header and query parameters.
// Their seed corpora (here and in testdata/fuzz) run with every go test;
// make fuzz runs each target for FUZZTIME.

func fuzzServer() *Server {
	cfg := DefaultConfig()
	cfg.MaxRecordsPerRequest = 200
	cfg.MaxRequestBytes = 1 << 20
	cfg.MaxRecordBytes = 64 << 10
	m, err := newServerMetrics(prometheus.NewRegistry())
	if err != nil {
		panic(err)
	}
	return &Server{cfg: cfg, metrics: m, bodies: semaphore.NewWeighted(cfg.MaxInflightRequestBytes)}
}

// clientError fails unless err, as the handler reports it, is a problem
// with a 4xx status: bad input is never the agent's fault.
func clientError(t *testing.T, s *Server, err error) {
	t.Helper()
	var p *problem.Details
	if !errors.As(s.bodyError(err), &p) || p.Status < 400 || p.Status > 499 || p.Code == "" {
		t.Fatalf("input error %v (%T) is not a 4xx problem", err, err)
	}
}

// checkInput checks what every accepted produce body must satisfy.
func checkInput(t *testing.T, s *Server, in *produceInput) {
	t.Helper()
	if len(in.records) > s.cfg.MaxRecordsPerRequest {
		t.Fatalf("%d records accepted, limit %d", len(in.records), s.cfg.MaxRecordsPerRequest)
	}
	for i, r := range in.records {
		if r.partition < -1 || r.rec.Timestamp < -1 {
			t.Fatalf("record %d: partition %d, timestamp %d", i, r.partition, r.rec.Timestamp)
		}
	}
	if in.producerID < 0 {
		t.Fatalf("producer id %d", in.producerID)
	}
	for p, seq := range in.sequences {
		if p < -1 || seq < 0 {
			t.Fatalf("sequence %d for partition %d", seq, p)
		}
	}
}

func FuzzProduceJSON(f *testing.F) {
	for _, s := range []string{
		`{"records":[{"value":"a"}]}`,
		`{"records":[{"key":"k","value":{"n":1},"partition":2,"timestamp":5,"headers":[{"key":"h","value":"v"}]}]}`,
		`{"records":[{"key_b64":"AAE=","value_b64":"/w=="}],"producer_id":7,"sequences":{"0":3}}`,
		`{"records":[{"value":null}],"producer_id":1,"sequence":0}`,
		`{"records":[{"value":"x"}],"expected_offset":3}`,
		`{"records":[{"value":1,"value_b64":"AA=="}]}`,
		`{"records":[{"headers":[null]}]}`,
		`{"records":[{"offset":1}]}`,
		`{"records":[],"a":1,"a":2}`,
		"{\"records\":[{\"value\":\"\xff\"}]}",
	} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte(`{"records":[{"value":"a"}],"producer_id":1,"sequence":4}`), true)
	s := fuzzServer()
	f.Fuzz(func(t *testing.T, body []byte, single bool) {
		res := s.reserveBody()
		defer res.release()
		in, err := s.parseJSON(bytes.NewReader(body), int64(len(body)), single, res, func() {})
		if err != nil {
			clientError(t, s, err)
			return
		}
		if !json.Valid(body) {
			t.Fatalf("invalid JSON accepted: %q", body)
		}
		checkInput(t, s, in)
	})
}

func FuzzProduceNDJSON(f *testing.F) {
	for _, c := range []struct{ body, query string }{
		{"{\"value\":\"a\"}\n{\"key\":\"k\",\"value\":1}\n", ""},
		{"{\"value\":\"a\"}\r\n\r\n{\"value_b64\":\"AA==\"}", "producer_id=3&sequences=0:1,1:2"},
		{"{\"value\":\"a\"}\n", "producer_id=1&sequence=0"},
		{"null\n", ""},
		{"{\"value\":\"a\"}\n{", ""},
		{"{\"value\":\"a\"}", "sequences=x:1"},
		{"{\"value\":\"a\"}", "producer_id=-1"},
	} {
		f.Add([]byte(c.body), c.query)
	}
	s := fuzzServer()
	f.Fuzz(func(t *testing.T, body []byte, rawQuery string) {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return // the agent refuses a malformed query before this (FuzzQueryParams)
		}
		res := s.reserveBody()
		defer res.release()
		in, err := s.parseNDJSON(bytes.NewReader(body), q, res)
		if err != nil {
			clientError(t, s, err)
			return
		}
		checkInput(t, s, in)
		n := 0
		for _, line := range strings.Split(string(body), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				n++
				if !json.Valid([]byte(line)) {
					t.Fatalf("line %q accepted as JSON", line)
				}
			}
		}
		if n != len(in.records) {
			t.Fatalf("%d non-empty lines, %d records", n, len(in.records))
		}
	})
}

func FuzzProduceBinary(f *testing.F) {
	f.Add(binformat.AppendRequest(nil, &binformat.Request{
		ProducerID: 9, Sequences: []binformat.Sequence{{Partition: 1, BaseSequence: 4}},
		Records: []binformat.Record{
			{Partition: 1, Timestamp: 10, Key: []byte("k"), Value: []byte("v"), Headers: []binformat.Header{{Key: "h", Value: []byte("x")}, {Key: "n"}}},
			{Partition: -1, Timestamp: -1},
		},
	}))
	f.Add(binformat.AppendRequest(nil, &binformat.Request{Records: []binformat.Record{{Partition: -2, Timestamp: -1}}}))
	f.Add([]byte(binformat.Magic))
	s := fuzzServer()
	f.Fuzz(func(t *testing.T, body []byte) {
		res := s.reserveBody()
		defer res.release()
		in, err := s.parseBinary(body, res)
		if err != nil {
			clientError(t, s, err)
			return
		}
		checkInput(t, s, in)
		// What the agent kept is what the body said: encode it again and
		// compare.
		req := binformat.Request{ProducerID: in.producerID}
		for _, r := range in.records {
			br := binformat.Record{Partition: r.partition, Timestamp: r.rec.Timestamp, Key: r.rec.Key, Value: r.rec.Value}
			for _, h := range r.rec.Headers {
				br.Headers = append(br.Headers, binformat.Header{Key: h.Key, Value: h.Value})
			}
			req.Records = append(req.Records, br)
		}
		back, err := binformat.DecodeRequest(body, binformat.Limits{MaxRecords: s.cfg.MaxRecordsPerRequest})
		if err != nil {
			t.Fatalf("parseBinary accepted what DecodeRequest refuses: %v", err)
		}
		req.Sequences = back.Sequences
		if !bytes.Equal(binformat.AppendRequest(nil, &req), body) {
			t.Fatalf("the parsed request does not encode back to the body")
		}
	})
}

// resumeAfter takes exactly the canonical decimals from -1 to 2^63-2.
func FuzzLastEventID(f *testing.F) {
	for _, s := range []string{"0", "-1", "41", "9223372036854775806", "9223372036854775807", "-2", "01", "+1", " 1", "1 ", "", "-0", "1e3", "0x10", "９"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		next, err := resumeAfter(h)
		n, perr := strconv.ParseInt(h, 10, 64)
		want := perr == nil && strconv.FormatInt(n, 10) == h && n >= -1 && n < math.MaxInt64
		if (err == nil) != want {
			t.Fatalf("Last-Event-ID %q: accepted %v, want %v", h, err == nil, want)
		}
		if err != nil {
			var p *problem.Details
			if !errors.As(err, &p) || p.Status != http.StatusBadRequest {
				t.Fatalf("Last-Event-ID %q: %v is not a 400 problem", h, err)
			}
			return
		}
		if next != n+1 {
			t.Fatalf("Last-Event-ID %q resumes at %d", h, next)
		}
	})
}

// Every query parameter the API reads, through the strict query check:
// malformed or repeated parameters are refused; integers are accepted
// exactly when canonical and in range; every refusal is a 400 problem.
func FuzzQueryParams(f *testing.F) {
	for _, q := range []string{
		"offset=0&max_records=10&max_bytes=1024&wait_ms=100&encoding=base64",
		"limit=5&cursor=dDEAMg", "topic_id=7", "expected_offset=3", "auto_commit=true",
		"a=1&a=2", "max_records=01", "max_records=-1", "wait_ms=999999999999", "encoding=hex",
		"cursor=!!", "%zz=1", "a;b=1", "max_records=1&&", "topic_id=0",
	} {
		f.Add(q)
	}
	s := fuzzServer()
	e := echo.New()
	f.Fuzz(func(t *testing.T, raw string) {
		req := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/", RawQuery: raw}, Header: http.Header{}}
		c := e.NewContext(req, httptest.NewRecorder())
		var inner error
		ran := false
		err := s.strictRequest(func(c echo.Context) error {
			ran = true
			inner = parseQuery(t, c)
			return inner
		})(c)
		q, perr := url.ParseQuery(raw)
		repeated := false
		for _, vs := range q {
			repeated = repeated || len(vs) > 1
		}
		if ran != (perr == nil && !repeated) {
			t.Fatalf("query %q: handler ran %v; malformed %v, repeated %v", raw, ran, perr != nil, repeated)
		}
		if err != nil {
			var p *problem.Details
			if !errors.As(err, &p) || p.Status != http.StatusBadRequest {
				t.Fatalf("query %q: %v is not a 400 problem", raw, err)
			}
		}
	})
}

// parseQuery reads every query parameter the handlers take and checks
// the integers against a reference.
func parseQuery(t *testing.T, c echo.Context) error {
	ints := []struct {
		name        string
		def, lo, hi int64
	}{
		{"max_records", defaultMaxRecords, 1, maxMaxRecords},
		{"max_bytes", defaultMaxBytes, 1, maxMaxBytes},
		{"wait_ms", 0, 0, 30_000},
		{"topic_id", 0, 1, math.MaxInt64},
		{"limit", defaultPageLimit, 1, maxPageLimit},
	}
	for _, p := range ints {
		got, err := intParam(c, p.name, p.def, p.lo, p.hi)
		raw := c.QueryParam(p.name)
		n, perr := strconv.ParseInt(raw, 10, 64)
		valid := raw == "" || perr == nil && strconv.FormatInt(n, 10) == raw && n >= p.lo && n <= p.hi
		if (err == nil) != valid {
			t.Fatalf("%s=%q: accepted %v, want %v", p.name, raw, err == nil, valid)
		}
		if err != nil {
			return err
		}
		if raw == "" && got != p.def || raw != "" && got != n {
			t.Fatalf("%s=%q read as %d", p.name, raw, got)
		}
	}
	if _, err := encodingParam(c); err != nil {
		return err
	}
	if _, err := pageParams(c); err != nil {
		return err
	}
	in := &produceInput{}
	if err := expectedOffsetParam(c, in); err != nil {
		return err
	}
	if in.expected != nil && *in.expected < 0 {
		t.Fatalf("expected_offset %d accepted", *in.expected)
	}
	return nil
}

// Found by fuzzing: a closing bracket after a complete value passed the
// trailing-data check and crashed the I-JSON walk.
func TestTrailingCloserIsMalformedJSON(t *testing.T) {
	for _, body := range []string{"{}}", `{"records":[]}]`, "null}", "{} ]"} {
		var v any
		err := strictUnmarshal([]byte(body), &v)
		var p *problem.Details
		if !errors.As(err, &p) || p.Code != problem.CodeInvalidJSON {
			t.Errorf("%q: %v, want invalid_json", body, err)
		}
	}
}
