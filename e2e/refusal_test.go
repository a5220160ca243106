package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"silt/binformat"
	"silt/problem"
)

// A produce refused because produce request bodies in flight are at
// --max-inflight-request-bytes is answered 429 problem+json, whatever
// the body's size, to a client that sends its whole request before it
// reads the answer (as a loaded client effectively does), and the
// connection stays open for the next request. The agent used to answer
// before reading a body above 256 KiB and close the connection: the
// client, still writing, got a reset instead of the 429
// (docs/reliability.md, "Overload").
func TestRefusedLargeProduceGets429(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Postgres and MinIO (make test)")
	}
	const budget, body = 16 * mib, 12 * mib
	a := startHostileAgent(t, fmt.Sprintf("SILT_MAX_INFLIGHT_REQUEST_BYTES=%d", budget), fmt.Sprintf("SILT_MAX_REQUEST_BYTES=%d", budget))
	topic := fmt.Sprintf("refusal-%d", time.Now().UnixNano())
	a.createTopic(topic)

	// A request that sent half its body and stalls holds the whole budget
	// (its buffer, grown to the announced length).
	staller, err := net.Dial("tcp", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer staller.Close()
	if _, err := io.WriteString(staller, produceHead(a.addr, topic, budget)); err != nil {
		t.Fatal(err)
	}
	if _, err := staller.Write(make([]byte, budget/2+1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stalled request to hold the budget", 30*time.Second, func() bool {
		v, ok := a.metric("silt_http_produce_inflight_bytes")
		return ok && v == budget
	})

	// Large produces now are refused: each gets its 429, and its
	// connection serves the next request.
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			c, err := net.Dial("tcp", a.addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			status, code, err := sendWholeThenRead(c, a.addr, topic, make([]byte, body))
			if err != nil {
				t.Errorf("client %d: %v (want a 429 answer)", i, err)
				return
			}
			if status != http.StatusTooManyRequests || code != problem.CodeBackpressure {
				t.Errorf("client %d: %d %s, want 429 %s", i, status, code, problem.CodeBackpressure)
				return
			}
			if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: "+a.addr+"\r\n\r\n"); err != nil {
				t.Errorf("client %d: the connection did not stay open after the 429: %v", i, err)
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Errorf("client %d: the connection did not stay open after the 429: %v", i, err)
				return
			}
			resp.Body.Close()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	// With the budget free again, many large produces at once, beyond
	// it: every one is answered (200, or 429 and sent again), none is
	// reset, and every record lands once.
	staller.Close()
	waitFor(t, "the budget to be free", 30*time.Second, func() bool {
		v, ok := a.metric("silt_http_produce_inflight_bytes")
		return ok && v == 0
	})
	// Bodies of 6 MiB take a buffer of 8 MiB: two fit in the budget.
	const senders, records, each = 8, 12, 6 * mib
	offsets := make(chan int64, senders*records)
	refused := make(chan int, senders)
	for i := range senders {
		wg.Go(func() {
			req := &binformat.Request{}
			for j := range records {
				v := make([]byte, each/records-64)
				copy(v, fmt.Sprintf("s%d-%d", i, j))
				req.Records = append(req.Records, binformat.Record{Partition: -1, Timestamp: -1, Value: v})
			}
			payload := binformat.AppendRequest(nil, req)
			n := 0
			for attempt := 0; ; attempt++ {
				if attempt == 50 {
					t.Errorf("sender %d: refused 50 times", i)
					return
				}
				c, err := net.Dial("tcp", a.addr)
				if err != nil {
					t.Error(err)
					return
				}
				status, got, err := sendWholeThenReadOffsets(c, a.addr, topic, payload)
				c.Close()
				switch {
				case err != nil:
					t.Errorf("sender %d: %v (want an answer)", i, err)
					return
				case status == http.StatusTooManyRequests:
					n++
					continue
				case status != http.StatusOK || len(got) != records:
					t.Errorf("sender %d: %d with %d offsets", i, status, len(got))
					return
				}
				for _, o := range got {
					offsets <- o
				}
				refused <- n
				return
			}
		})
	}
	wg.Wait()
	close(offsets)
	close(refused)
	if t.Failed() {
		return
	}
	seen := map[int64]bool{}
	for o := range offsets {
		if seen[o] || o < 0 || o >= senders*records {
			t.Fatalf("offset %d given twice or out of [0, %d)", o, senders*records)
		}
		seen[o] = true
	}
	total := 0
	for n := range refused {
		total += n
	}
	t.Logf("%d senders of %d MiB bodies against a %d MiB budget: %d refusals answered 429, all records acknowledged once",
		senders, each/mib, budget/mib, total)
}

func produceHead(addr, topic string, length int) string {
	return fmt.Sprintf("POST /v1/topics/%s/records HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n",
		topic, addr, binformat.MediaType, length)
}

// sendWholeThenRead writes a produce request, body and all, and only then
// reads the answer: its status and problem code.
func sendWholeThenRead(c net.Conn, addr, topic string, payload []byte) (int, problem.Code, error) {
	resp, b, err := roundTripWhole(c, addr, topic, payload)
	if err != nil {
		return 0, "", err
	}
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, "", nil
	}
	var p problem.Details
	if ct := resp.Header.Get("Content-Type"); ct != problem.MediaType {
		return resp.StatusCode, "", fmt.Errorf("%d answered as %q: %s", resp.StatusCode, ct, b)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return resp.StatusCode, "", err
	}
	if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
		return resp.StatusCode, p.Code, fmt.Errorf("429 without Retry-After")
	}
	return resp.StatusCode, p.Code, nil
}

// sendWholeThenReadOffsets is sendWholeThenRead, returning the offsets of
// a 200.
func sendWholeThenReadOffsets(c net.Conn, addr, topic string, payload []byte) (int, []int64, error) {
	resp, b, err := roundTripWhole(c, addr, topic, payload)
	if err != nil {
		return 0, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Content-Type") != problem.MediaType {
			return resp.StatusCode, nil, fmt.Errorf("429 answered as %q", resp.Header.Get("Content-Type"))
		}
		return resp.StatusCode, nil, nil
	}
	var out struct {
		Offsets []struct {
			Offset int64 `json:"offset"`
		} `json:"offsets"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return resp.StatusCode, nil, err
	}
	var offs []int64
	for _, o := range out.Offsets {
		offs = append(offs, o.Offset)
	}
	return resp.StatusCode, offs, nil
}

func roundTripWhole(c net.Conn, addr, topic string, payload []byte) (*http.Response, []byte, error) {
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.WriteString(c, produceHead(addr, topic, len(payload))); err != nil {
		return nil, nil, fmt.Errorf("writing the head: %w", err)
	}
	if _, err := c.Write(payload); err != nil {
		return nil, nil, fmt.Errorf("writing the body: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the answer: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the answer: %w", err)
	}
	if strings.EqualFold(resp.Header.Get("Connection"), "close") && resp.StatusCode == http.StatusTooManyRequests {
		return resp, b, fmt.Errorf("429 closes the connection")
	}
	return resp, b, nil
}
