package client_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"silt/client"
)

// lossyTransport forwards requests to the agent but, for the produce
// requests it is told to spoil, throws the agent's answer away after the
// agent committed and reports a failure instead: a lost response.
type lossyTransport struct {
	mu       sync.Mutex
	spoil    int    // produce requests left to spoil
	as503    bool   // answer 503 instead of a transport error
	produces int    // produce requests seen
	lost     []byte // the last answer thrown away
}

func (l *lossyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil || r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/records") {
		return resp, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.produces++
	if l.spoil == 0 {
		return resp, nil
	}
	l.spoil--
	l.lost, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("lossy transport: the agent answered %d: %s", resp.StatusCode, l.lost)
	}
	if !l.as503 {
		return nil, errors.New("lossy transport: connection reset")
	}
	body := `{"type":"urn:silt:problem:unavailable","title":"Service Unavailable","status":503,"code":"unavailable","retriable":true,"detail":"lost"}`
	return &http.Response{
		StatusCode: http.StatusServiceUnavailable,
		Header:     http.Header{"Content-Type": {"application/problem+json"}},
		Body:       io.NopCloser(strings.NewReader(body)),
		Request:    r,
	}, nil
}

func (l *lossyTransport) set(spoil int, as503 bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.spoil, l.as503, l.produces = spoil, as503, 0
}

func (l *lossyTransport) stats() (produces int, lost []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.produces, l.lost
}

var fastRetry = client.RetryPolicy{MaxAttempts: 4, MaxElapsed: 20 * time.Second, Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}

func TestIdempotentProducerRetryKeepsOffsets(t *testing.T) {
	for _, as503 := range []bool{false, true} {
		t.Run(fmt.Sprintf("503=%v", as503), func(t *testing.T) {
			lt := &lossyTransport{}
			c, _ := start(t, client.WithHTTPClient(&http.Client{Transport: lt}))
			ctx := testContext(t)
			if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "t", Partitions: 3}); err != nil {
				t.Fatal(err)
			}
			p, err := c.NewIdempotentProducer(ctx, "t", client.IdempotentOptions{Retry: fastRetry})
			if err != nil {
				t.Fatal(err)
			}
			// Something committed before, so offsets are not all zero.
			if _, err := p.Send(ctx, []client.Message{{Key: []byte("k1"), Value: []byte("first")}}); err != nil {
				t.Fatal(err)
			}

			lt.set(1, as503)
			msgs := []client.Message{
				{Key: []byte("k1"), Value: []byte("a")},
				{Key: []byte("k2"), Value: []byte("b")},
				{Value: []byte("c")},
				{Partition: client.Partition(2), Value: []byte("d")},
			}
			res, err := p.Send(ctx, msgs)
			if err != nil {
				t.Fatal(err)
			}
			produces, lost := lt.stats()
			if produces != 2 {
				t.Fatalf("%d produce requests, want the lost one and one resend", produces)
			}
			var original client.ProduceResult
			if err := json.Unmarshal(lost, &original); err != nil {
				t.Fatalf("lost answer %q: %v", lost, err)
			}
			if !res.Duplicate {
				t.Fatal("the resend was not answered as a duplicate")
			}
			if fmt.Sprint(res.Offsets) != fmt.Sprint(original.Offsets) {
				t.Fatalf("resend offsets %v, first commit %v", res.Offsets, original.Offsets)
			}
			var total int64
			for _, hw := range highWatermarks(t, c, "t") {
				total += hw
			}
			if total != 5 {
				t.Fatalf("%d records stored, want 5: the retry wrote twice", total)
			}

			// The sequences moved on: the next request is new, not a gap.
			lt.set(0, false)
			res, err = p.Send(ctx, msgs)
			if err != nil {
				t.Fatal(err)
			}
			if res.Duplicate {
				t.Fatal("a new request was taken for a duplicate")
			}
		})
	}
}

func TestIdempotentProducerStartsOverAfterFailure(t *testing.T) {
	lt := &lossyTransport{}
	c, _ := start(t, client.WithHTTPClient(&http.Client{Transport: lt}))
	ctx := testContext(t)
	if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	p, err := c.NewIdempotentProducer(ctx, "t", client.IdempotentOptions{Retry: fastRetry})
	if err != nil {
		t.Fatal(err)
	}
	first := p.ProducerID()
	msgs := []client.Message{{Value: []byte("x")}, {Value: []byte("y")}}
	lt.set(fastRetry.MaxAttempts, false) // every try's answer is lost
	if _, err := p.Send(ctx, msgs); err == nil {
		t.Fatal("Send succeeded although every answer was lost")
	}
	if n, _ := lt.stats(); n != fastRetry.MaxAttempts {
		t.Fatalf("%d tries, want %d", n, fastRetry.MaxAttempts)
	}
	// The first try committed. The same sequences under the same producer
	// would now be answered with those offsets for different records.
	res, err := p.Send(ctx, []client.Message{{Value: []byte("z1")}, {Value: []byte("z2")}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicate || res.Offsets[0].Offset != 2 {
		t.Fatalf("after a failure: %+v", res)
	}
	if p.ProducerID() == first {
		t.Fatal("the producer id did not change after a failure")
	}
	if hw := highWatermarks(t, c, "t"); hw[0] != 4 {
		t.Fatalf("high watermark %d, want 4", hw[0])
	}
}

func TestIdempotentProducerPartitionsLikeTheAgent(t *testing.T) {
	c, _ := start(t)
	ctx := testContext(t)
	const parts = 5
	if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "t", Partitions: parts}); err != nil {
		t.Fatal(err)
	}
	var msgs []client.Message
	for i := range 50 {
		msgs = append(msgs, client.Message{Key: fmt.Appendf(nil, "key-%d", i*7919), Value: []byte("v")})
	}
	byAgent, err := c.ProduceBinary(ctx, "t", msgs)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.NewIdempotentProducer(ctx, "t", client.IdempotentOptions{})
	if err != nil {
		t.Fatal(err)
	}
	byProducer, err := p.Send(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range msgs {
		if byAgent.Offsets[i].Partition != byProducer.Offsets[i].Partition {
			t.Fatalf("key %q: agent chose %d, producer %d", msgs[i].Key, byAgent.Offsets[i].Partition, byProducer.Offsets[i].Partition)
		}
	}
	// Keyless: one partition per request, moving between requests. An
	// empty key counts as no key.
	seen := map[int32]bool{}
	for range parts {
		res, err := p.Send(ctx, []client.Message{{Value: []byte("a")}, {Key: []byte{}, Value: []byte("b")}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Offsets[0].Partition != res.Offsets[1].Partition {
			t.Fatalf("one keyless request split: %+v", res.Offsets)
		}
		seen[res.Offsets[0].Partition] = true
	}
	if len(seen) != parts {
		t.Fatalf("keyless requests used partitions %v, want all %d", seen, parts)
	}
}

func TestIdempotentProducerConcurrentSends(t *testing.T) {
	c, _ := start(t)
	ctx := testContext(t)
	if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "t", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	p, err := c.NewIdempotentProducer(ctx, "t", client.IdempotentOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 5 {
				key := fmt.Appendf(nil, "g%d-%d", g, i)
				if _, err := p.Send(ctx, []client.Message{{Key: key, Value: bytes.Repeat(key, 3)}}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	hw := highWatermarks(t, c, "t")
	if hw[0]+hw[1] != 40 {
		t.Fatalf("high watermarks %v, want 40 records", hw)
	}
}
