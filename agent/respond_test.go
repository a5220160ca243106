package agent_test

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"silt/agent"
	"silt/binformat"
	"silt/internal/agentd"
	"silt/internal/agenttest"
	"silt/recordjson"
)

// produceRandom produces n records of size random base64 bytes.
func produceRandom(t *testing.T, a *agenttest.Agent, topic string, n, size int) {
	t.Helper()
	raw := make([]byte, size*3/4)
	for sent := 0; sent < n; {
		var b strings.Builder
		b.WriteString(`{"records":[`)
		for i := 0; i < 16 && sent < n; i++ {
			_, _ = rand.Read(raw)
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"value":%q}`, base64.StdEncoding.EncodeToString(raw))
			sent++
		}
		b.WriteString(`]}`)
		if status, _, body := call(t, "POST", a.URL+"/v1/topics/"+topic+"/records", "application/json", []byte(b.String())); status != http.StatusOK {
			t.Fatalf("produce: %d %s", status, body)
		}
	}
}

// dialNonReader connects with a 4 KiB receive buffer and sends a GET
// with the header fields hdr (name, value, ...).
func dialNonReader(t *testing.T, a *agenttest.Agent, path string, hdr ...string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) }); err != nil {
			return err
		}
		return serr
	}}
	addr := strings.TrimPrefix(a.URL, "http://")
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fields := ""
	for i := 0; i+1 < len(hdr); i += 2 {
		fields += hdr[i] + ": " + hdr[i+1] + "\r\n"
	}
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", path, addr, fields)
	return conn
}

// Clients that stop reading a fetch or a stream are cut off once a write
// makes no progress for the write timeout, and what their responses held
// of the in-flight budget comes back. Clients that read are never cut,
// however long they wait: a long-poll and an idle stream outlive the
// write timeout.
func TestNonReadingClientsAreCutOff(t *testing.T) {
	t.Parallel()
	const writeTimeout = time.Second
	a := agenttest.Start(t, agenttest.Options{Configure: func(c *agentd.Config) {
		c.HTTP.WriteTimeout = writeTimeout
		c.HTTP.SSEHeartbeat = writeTimeout / 2
		c.MemoryLimit = 1 << 30              // room for the fetch budget below
		c.Fetch.MaxInflightBytes = 128 << 20 // three fetches of 32 MiB at once
	}})
	createTopic(t, a, "t", 1, "")
	createTopic(t, a, "quiet", 1, "")
	produceRandom(t, a, "t", 128, 64<<10) // 8 MiB: more than socket buffers hold (4 MiB)

	// A reading stream on an idle partition, and a long-poll, both
	// waiting longer than the write timeout.
	stream, err := http.Get(a.URL + "/v1/topics/quiet/partitions/0/stream?offset=0")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	lines := bufio.NewReader(stream.Body)
	poll := make(chan string, 1)
	go func() {
		status, _, b := call(t, "GET", a.URL+"/v1/topics/quiet/partitions/0/records?offset=0&wait_ms=3000", "", nil)
		poll <- fmt.Sprintf("%d %s", status, b)
	}()

	fetcher := dialNonReader(t, a, "/v1/topics/t/partitions/0/records?offset=0&max_bytes=33554432")
	batches := dialNonReader(t, a, "/v1/topics/t/partitions/0/records?offset=0&max_bytes=33554432", "Accept", binformat.BatchesMediaType)
	streamer := dialNonReader(t, a, "/v1/topics/t/partitions/0/stream?offset=0&max_bytes=33554432")
	waitUntil(t, func() bool { return metricValue(t, a, "silt_fetch_inflight_bytes") > 0 })
	waitUntil(t, func() bool { return metricValue(t, a, "silt_fetch_inflight_bytes") == 0 })
	for name, conn := range map[string]net.Conn{"fetch": fetcher, "batches": batches, "stream": streamer} {
		_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK || err == nil || n >= 8<<20 {
			t.Fatalf("%s: status %d, %d bytes, %v; want a response cut short", name, resp.StatusCode, n, err)
		}
	}

	if got := <-poll; !strings.HasPrefix(got, "200 ") {
		t.Fatalf("long-poll across the write timeout: %s", got)
	}
	produceJSON(t, a, "quiet", agent.ProduceRequest{Records: []recordjson.Record{{Value: json.RawMessage(`1`)}}})
	for {
		line, err := lines.ReadString('\n')
		if err != nil {
			t.Fatalf("idle stream cut: %v", err)
		}
		if strings.HasPrefix(line, "event: record") {
			break
		}
	}
}
