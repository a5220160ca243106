package agent_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/problem"
)

// openBody sends produce headers that announce a body of length bytes
// (chunked when length < 0), then the first sent bytes of it, and waits
// for 100 Continue: the handler is then reading the body.
func openBody(t *testing.T, a *agenttest.Agent, topic string, length int, sent []byte) (net.Conn, *bufio.Reader) {
	t.Helper()
	return openBodyAs(t, a, "", topic, length, sent)
}

// openBodyAs is openBody with a bearer token ("": none).
func openBodyAs(t *testing.T, a *agenttest.Agent, token, topic string, length int, sent []byte) (net.Conn, *bufio.Reader) {
	t.Helper()
	addr := strings.TrimPrefix(a.URL, "http://")
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	framing := fmt.Sprintf("Content-Length: %d", length)
	if length < 0 {
		framing = "Transfer-Encoding: chunked"
	}
	if token != "" {
		framing += "\r\nAuthorization: Bearer " + token
	}
	fmt.Fprintf(conn, "POST /v1/topics/%s/records HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n%s\r\n\r\n", topic, addr, framing)
	br := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if line, err := br.ReadString('\n'); err != nil || !strings.Contains(line, " 100 ") {
		t.Fatalf("want 100 Continue, got %q %v", line, err)
	}
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if len(sent) > 0 {
		if length < 0 {
			fmt.Fprintf(conn, "%x\r\n%s\r\n", len(sent), sent)
		} else if _, err := conn.Write(sent); err != nil {
			t.Fatal(err)
		}
	}
	return conn, br
}

// A body announced but not sent holds no budget: with room in flight for
// a single request, others still get through while it waits; it gets 408
// once the body timeout passes.
func TestUnsentBodyHoldsNoBudgetAndTimesOut(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Configure: func(c *agentd.Config) {
		c.HTTP.MaxRecordBytes = 64 << 10
		c.HTTP.MaxRequestBytes = 1 << 20
		c.HTTP.MaxInflightRequestBytes = 1 << 20
		c.HTTP.RequestBodyTimeout = 2 * time.Second
	}})
	createTopic(t, a, "t", 1, "")
	var slow []*bufio.Reader
	for _, length := range []int{1 << 20, -1, 1 << 20, -1} {
		_, br := openBody(t, a, "t", length, nil)
		slow = append(slow, br)
	}
	for i := range 5 {
		status, _, b := call(t, "POST", a.URL+"/v1/topics/t/records", "application/json", []byte(`{"records":[{"value":`+itoa(i)+`}]}`))
		if status != http.StatusOK {
			t.Fatalf("produce beside unsent bodies: %d %s", status, b)
		}
	}
	for _, br := range slow {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4096)
		n, _ := resp.Body.Read(b)
		resp.Body.Close()
		wantProblem(t, resp.StatusCode, resp.Header, b[:n], http.StatusRequestTimeout, problem.CodeRequestTimeout)
	}
}

// What a body has sent counts against the budget: a half-sent body that
// holds the whole budget makes other produce requests wait with 429.
func TestSentBytesCountAgainstTheBudget(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Configure: func(c *agentd.Config) {
		c.HTTP.MaxRecordBytes = 64 << 10
		c.HTTP.MaxRequestBytes = 1 << 20
		c.HTTP.MaxInflightRequestBytes = 1 << 20
	}})
	createTopic(t, a, "t", 1, "")
	body := []byte(`{"records":[{"value":"` + strings.Repeat("v", 600<<10))
	conn, _ := openBody(t, a, "t", 1<<20, body)
	// The bytes reach the handler at their own pace: wait until its
	// buffer (1 MiB once past 512 KiB) holds the whole budget.
	waitUntil(t, func() bool { return metricValue(t, a, "silt_http_produce_inflight_bytes") >= 1<<20 })
	status, hdr, b := call(t, "POST", a.URL+"/v1/topics/t/records", "application/json", []byte(`{"records":[{"value":1}]}`))
	wantProblem(t, status, hdr, b, http.StatusTooManyRequests, problem.CodeBackpressure)
	conn.Close()
	waitUntil(t, func() bool { return metricValue(t, a, "silt_http_produce_inflight_bytes") == 0 })
	status, _, b = call(t, "POST", a.URL+"/v1/topics/t/records", "application/json", []byte(`{"records":[{"value":2}]}`))
	if status != http.StatusOK {
		t.Fatalf("produce after the half-sent body left: %d %s", status, b)
	}
}

