package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

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
