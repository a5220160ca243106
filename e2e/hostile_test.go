package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"silt/localstack"
)

// The attacks of docs/security.md ("Hostile clients"), each run for real
// against one `silt agent` process on loopback, bounded in connections
// and time. Each test checks that legitimate produce (and fetch) keeps
// succeeding during the attack and that the agent's resident memory stays
// within a bound derived from its memory settings. The agent is built
// without the race detector here, whatever the test binary: RSS under the
// race detector would measure the detector.

const mib = 1 << 20

var (
	plainOnce sync.Once
	plainPath string
	plainErr  error
)

// siltBinaryPlain is ./cmd/silt built without -race.
func siltBinaryPlain(t *testing.T) string {
	t.Helper()
	bin := siltBinary(t) // also creates buildDir
	if !raceEnabled {
		return bin
	}
	plainOnce.Do(func() {
		plainPath = filepath.Join(buildDir, "silt-plain")
		_, file, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-o", plainPath, "./cmd/silt")
		cmd.Dir = filepath.Dir(filepath.Dir(file))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			plainErr = fmt.Errorf("go build: %v\n%s", err, out.String())
		}
	})
	if plainErr != nil {
		t.Fatal(plainErr)
	}
	return plainPath
}

type hostileAgent struct {
	t    *testing.T
	proc *localstack.AgentProc
	url  string
	addr string // host:port
}

func startHostileAgent(t *testing.T, env ...string) *hostileAgent {
	t.Helper()
	c := newCluster(t, env...)
	c.bin = siltBinaryPlain(t)
	p := c.start("hostile")
	return &hostileAgent{t: t, proc: p, url: p.URL, addr: strings.TrimPrefix(p.URL, "http://")}
}

func (a *hostileAgent) createTopic(name string) {
	a.t.Helper()
	if _, err := request("POST", a.url+"/v1/topics", map[string]any{"name": name, "partitions": 1}, nil); err != nil {
		a.t.Fatal(err)
	}
}

// rss is the agent's resident set size in bytes (VmRSS).
func (a *hostileAgent) rss() int64 {
	a.t.Helper()
	n, err := vmRSS(a.proc.PID())
	if err != nil {
		a.t.Fatal(err)
	}
	return n
}

func vmRSS(pid int) (int64, error) { return procStatus(pid, "VmRSS:") }