// A client that sent Expect: 100-continue and is refused before any of
// its body is read (the budget is full) gets the 429 without being told
// to send: it uploads nothing that would be thrown away.
func TestRefusedContinueIsNotToldToSend(t *testing.T) {
	t.Parallel()
	a := agenttest.Start(t, agenttest.Options{Configure: func(c *agentd.Config) {
		c.HTTP.MaxRecordBytes = 64 << 10
		c.HTTP.MaxRequestBytes = 1 << 20
		c.HTTP.MaxInflightRequestBytes = 1 << 20
	}})
	topic := uniq("drain")
	createTopic(t, a, topic, 1, "")
	held, _ := openBody(t, a, topic, 1<<20, []byte(`{"records":[{"value":"`+strings.Repeat("v", 600<<10)))
	defer held.Close()
	waitUntil(t, func() bool { return metricValue(t, a, "silt_http_produce_inflight_bytes") >= 1<<20 })

	refusedUntold(t, a, "", topic)
}

// The same for a key with a produce byte quota, whose body the guard
// counts: net/http must still see its own body once the handler is done,
// or its clean-up reads the body, and says 100 Continue, itself.
func TestRefusedContinueWithQuotaIsNotToldToSend(t *testing.T) {
	t.Parallel()
	a, admin := secureAgent(t, agenttest.Options{Configure: func(c *agentd.Config) {
		c.HTTP.MaxRecordBytes = 64 << 10
		c.HTTP.MaxRequestBytes = 1 << 20
		c.HTTP.MaxInflightRequestBytes = 1 << 20
	}})
	topic := uniq("drainq")
	mustAs(t, http.StatusCreated, admin, "POST", a.URL+"/v1/topics", map[string]any{"name": topic, "partitions": 1})
	tok := quotaKey(t, a, admin, uniq("q"), map[string]any{"produce_bytes_per_sec": 1 << 30}, "produce:topic:"+topic)
	held, _ := openBodyAs(t, a, admin, topic, 1<<20, []byte(`{"records":[{"value":"`+strings.Repeat("v", 600<<10)))
	defer held.Close()
	waitUntil(t, func() bool { return metricValue(t, a, "silt_http_produce_inflight_bytes") >= 1<<20 })
	refusedUntold(t, a, tok, topic)
}

// refusedUntold sends a produce with Expect: 100-continue (as token) to
// an agent whose in-flight budget is full: it must get the 429 without
// being told to send its body.
func refusedUntold(t *testing.T, a *agenttest.Agent, token, topic string) {
	t.Helper()
	addr := strings.TrimPrefix(a.URL, "http://")
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	auth := ""
	if token != "" {
		auth = "Authorization: Bearer " + token + "\r\n"
	}
	fmt.Fprintf(conn, "POST /v1/topics/%s/records HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n%sExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", topic, addr, auth, 64<<10)
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusContinue {
		t.Fatal("refused with the budget full, the client was told to send its body (100 Continue)")
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	wantProblem(t, resp.StatusCode, resp.Header, b, http.StatusTooManyRequests, problem.CodeBackpressure)
}

// metricValue reads an unlabeled sample from the agent's /metrics.
func metricValue(t *testing.T, a *agenttest.Agent, name string) float64 {
	t.Helper()
	_, _, b := call(t, "GET", a.URL+"/metrics", "", nil)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
