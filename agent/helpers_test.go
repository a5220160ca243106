package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"silt/agent"
	"silt/internal/agenttest"
	"silt/problem"
)

// call does one HTTP request and returns status, headers and body.
func call(t *testing.T, method, url, contentType string, body []byte, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func jsonBody(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantProblem checks a problem+json response's status and code.
func wantProblem(t *testing.T, status int, hdr http.Header, body []byte, wantStatus int, wantCode problem.Code) problem.Details {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("status %d, want %d; body %s", status, wantStatus, body)
	}
	if ct := hdr.Get("Content-Type"); ct != problem.MediaType {
		t.Fatalf("content type %q, want %s; body %s", ct, problem.MediaType, body)
	}
	var p problem.Details
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("problem body %s: %v", body, err)
	}
	if p.Code != wantCode || p.Status != wantStatus || p.Type == "" || p.Title == "" {
		t.Fatalf("problem %+v, want code %s", p, wantCode)
	}
	if (wantStatus == 429 || wantStatus == 503) && (hdr.Get("Retry-After") == "" || !p.Retriable) {
		t.Fatalf("%d without Retry-After or retriable: %+v", wantStatus, p)
	}
	if p.Detail == "" || internalWords.MatchString(p.Detail) {
		t.Fatalf("detail %q is empty or names the agent's internals", p.Detail)
	}
	return p
}

// internalWords are what a problem's detail must not show a client: Go
// package prefixes of sentinels and Go type names, paths, SQL.
var internalWords = regexp.MustCompile(`\b(metadata|groups|batcher|fetch|binformat|recordjson|segment|objectstore|json|agent|pgx|s3|minio): |Go (struct|value|type)|\b(int32|int64|\[\]\*?[a-z]+\.[A-Z]\w*)\b|/tmp/|/var/|\.seg\b|SQLSTATE|\bSELECT\b|\bINSERT\b|127\.0\.0\.1`)

func createTopic(t *testing.T, a *agenttest.Agent, name string, partitions int, config string) {
	t.Helper()
	if config == "" {
		config = "{}"
	}
	body := `{"name":"` + name + `","partitions":` + itoa(partitions) + `,"config":` + config + `}`
	status, _, b := call(t, "POST", a.URL+"/v1/topics", "application/json", []byte(body))
	if status != http.StatusCreated {
		t.Fatalf("create topic %s: %d %s", name, status, b)
	}
}

func itoa(n int) string { return strings.TrimSpace(string(must(json.Marshal(n)))) }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func produceJSON(t *testing.T, a *agenttest.Agent, topic string, req agent.ProduceRequest) agent.ProduceResponse {
	t.Helper()
	status, _, b := call(t, "POST", a.URL+"/v1/topics/"+topic+"/records", "application/json", jsonBody(t, req))
	if status != http.StatusOK {
		t.Fatalf("produce: %d %s", status, b)
	}
	var resp agent.ProduceResponse
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func strp(s string) *string { return &s }
func i32p(n int32) *int32   { return &n }
func i64p(n int64) *int64   { return &n }

// rawCall writes request byte for byte to the agent (for framing that no
// HTTP client sends), half-closes the connection and reads the response.
func rawCall(t *testing.T, baseURL, request string) (int, http.Header, []byte) {
	t.Helper()
	u, err := url.Parse(baseURL)
	if err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(60 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	// The end of what we send: a body cut short ends here too.
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response to %q: %v", request, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// chunkedRequest is a request with a chunked body given as its framing,
// and any further header lines ("Name: value").
func chunkedRequest(method, path, contentType, framing string, headers ...string) string {
	var extra string
	for _, h := range headers {
		extra += h + "\r\n"
	}
	return method + " " + path + " HTTP/1.1\r\nHost: silt\r\nContent-Type: " + contentType +
		"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n" + extra + "\r\n" + framing
}