// metric reads one unlabeled sample from /metrics; ok is false when the
// agent does not export it.
func (a *hostileAgent) metric(name string) (float64, bool) {
	resp, err := httpClient.Get(a.url + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// rssWatch samples an agent's RSS until halted and keeps the peak.
type rssWatch struct {
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func (a *hostileAgent) watchRSS() *rssWatch {
	w := &rssWatch{stop: make(chan struct{}), done: make(chan struct{})}
	pid := a.proc.PID()
	go func() {
		defer close(w.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if n, err := vmRSS(pid); err == nil && n > w.peak.Load() {
				w.peak.Store(n)
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	a.t.Cleanup(func() { w.halt() })
	return w
}

func (w *rssWatch) halt() int64 {
	w.once.Do(func() { close(w.stop) })
	<-w.done
	return w.peak.Load()
}

// tally counts legitimate requests by outcome.
type tally struct {
	mu    sync.Mutex
	ok    int
	total int
	other map[string]int
}

func (l *tally) add(status int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total++
	switch {
	case err != nil:
		if l.other == nil {
			l.other = map[string]int{}
		}
		l.other[err.Error()]++
	case status == http.StatusOK:
		l.ok++
	default:
		if l.other == nil {
			l.other = map[string]int{}
		}
		l.other[strconv.Itoa(status)]++
	}
}

func (l *tally) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d/%d ok (%.0f%%), others %v", l.ok, l.total, 100*float64(l.ok)/float64(max(l.total, 1)), l.other)
}

func (l *tally) all() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total > 0 && l.ok == l.total
}

// produceOnce sends one small JSON produce request.
func (a *hostileAgent) produceOnce(topic string, i int) (int, error) {
	body := fmt.Sprintf(`{"records":[{"key":"k%d","value":{"n":%d}}]}`, i, i)
	resp, err := httpClient.Post(a.url+"/v1/topics/"+topic+"/records", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// rawProduce posts body and returns the status and the problem code.
func (a *hostileAgent) rawProduce(topic, contentType string, body []byte) (int, string, error) {
	resp, err := httpClient.Post(a.url+"/v1/topics/"+topic+"/records", contentType, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	return resp.StatusCode, problemCode(resp.Body), nil
}

func problemCode(r io.Reader) string {
	var p struct {
		Code string `json:"code"`
	}
	b, _ := io.ReadAll(io.LimitReader(r, 1<<20))
	_ = json.Unmarshal(b, &p)
	return p.Code
}

// slowBody is a produce request whose headers were sent and whose body
// never comes.
type slowBody struct {
	conn net.Conn
	br   *bufio.Reader
}

// openSlowBody sends produce headers announcing a body (16 MiB by
// Content-Length, or chunked) and waits for the agent's 100 Continue,
// which it sends once the handler reads the body: from then on the
// request is in the handler and holds whatever it reserved.
func (a *hostileAgent) openSlowBody(topic string, chunked bool) *slowBody {
	a.t.Helper()
	conn, err := net.DialTimeout("tcp", a.addr, 10*time.Second)
	if err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() { conn.Close() })
	length := "Content-Length: " + strconv.Itoa(16*mib)
	if chunked {
		length = "Transfer-Encoding: chunked"
	}
	fmt.Fprintf(conn, "POST /v1/topics/%s/records HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n%s\r\n\r\n", topic, a.addr, length)
	s := &slowBody{conn: conn, br: bufio.NewReader(conn)}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := s.br.ReadString('\n')
	if err != nil || !strings.Contains(line, " 100 ") {
		a.t.Fatalf("slow body: expected 100 Continue, got %q, %v", line, err)
	}
	if blank, err := s.br.ReadString('\n'); err != nil || blank != "\r\n" {
		a.t.Fatalf("slow body: after 100 Continue: %q, %v", blank, err)
	}
	return s
}

// answer waits until deadline for the agent's final answer to a slow body.
func (s *slowBody) answer(deadline time.Time) (int, string, error) {
	_ = s.conn.SetReadDeadline(deadline)
	resp, err := http.ReadResponse(s.br, nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	return resp.StatusCode, problemCode(resp.Body), nil
}

// Attack 1: 16 connections send produce headers (a 16 MiB Content-Length,
// or chunked) and then no body. Legitimate produce must keep succeeding
// while they are open, and each of them gets 408 once the body timeout
// passes.
func TestHostileSlowBodies(t *testing.T) {
	const bodyTimeout = 10 * time.Second
	a := startHostileAgent(t, "SILT_REQUEST_BODY_TIMEOUT="+bodyTimeout.String())
	topic := fmt.Sprintf("slow-%d", time.Now().UnixNano())
	a.createTopic(topic)
	idle := a.rss()
	watch := a.watchRSS()

	slow := make([]*slowBody, 16)
	for i := range slow {
		slow[i] = a.openSlowBody(topic, i%2 == 1)
	}
	var legit tally
	for i := range 50 {
		legit.add(a.produceOnce(topic, i))
	}
	answers := map[string]int{}
	deadline := time.Now().Add(bodyTimeout + time.Minute)
	for _, s := range slow {
		status, code, err := s.answer(deadline)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				err = errors.New("timed out")
			}
			answers["no answer: "+err.Error()]++
			continue
		}
		answers[fmt.Sprintf("%d %s", status, code)]++
	}
	peak := watch.halt()
	// Slow bodies hold what they sent (nothing) and a small buffer each.
	bound := idle + 64*mib
	t.Logf("slow bodies: legitimate produce %s; agent RSS idle %d MiB, peak %d MiB (bound %d MiB); slow requests answered %v",
		&legit, idle/mib, peak/mib, bound/mib, answers)
	if !legit.all() {
		t.Errorf("legitimate produce failed during the attack: %s", &legit)
	}
	if answers["408 request_timeout"] != len(slow) {
		t.Errorf("slow bodies were answered %v, want %d × 408 request_timeout", answers, len(slow))
	}
	if peak > bound {
		t.Errorf("agent RSS peaked at %d MiB, over the bound of %d MiB", peak/mib, bound/mib)
	}
}

// dialTinyReceiveBuffer connects with a 4 KiB receive buffer.
func dialTinyReceiveBuffer(addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	return d.Dial("tcp", addr)
}

// fetchOnce fetches up to 1 MiB from offset, honoring Retry-After on 429
// until limit; first reports whether the first attempt succeeded.
func (a *hostileAgent) fetchOnce(topic string, offset int64, limit time.Duration) (status int, first bool, err error) {
	deadline := time.Now().Add(limit)
	for attempt := 0; ; attempt++ {
		resp, err := httpClient.Get(fmt.Sprintf("%s/v1/topics/%s/partitions/0/records?offset=%d&max_bytes=%d", a.url, topic, offset, mib))
		if err != nil {
			return 0, false, err
		}
		var body struct {
			Records []json.RawMessage `json:"records"`
		}
		derr := json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && (derr != nil || len(body.Records) == 0) {
			return 0, false, fmt.Errorf("fetch at %d: 200 with %d records, %v", offset, len(body.Records), derr)
		}
		if resp.StatusCode != http.StatusTooManyRequests || time.Now().After(deadline) {
			return resp.StatusCode, attempt == 0, nil
		}
		wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		t := time.NewTimer(time.Duration(max(wait, 1)) * time.Second)
		<-t.C
	}
}

// Attack 2: 20 sockets with a 4 KiB receive buffer ask for 64 MiB of
// records and never read. Legitimate produce and fetch must keep
// succeeding, the agent's memory must stay bounded, and the agent must
// drop the non-readers once the write timeout passes.
func TestHostileNonReadingFetchers(t *testing.T) {
	const (
		writeTimeout = 5 * time.Second
		fetchBudget  = 128 * mib
		cacheBytes   = 64 * mib
		objectCache  = 64 * mib
		bufferBytes  = 64 * mib
		memoryLimit  = 1024 * mib // room for the budgets above
		dataBytes    = 72 * mib
		valueBytes   = 64 << 10
	)
	a := startHostileAgent(t,
		"SILT_WRITE_TIMEOUT="+writeTimeout.String(),
		"SILT_MAX_INFLIGHT_FETCH_BYTES="+strconv.Itoa(fetchBudget),
		"SILT_CACHE_BYTES="+strconv.Itoa(cacheBytes),
		"SILT_OBJECT_CACHE_BYTES="+strconv.Itoa(objectCache),
		"SILT_MAX_BUFFER_BYTES="+strconv.Itoa(bufferBytes),
		"SILT_MEMORY_LIMIT="+strconv.Itoa(memoryLimit))
	topic := fmt.Sprintf("tail-%d", time.Now().UnixNano())
	a.createTopic(topic)
	idle := a.rss()

	// 72 MiB of incompressible records, 1 MiB per request.
	raw := make([]byte, valueBytes*3/4)
	for sent := 0; sent < dataBytes; {
		var b strings.Builder
		b.WriteString(`{"records":[`)
		for i := 0; i < mib/valueBytes; i++ {
			_, _ = rand.Read(raw)
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"value":%q}`, base64.StdEncoding.EncodeToString(raw))
			sent += valueBytes
		}
		b.WriteString(`]}`)
		status, code, err := a.rawProduce(topic, "application/json", []byte(b.String()))
		if err != nil || status != http.StatusOK {
			t.Fatalf("load data: %d %s %v", status, code, err)
		}
	}
	records := int64(dataBytes / valueBytes)
	if status, _, err := a.fetchOnce(topic, 0, time.Minute); err != nil || status != http.StatusOK {
		t.Fatalf("fetch before the attack: %d %v", status, err)
	}

	watch := a.watchRSS()
	const attackers = 20
	conns := make([]net.Conn, attackers)
	for i := range conns {
		c, err := dialTinyReceiveBuffer(a.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns[i] = c
		fmt.Fprintf(c, "GET /v1/topics/%s/partitions/0/records?offset=0&max_bytes=%d&max_records=100000 HTTP/1.1\r\nHost: %s\r\n\r\n", topic, 64*mib, a.addr)
	}
	var produced, fetched tally
	firstTry := 0
	for i := range 30 {
		produced.add(a.produceOnce(topic, i))
		status, first, err := a.fetchOnce(topic, int64(i)*records/30, time.Minute)
		fetched.add(status, err)
		if first && status == http.StatusOK {
			firstTry++
		}
	}
	peak := watch.halt()
	bound := idle + 2*(fetchBudget+cacheBytes+objectCache+bufferBytes)
	t.Logf("non-reading fetchers: legitimate produce %s; legitimate fetch %s, %d/30 at the first attempt; agent RSS idle %d MiB, peak %d MiB (bound %d MiB)",
		&produced, &fetched, firstTry, idle/mib, peak/mib, bound/mib)
	if !produced.all() {
		t.Errorf("legitimate produce failed during the attack: %s", &produced)
	}
	if !fetched.all() {
		t.Errorf("legitimate fetch failed during the attack (after retries): %s", &fetched)
	}
	if peak > bound {
		t.Errorf("agent RSS peaked at %d MiB, over the bound of %d MiB", peak/mib, bound/mib)
	}

	// The agent gives up on the non-readers: nothing stays reserved, and
	// each of them got a refusal or a response cut short.
	waitFor(t, "fetch bytes in flight back to 0", 2*time.Minute, func() bool {
		v, ok := a.metric("silt_fetch_inflight_bytes")
		return ok && v == 0
	})
	outcomes := map[string]int{}
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(time.Minute))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				err = errors.New("timed out")
			}
			outcomes["no response: "+err.Error()]++
			continue
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusTooManyRequests:
			outcomes["429"]++
		case resp.StatusCode == http.StatusOK && err != nil && n < 64*mib:
			outcomes["200 cut short"]++
		default:
			outcomes[fmt.Sprintf("%d with %d bytes, %v", resp.StatusCode, n, err)]++
		}
	}
	t.Logf("non-readers: %v", outcomes)
	if outcomes["429"]+outcomes["200 cut short"] != attackers {
		t.Errorf("non-readers: %v; want each refused or cut short", outcomes)
	}
}

// headerBomb builds one record with n empty headers in a produce form.
func headerBomb(form string, n int) ([]byte, string) {
	var b bytes.Buffer
	switch form {
	case "json", "ndjson":
		if form == "json" {
			b.WriteString(`{"records":[`)
		}
		b.WriteString(`{"value":"x","headers":[`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"key":""}`)
		}
		b.WriteString(`]}`)
		if form == "json" {
			b.WriteString(`]}`)
			return b.Bytes(), "application/json"
		}
		b.WriteByte('\n')
		return b.Bytes(), "application/x-ndjson"
	}
	// The binary form (docs/http-binary.md): magic, producer id, no
	// sequences, one record with partition -1, timestamp -1, null key,
	// value "x" and n headers with an empty key and a null value.
	be := binary.BigEndian
	w := func(v any) { _ = binary.Write(&b, be, v) }
	b.WriteString("SLP1")
	w(int64(0))
	w(uint32(0))
	w(uint32(1))
	w(int32(-1))
	w(int64(-1))
	w(int32(-1))
	w(int32(1))
	b.WriteByte('x')
	w(uint32(n))
	for range n {
		w(uint32(0))
		w(int32(-1))
	}
	return b.Bytes(), "application/vnd.silt.records.v1"
}

// Attack 3: one record carrying 1.5 million empty headers (a 16.5 MB JSON
// body; 250,000 on an NDJSON line, which is bounded by the line limit;
// 1.5 million in the binary form) is refused with 413 before its headers
// are built, legitimate produce keeps succeeding, and records with many
// headers that are accepted are priced by their encoded size on fetch and
// in the decoded-chunk cache.
func TestHostileHeaderBombs(t *testing.T) {
	a := startHostileAgent(t)
	topic := fmt.Sprintf("bomb-%d", time.Now().UnixNano())
	a.createTopic(topic)
	idle := a.rss()
	watch := a.watchRSS()

	var legit tally
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			legit.add(a.produceOnce(topic, i))
		}
	}()
	answers := map[string]string{}
	for _, bomb := range []struct {
		form    string
		headers int
	}{{"json", 1_500_000}, {"ndjson", 250_000}, {"binary", 1_500_000}} {
		body, ct := headerBomb(bomb.form, bomb.headers)
		status, code, err := a.rawProduce(topic, ct, body)
		answers[bomb.form] = fmt.Sprintf("%d %s %v (%d bytes)", status, code, err, len(body))
	}
	close(stop)
	<-done
	peak := watch.halt()
	// Each bomb costs about its body (at most --max-request-bytes, 16
	// MiB): its buffer, the half-size one it grew from and the smaller
	// ones kept for reuse (2×), twice over for the garbage collector's
	// headroom, and room for the legitimate requests and the allocator.
	bound := idle + 6*16*mib
	t.Logf("header bombs: %v; legitimate produce %s; agent RSS idle %d MiB, peak %d MiB (bound %d MiB)",
		answers, &legit, idle/mib, peak/mib, bound/mib)
	for form, got := range answers {
		if !strings.HasPrefix(got, "413 too_many_headers ") {
			t.Errorf("%s header bomb answered %s, want 413 too_many_headers", form, got)
		}
	}
	if !legit.all() {
		t.Errorf("legitimate produce failed during the attack: %s", &legit)
	}
	if peak > bound {
		t.Errorf("agent RSS peaked at %d MiB, over the bound of %d MiB", peak/mib, bound/mib)
	}

	// Within the cap, headers are priced by their encoded size: 100
	// records of 1,000 empty headers are about 2 KB each on the wire and
	// in a segment, so max_bytes=10000 returns at most 5 of them.
	const perRecord, count = 1000, 100
	var b strings.Builder
	b.WriteString(`{"records":[`)
	for i := range count {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"value":"x","headers":[`)
		for j := range perRecord {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"key":""}`)
		}
		b.WriteString(`]}`)
	}
	b.WriteString(`]}`)
	priced := fmt.Sprintf("pricing-%d", time.Now().UnixNano())
	a.createTopic(priced)
	if status, code, err := a.rawProduce(priced, "application/json", []byte(b.String())); err != nil || status != http.StatusOK {
		t.Fatalf("records of %d headers: %d %s %v", perRecord, status, code, err)
	}
	resp, err := httpClient.Get(a.url + "/v1/topics/" + priced + "/partitions/0/records?offset=0&max_bytes=10000")
	if err != nil {
		t.Fatal(err)
	}
	var page struct {
		Records []json.RawMessage `json:"records"`
	}
	err = json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("fetch: %d %v", resp.StatusCode, err)
	}
	cache, _ := a.metric("silt_fetch_cache_bytes")
	// Each record is at least 2 bytes per header in a segment.
	minCache := float64(count * perRecord * 2)
	t.Logf("records of %d headers: max_bytes=10000 returned %d records; decoded-chunk cache gauge %.0f bytes (at least %.0f)", perRecord, len(page.Records), cache, minCache)
	if len(page.Records) < 1 || len(page.Records) > 5 {
		t.Errorf("max_bytes=10000 returned %d records of %d headers, want 1 to 5", len(page.Records), perRecord)
	}
	if cache < minCache || math.IsNaN(cache) {
		t.Errorf("decoded-chunk cache gauge %.0f bytes, below the %.0f bytes the records take encoded", cache, minCache)
	}
}
