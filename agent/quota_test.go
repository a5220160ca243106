package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"silt/agent"
	"silt/internal/agenttest"
	"silt/problem"
)

// The fetch quota is charged by the bytes of each answer: a plain fetch, a
// long-poll and a consumer group's fetch that return more than the key's
// share put it in debt, and its next fetch gets 429 with a Retry-After
// that matches the debt (not a wait: a long-poll in debt is refused at
// once, not parked). The charges are the bytes of the bodies sent.
// Nothing here depends on timing but the Retry-After lower bound, which
// only a pause of more than ten seconds between two requests could break.
func TestFetchQuota(t *testing.T) {
	a, admin := secureAgent(t, agenttest.Options{Bucket: agenttest.MinIOBucket(t)})
	mustAs(t, http.StatusCreated, admin, "POST", a.URL+"/v1/topics", map[string]any{"name": "fq", "partitions": 1})
	produceValues(t, a, admin, "fq", 40, 1000)
	const rate = 2000 // bytes/s, with a burst of one second's worth

	fetch := func(t *testing.T, tok, url string) (int, http.Header, []byte) {
		t.Helper()
		return as(t, tok, "GET", a.URL+url, nil)
	}
	// refused checks that a key in debt is refused, and says for how long.
	refused := func(t *testing.T, tok, url string, debt int) {
		t.Helper()
		status, hdr, b := fetch(t, tok, url)
		p := wantProblem(t, status, hdr, b, http.StatusTooManyRequests, problem.CodeQuotaExceeded)
		ra, _ := strconv.Atoi(hdr.Get("Retry-After"))
		if ra < 2 || ra > debt/rate+2 || !strings.Contains(p.Detail, "fetch") {
			t.Fatalf("after %d bytes at %d B/s: Retry-After %q, detail %q", debt, rate, hdr.Get("Retry-After"), p.Detail)
		}
	}

	t.Run("fetch", func(t *testing.T) {
		name := uniq("fetcher")
		tok := quotaKey(t, a, admin, name, map[string]any{"fetch_bytes_per_sec": rate}, "consume:topic:fq")
		status, _, b := fetch(t, tok, "/v1/topics/fq/partitions/0/records?offset=0")
		if status != http.StatusOK || len(b) < 10*rate {
			t.Fatalf("first fetch: %d, %d bytes", status, len(b))
		}
		// In debt: refused, a long-poll too, and at once.
		refused(t, tok, "/v1/topics/fq/partitions/0/records?offset=40", len(b))
		refused(t, tok, "/v1/topics/fq/partitions/0/records?offset=40&wait_ms=20000", len(b))
		if got := quotaMetric(t, a, "silt_auth_quota_bytes_total", name); got != float64(len(b)) {
			t.Fatalf("charged %v bytes for a body of %d", got, len(b))
		}
		if got := quotaMetric(t, a, "silt_auth_quota_throttled_total", name); got < 2 {
			t.Fatalf("throttled %v times, want 2", got)
		}
		// Other keys are not slowed.
		mustAs(t, http.StatusOK, admin, "GET", a.URL+"/v1/topics/fq/partitions/0/records?offset=0", nil)
	})

	t.Run("long-poll", func(t *testing.T) {
		name := uniq("poller")
		tok := quotaKey(t, a, admin, name, map[string]any{"fetch_bytes_per_sec": rate}, "consume:topic:fq")
		var offs struct {
			HighWatermark int64 `json:"high_watermark"`
		}
		if err := json.Unmarshal(mustAs(t, http.StatusOK, admin, "GET", a.URL+"/v1/topics/fq/partitions/0/offsets", nil), &offs); err != nil {
			t.Fatal(err)
		}
		hw := offs.HighWatermark
		parked := fetchWaits(t, a)
		type result struct {
			status int
			body   []byte
			err    error
		}
		done := make(chan result, 1)
		go func() {
			req, _ := http.NewRequest("GET", a.URL+"/v1/topics/fq/partitions/0/records?offset="+strconv.FormatInt(hw, 10)+"&wait_ms=30000", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				done <- result{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			done <- result{resp.StatusCode, b, err}
		}()
		waitUntil(t, func() bool { return fetchWaits(t, a) > parked })
		// One produce request commits at once: the long-poll wakes to all of it.
		produceValues(t, a, admin, "fq", 40, 1000)
		var r result
		select {
		case r = <-done:
		case <-time.After(60 * time.Second):
			t.Fatal("the long-poll did not answer")
		}
		if r.err != nil || r.status != http.StatusOK || len(r.body) < 10*rate {
			t.Fatalf("long-poll: %d, %d bytes, %v", r.status, len(r.body), r.err)
		}
		refused(t, tok, "/v1/topics/fq/partitions/0/records?offset="+strconv.FormatInt(hw+40, 10)+"&wait_ms=20000", len(r.body))
		if got := quotaMetric(t, a, "silt_auth_quota_bytes_total", name); got != float64(len(r.body)) {
			t.Fatalf("charged %v bytes for a body of %d", got, len(r.body))
		}
	})

	t.Run("group", func(t *testing.T) {
		name := uniq("member")
		tok := quotaKey(t, a, admin, name, map[string]any{"fetch_bytes_per_sec": rate}, "consume:topic:fq", "consume:group:fq-g")
		var join agent.JoinGroupResponse
		b := mustAs(t, http.StatusOK, tok, "POST", a.URL+"/v1/groups/fq-g/members", map[string]any{"topics": []string{"fq"}, "auto_offset_reset": "earliest"})
		if err := json.Unmarshal(b, &join); err != nil || join.MemberID == "" {
			t.Fatalf("join: %s %v", b, err)
		}
		records := "/v1/groups/fq-g/members/" + join.MemberID + "/records"
		status, _, b := fetch(t, tok, records)
		if status != http.StatusOK || len(b) < 10*rate {
			t.Fatalf("group fetch: %d, %d bytes", status, len(b))
		}
		refused(t, tok, records+"?wait_ms=20000", len(b))
		if got := quotaMetric(t, a, "silt_auth_quota_bytes_total", name); got != float64(len(b)) {
			t.Fatalf("charged %v bytes for a body of %d", got, len(b))
		}
	})
}

// An SSE stream over its key's fetch quota slows to the quota: at every
// moment it has delivered no more than the quota allows since it opened
// (one second's burst and a slice of events of slack), it goes on
// delivering (it pauses, it neither ends nor errs), and the agent counts
// the pauses. Unthrottled, the backlog (some nine seconds' worth) would
// arrive at once and break the bound within a fraction of a second. The
// bound only gets looser on a slow machine, so it cannot flake.
//
// Then the key is revoked while its stream waits out a debt (a record ten
// times the quota was just sent): the stream ends at once with the
// withdrawal event, and the record queued behind the debt is never sent.
func TestFetchQuotaPacesStream(t *testing.T) {
	a, admin := secureAgent(t, agenttest.Options{Bucket: agenttest.MinIOBucket(t)})
	mustAs(t, http.StatusCreated, admin, "POST", a.URL+"/v1/topics", map[string]any{"name": "fs", "partitions": 1})
	const rate = 8000
	const backlog = 64
	produceValues(t, a, admin, "fs", backlog, 1000)
	name := uniq("tail")
	tok, id := quotaKeyID(t, a, admin, name, map[string]any{"fetch_bytes_per_sec": rate}, "consume:topic:fs")

	// Slack: the burst, a slice (an eighth of the rate) and an event.
	s := openPacedStream(t, tok, a.URL+"/v1/topics/fs/partitions/0/stream?offset=earliest", rate, 2*rate+4096)
	waitUntil(t, func() bool { return s.has(backlog-1) || s.ended() })
	if v := s.stopChecking(); v != "" {
		t.Fatal(v)
	}
	if s.ended() || strings.Contains(s.text(), "event: error") {
		t.Fatalf("the stream ended or erred instead of pausing:\n%s", tail(s.text()))
	}
	total := s.bytes()
	if total < 8*rate {
		t.Fatalf("the backlog was %d bytes: too small to tell a paced stream from a free one", total)
	}
	if got := quotaMetric(t, a, "silt_auth_quota_throttled_total", name); got == 0 {
		t.Fatal("the stream was never paused")
	}
	if got := quotaMetric(t, a, "silt_auth_quota_bytes_total", name); got < float64(total) {
		t.Fatalf("charged %v bytes, delivered %d", got, total)
	}
	t.Logf("the stream delivered %d bytes in %s at a quota of %d B/s", total, s.elapsed().Round(time.Millisecond), rate)

	// A record of ten seconds' worth, and one behind it.
	mustAs(t, http.StatusOK, admin, "POST", a.URL+"/v1/topics/fs/records", map[string]any{"records": []map[string]any{
		{"value": strings.Repeat("b", 10*rate), "partition": 0}, {"value": "behind", "partition": 0}}})
	waitUntil(t, func() bool { return s.has(backlog) || s.ended() })
	mustAs(t, http.StatusOK, admin, "DELETE", a.URL+"/v1/keys/"+id, nil)
	if err := s.waitEnd(5 * time.Second); err != nil {
		t.Fatalf("%v after the revocation:\n%s", err, tail(s.text()))
	}
	out := s.text()
	if s.has(backlog+1) || !strings.HasSuffix(out, "\n\n") || !strings.Contains(out[strings.LastIndex(out, "event: "):], `"unauthenticated"`) {
		t.Fatalf("after the revocation the stream should end with the withdrawal, and nothing behind the debt:\n%s", tail(out))
	}
}

// produceValues produces n records of size-byte string values to
// partition 0, in one request.
func produceValues(t *testing.T, a *agenttest.Agent, token, topic string, n, size int) {
	t.Helper()
	recs := make([]map[string]any, n)
	for i := range recs {
		recs[i] = map[string]any{"value": strings.Repeat("v", size), "partition": 0}
	}
	mustAs(t, http.StatusOK, token, "POST", a.URL+"/v1/topics/"+topic+"/records", map[string]any{"records": recs})
}

// quotaKey creates a key with quotas and returns its token.
func quotaKey(t *testing.T, a *agenttest.Agent, admin, name string, quota map[string]any, allow ...string) string {
	t.Helper()
	tok, _ := quotaKeyID(t, a, admin, name, quota, allow...)
	return tok
}

func quotaKeyID(t *testing.T, a *agenttest.Agent, admin, name string, quota map[string]any, allow ...string) (string, string) {
	t.Helper()
	var created agent.CreateKeyResponse
	b := mustAs(t, http.StatusCreated, admin, "POST", a.URL+"/v1/keys", map[string]any{"name": name, "allow": allow, "quota": quota})
	if err := json.Unmarshal(b, &created); err != nil {
		t.Fatal(err)
	}
	return created.Token, created.Key.ID
}

// quotaMetric is a per-key quota counter's value for the fetch quota.
func quotaMetric(t *testing.T, a *agenttest.Agent, family, key string) float64 {
	t.Helper()
	fams, err := a.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != family {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["key"] != key || labels["quota"] != "fetch_bytes" {
				continue metrics
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// pacedStream reads an SSE stream and checks, at every read while
// checking, that what it has received stays within rate × the time since
// it was opened + slack.
type pacedStream struct {
	start       time.Time
	rate, slack float64
	done        chan struct{}

	mu        sync.Mutex
	buf       bytes.Buffer
	checking  bool
	violation string
	end       error
}

func openPacedStream(t *testing.T, token, url string, rate, slack float64) *pacedStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	s := &pacedStream{start: time.Now(), rate: rate, slack: slack, checking: true, done: make(chan struct{})}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	go func() {
		defer close(s.done)
		defer resp.Body.Close()
		p := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(p)
			s.mu.Lock()
			s.buf.Write(p[:n])
			if allowed := s.rate*time.Since(s.start).Seconds() + s.slack; s.checking && s.violation == "" && float64(s.buf.Len()) > allowed {
				s.violation = fmt.Sprintf("the stream delivered %d bytes in %s, more than %.0f B/s allow (%.0f with the slack)",
					s.buf.Len(), time.Since(s.start).Round(time.Millisecond), s.rate, allowed)
			}
			if err != nil {
				s.end = err
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
		}
	}()
	return s
}

// has reports whether the record of offset id was received whole.
func (s *pacedStream) has(id int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buf.Bytes()
	i := bytes.Index(b, []byte("\nid: "+strconv.Itoa(id)+"\n"))
	return i >= 0 && bytes.Contains(b[i+1:], []byte("\n\n"))
}

func (s *pacedStream) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *pacedStream) waitEnd(limit time.Duration) error {
	select {
	case <-s.done:
		return nil
	case <-time.After(limit):
		return fmt.Errorf("the stream did not end within %s", limit)
	}
}

// stopChecking ends the check and returns its violation, if any.
func (s *pacedStream) stopChecking() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checking = false
	return s.violation
}

func (s *pacedStream) bytes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Len()
}

func (s *pacedStream) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func (s *pacedStream) elapsed() time.Duration { return time.Since(s.start) }

// tail is the end of a long text, for failure messages.
func tail(s string) string {
	if len(s) > 1500 {
		return "…" + s[len(s)-1500:]
	}
	return s
}
