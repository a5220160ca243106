package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"silt/binformat"
	"silt/internal/pgcluster"
	"silt/localstack"
)

// maxIdleConnBytes bounds what an idle connection may cost the agent
// (docs/deploy.md gives the measured figures: 24–25 KiB a long-poll,
// 31–32 KiB an SSE stream, 9–13 KiB a Kafka connection).
const maxIdleConnBytes = 48 << 10

// One `silt agent` process with --memory-limit 256MiB, on loopback, takes
// at once a full-rate produce, a catch-up read of what was produced before,
// 500 idle long-polls, 200 idle SSE streams and 200 idle Kafka connections.
// Its resident memory, sampled from /proc, stays within the limit, and no
// request gets a 5xx (429s are allowed: that is how the budgets push back).
// It also measures what an idle connection of each kind costs the agent.
// The test asserts memory, not time: on a slow machine the load is lighter,
// and the bound holds as well.
func TestMemoryLimitBoundsResidentMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real agent, Postgres and MinIO")
	}
	const (
		limit       = 256 * mib
		longPolls   = 500
		streams     = 200
		kafkaConns  = 200
		partitions  = 16
		preload     = 96 * mib
		recordBytes = 1024
		batch       = 1000 // records per produce request
		loadFor     = 20 * time.Second
	)
	raiseOpenFiles(t, 4096)
	a := startMemoryAgent(t, "SILT_MEMORY_LIMIT=256MiB", "SILT_PPROF=true", "SILT_LOG_LEVEL=warn")
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	load, idle := "mem-load-"+stamp, "mem-idle-"+stamp
	for _, name := range []string{load, idle} {
		if _, err := request("POST", a.url+"/v1/topics", map[string]any{"name": name, "partitions": partitions}, nil); err != nil {
			t.Fatal(err)
		}
	}
	st := &statuses{}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}, Timeout: 2 * time.Minute}
	t.Cleanup(hc.CloseIdleConnections)
	body := produceBody(t, batch, recordBytes)

	// What is read back later, produced first.
	var wg sync.WaitGroup
	var sent atomic.Int64
	for range 4 {
		wg.Go(func() {
			for sent.Add(int64(len(body))) <= preload {
				st.add(postProduce(hc, a.url, load, body))
			}
		})
	}
	wg.Wait()
	if st.count(http.StatusOK) == 0 {
		t.Fatalf("no produce succeeded: %s", st)
	}

	// Idle connections, each measured: the agent's live heap and stacks
	// (after a collection) and its RSS, before and after opening them.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var idleWG sync.WaitGroup
	defer idleWG.Wait()
	defer cancel()
	base := a.settled(t)
	waits0 := a.counter(t, "silt_fetch_waits_total")
	for i := range longPolls {
		idleWG.Go(func() { longPoll(ctx, a.url, idle, int32(i%partitions), st) })
	}
	waitFor(t, "the long-polls to park", 2*time.Minute, func() bool { return a.counter(t, "silt_fetch_waits_total")-waits0 >= longPolls })
	polls := a.settled(t)
	opened := make(chan struct{}, streams)
	for i := range streams {
		idleWG.Go(func() { stream(ctx, a.url, idle, int32(i%partitions), opened, st) })
	}
	for range streams {
		select {
		case <-opened:
		case <-time.After(2 * time.Minute):
			t.Fatal("SSE streams did not open")
		}
	}
	sse := a.settled(t)
	var kconns []net.Conn
	for range kafkaConns {
		c, err := net.Dial("tcp", a.proc.KafkaAddr)
		if err != nil {
			t.Fatal(err)
		}
		kconns = append(kconns, c)
	}
	defer func() {
		for _, c := range kconns {
			c.Close()
		}
	}()
	waitFor(t, "the Kafka connections to be accepted", time.Minute, func() bool {
		return a.gauge(t, "silt_kafka_connections") >= kafkaConns
	})
	kafka := a.settled(t)
	t.Logf("idle connection costs (live heap and stacks after a collection): long-poll %s, SSE stream %s, Kafka %s",
		polls.per(base, longPolls), sse.per(polls, streams), kafka.per(sse, kafkaConns))
	for _, c := range []struct {
		what string
		cost int64
	}{{"long-poll", polls.cost(base, longPolls)}, {"SSE stream", sse.cost(polls, streams)}, {"Kafka connection", kafka.cost(sse, kafkaConns)}} {
		if c.cost > maxIdleConnBytes {
			t.Errorf("an idle %s costs the agent %.1f KiB, more than %d KiB", c.what, float64(c.cost)/1024, maxIdleConnBytes>>10)
		}
	}

	// The load, with the idle connections open.
	watch := a.watchRSS()
	loadCtx, stopLoad := context.WithTimeout(ctx, loadFor)
	defer stopLoad()
	var loadWG sync.WaitGroup
	var produced, read atomic.Int64
	for range 4 {
		loadWG.Go(func() {
			for loadCtx.Err() == nil {
				code := postProduce(hc, a.url, load, body)
				if code == http.StatusOK {
					produced.Add(int64(len(body)))
				}
				st.add(code)
			}
		})
	}
	for c := range 4 {
		loadWG.Go(func() {
			for p := int32(c); loadCtx.Err() == nil; p = (p + 4) % partitions {
				read.Add(catchUp(loadCtx, hc, a.url, load, p, st))
			}
		})
	}
	loadWG.Wait()
	peak := watch.halt()
	hwm := vmHWM(t, a.proc.PID())
	t.Logf("under load for %s: produced %d MiB, read %d MiB; resident memory peak %d MiB (VmHWM %d MiB), limit %d MiB; responses %s",
		loadFor, produced.Load()/mib, read.Load()/mib, peak/mib, hwm/mib, limit/mib, st)
	if peak > limit || hwm > limit {
		t.Errorf("resident memory reached %d MiB (VmHWM %d MiB), over --memory-limit %d MiB", peak/mib, hwm/mib, limit/mib)
	}
	if n := st.serverErrors(); n > 0 {
		t.Errorf("%d responses were 5xx: %s", n, st)
	}
	if produced.Load() == 0 || read.Load() == 0 {
		t.Errorf("the load did nothing: produced %d bytes, read %d", produced.Load(), read.Load())
	}
}

