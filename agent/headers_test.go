package agent_test

import (
	"net/http"
	"strings"
	"testing"

	"silt/binformat"
	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/problem"
)

// jsonHeaders is a record with n empty headers in JSON.
func jsonHeaders(n int) string {
	return `{"value":1,"headers":[` + strings.TrimSuffix(strings.Repeat(`{"key":""},`, n), ",") + `]}`
}

// binaryHeaders is a binary request of one record with n empty headers.
func binaryHeaders(n int) []byte {
	hs := make([]binformat.Header, n)
	return binformat.AppendRequest(nil, &binformat.Request{Records: []binformat.Record{{Partition: -1, Timestamp: -1, Value: []byte("1"), Headers: hs}}})
}

// A record may carry at most --max-record-headers headers, in every body
// form; one more is 413 too_many_headers and nothing is written. Records
// are priced by their encoded size, so empty headers count (2 bytes each).
func TestRecordHeaderCapAndPricing(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Configure: func(c *agentd.Config) {
		c.HTTP.MaxRecordHeaders = 3
	}})
	createTopic(t, a, "t", 1, "")
	createTopic(t, a, "small", 1, `{"max.message.bytes":40}`)
	url := a.URL + "/v1/topics/t/records"
	for _, c := range []struct {
		name, ct string
		body     []byte
		status   int
		code     problem.Code
	}{
		{"json at the cap", "application/json", []byte(`{"records":[` + jsonHeaders(3) + `]}`), 200, ""},
		{"json over the cap", "application/json", []byte(`{"records":[` + jsonHeaders(1) + "," + jsonHeaders(4) + `]}`), 413, problem.CodeTooManyHeaders},
		{"json over the cap, keys folded", "application/json", []byte(`{"Records":[{"HEADERS":[{},{},{},{}]}]}`), 413, problem.CodeTooManyHeaders},
		{"ndjson at the cap", "application/x-ndjson", []byte(jsonHeaders(3) + "\n"), 200, ""},
		{"ndjson over the cap", "application/x-ndjson", []byte(jsonHeaders(1) + "\n" + jsonHeaders(4) + "\n"), 413, problem.CodeTooManyHeaders},
		{"binary at the cap", binformat.MediaType, binaryHeaders(3), 200, ""},
		{"binary over the cap", binformat.MediaType, binaryHeaders(4), 413, problem.CodeTooManyHeaders},
	} {
		status, hdr, b := call(t, "POST", url, c.ct, c.body)
		if c.status == http.StatusOK {
			if status != http.StatusOK {
				t.Fatalf("%s: %d %s", c.name, status, b)
			}
			continue
		}
		wantProblem(t, status, hdr, b, c.status, c.code)
	}
	if hw := highWatermarks(t, a, "t"); hw[0] != 3 {
		t.Fatalf("high watermark %d, want the 3 records at the cap", hw[0])
	}

	// max.message.bytes=40: a 1-byte value is 25 bytes encoded; with 3
	// empty headers 31; a 14-byte value with 3 empty headers 44.
	small := a.URL + "/v1/topics/small/records"
	if status, _, b := call(t, "POST", small, "application/json", []byte(`{"records":[{"value":"x","headers":[{"key":""},{"key":""},{"key":""}]}]}`)); status != http.StatusOK {
		t.Fatalf("31-byte record: %d %s", status, b)
	}
	status, hdr, b := call(t, "POST", small, "application/json", []byte(`{"records":[{"value":"abcdefghijkl","headers":[{"key":""},{"key":""},{"key":""}]}]}`))
	wantProblem(t, status, hdr, b, http.StatusRequestEntityTooLarge, problem.CodeRecordTooLarge)
}

// What decoded records hold besides their bytes is reserved before
// decoding: a body within the in-flight budget whose records would not be
// is refused before it is decoded, with 413 since waiting would not help.
func TestParsedRecordsCountAgainstTheBudget(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Configure: func(c *agentd.Config) {
		c.HTTP.MaxRecordBytes = 64 << 10
		c.HTTP.MaxRequestBytes = 1 << 20
		c.HTTP.MaxInflightRequestBytes = 1 << 20
	}})
	createTopic(t, a, "t", 1, "")
	// 60,000 empty headers: 600 KB of JSON, 5 MB decoded.
	var b strings.Builder
	b.WriteString(`{"records":[`)
	for i := range 60 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(jsonHeaders(1000))
	}
	b.WriteString(`]}`)
	status, hdr, body := call(t, "POST", a.URL+"/v1/topics/t/records", "application/json", []byte(b.String()))
	wantProblem(t, status, hdr, body, http.StatusRequestEntityTooLarge, problem.CodeRequestTooLarge)
}