// startMemoryAgent starts one agent built without the race detector (its
// RSS is the agent's, not the detector's), its Kafka listener on.
func startMemoryAgent(t *testing.T, env ...string) *hostileAgent {
	t.Helper()
	c := newCluster(t, env...)
	port, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	p, err := localstack.StartAgent(ctx, localstack.AgentConfig{Bin: siltBinaryPlain(t), ID: "memory", KafkaPort: port, Env: c.env, LogDir: c.logDir})
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.agents["memory"] = p
	c.mu.Unlock()
	return &hostileAgent{t: t, proc: p, url: p.URL, addr: strings.TrimPrefix(p.URL, "http://")}
}

// raiseOpenFiles lifts this process's soft limit on open files to at
// least n (within the hard limit): the test holds a thousand sockets.
func raiseOpenFiles(t *testing.T, n uint64) {
	t.Helper()
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		t.Fatal(err)
	}
	if r.Cur >= n {
		return
	}
	if r.Max < n {
		t.Fatalf("the hard limit on open files is %d; the test needs %d", r.Max, n)
	}
	r.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		t.Fatal(err)
	}
}

// memoryFigures are an agent's memory at one moment.
type memoryFigures struct {
	heap, stacks int64 // live heap after a collection; goroutine stacks
	rss          int64
}

// cost is what each of n connections opened since before costs in live
// heap and stacks.
func (m memoryFigures) cost(before memoryFigures, n int) int64 {
	return (m.heap + m.stacks - before.heap - before.stacks) / int64(n)
}

// per is what each of n connections opened since before costs: live
// heap plus stacks (of which stacks), and RSS, which garbage collected
// meanwhile blurs.
func (m memoryFigures) per(before memoryFigures, n int) string {
	kib := func(d int64) float64 { return float64(d) / float64(n) / 1024 }
	return fmt.Sprintf("%.1f KiB (stacks %.1f) / RSS %+.1f KiB", kib(m.heap+m.stacks-before.heap-before.stacks), kib(m.stacks-before.stacks), kib(m.rss-before.rss))
}

// settled collects the agent's garbage (a heap profile with gc=1 does) and
// reads its live heap, stacks and RSS.
func (a *hostileAgent) settled(t *testing.T) memoryFigures {
	t.Helper()
	resp, err := httpClient.Get(a.url + "/debug/pprof/heap?gc=1")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("heap profile: %s", resp.Status)
	}
	return memoryFigures{heap: int64(a.gauge(t, "go_memstats_heap_alloc_bytes")), stacks: int64(a.gauge(t, "go_memstats_stack_inuse_bytes")), rss: a.rss()}
}

func (a *hostileAgent) gauge(t *testing.T, name string) float64 {
	t.Helper()
	v, ok := a.metric(name)
	if !ok {
		t.Fatalf("the agent exports no %s", name)
	}
	return v
}

func (a *hostileAgent) counter(t *testing.T, name string) int {
	return int(a.gauge(t, name))
}

func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	n, err := procStatus(pid, "VmHWM:")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// statuses counts responses by status code (0: a transport error).
type statuses struct {
	mu sync.Mutex
	n  map[int]int
}

func (s *statuses) add(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == nil {
		s.n = map[int]int{}
	}
	s.n[code]++
}

func (s *statuses) count(code int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[code]
}

func (s *statuses) serverErrors() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for code, c := range s.n {
		if code >= 500 {
			n += c
		}
	}
	return n
}

func (s *statuses) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var parts []string
	for code, c := range s.n {
		parts = append(parts, fmt.Sprintf("%d: %d", code, c))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// produceBody is one binary produce request of n incompressible records.
func produceBody(t *testing.T, n, size int) []byte {
	t.Helper()
	recs := make([]binformat.Record, n)
	for i := range recs {
		v := make([]byte, size)
		if _, err := rand.Read(v); err != nil {
			t.Fatal(err)
		}
		recs[i] = binformat.Record{Partition: -1, Timestamp: -1, Value: v}
	}
	return binformat.AppendRequest(nil, &binformat.Request{Records: recs})
}

// postProduce sends one produce request and returns its status (0: it
// failed in transport); a 429 is waited out as its Retry-After asks.
func postProduce(hc *http.Client, base, topic string, body []byte) int {
	req, err := http.NewRequest(http.MethodPost, base+"/v1/topics/"+topic+"/records", strings.NewReader(string(body)))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", binformat.MediaType)
	resp, err := hc.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusTooManyRequests {
		retryAfter(resp)
	}
	return resp.StatusCode
}

func retryAfter(resp *http.Response) {
	s, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	t := time.NewTimer(time.Duration(max(s, 1)) * time.Second)
	<-t.C
}

// catchUp reads partition p of topic from offset 0 to its end, returning
// the bytes read.
func catchUp(ctx context.Context, hc *http.Client, base, topic string, p int32, st *statuses) int64 {
	var n int64
	for off := int64(0); ctx.Err() == nil; {
		u := fmt.Sprintf("%s/v1/topics/%s/partitions/%d/records?offset=%d&max_bytes=%d&max_records=100000", base, topic, p, off, 4*mib)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return n
		}
		req.Header.Set("Accept", binformat.MediaType)
		resp, err := hc.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				st.add(0)
			}
			return n
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		st.add(resp.StatusCode)
		if resp.StatusCode == http.StatusTooManyRequests {
			retryAfter(resp)
			continue
		}
		if err != nil || resp.StatusCode != http.StatusOK {
			return n
		}
		f, err := binformat.DecodeFetch(b)
		if err != nil {
			st.add(-1)
			return n
		}
		n += int64(len(b))
		if len(f.Records) == 0 || f.NextOffset >= f.HighWatermark {
			return n
		}
		off = f.NextOffset
	}
	return n
}

// longPoll waits on partition p of an idle topic until ctx ends, one
// connection of its own, polling again each time the wait runs out.
func longPoll(ctx context.Context, base, topic string, p int32, st *statuses) {
	hc := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer hc.CloseIdleConnections()
	for ctx.Err() == nil {
		u := fmt.Sprintf("%s/v1/topics/%s/partitions/%d/records?offset=0&wait_ms=30000", base, topic, p)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return
		}
		resp, err := hc.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				st.add(0)
			}
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		st.add(resp.StatusCode)
	}
}

// stream opens an SSE stream of partition p of an idle topic, tells opened
// once the stream began, and reads it until ctx ends.
func stream(ctx context.Context, base, topic string, p int32, opened chan<- struct{}, st *statuses) {
	u := fmt.Sprintf("%s/v1/topics/%s/partitions/%d/stream?offset=0", base, topic, p)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return
	}
	hc := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		st.add(0)
		return
	}
	defer resp.Body.Close()
	st.add(resp.StatusCode)
	r := bufio.NewReader(resp.Body)
	if _, err := r.ReadString('\n'); err == nil {
		opened <- struct{}{}
	}
	_, err = io.Copy(io.Discard, r)
	if err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
		st.add(0)
	}
}

// procStatus reads a kB field (VmRSS:, VmHWM:) of /proc/<pid>/status, in
// bytes.
func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
