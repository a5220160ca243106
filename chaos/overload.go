package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"silt/binformat"
	"silt/client"
	"silt/internal/pgcluster"
	"silt/localstack"
)

// OverloadConfig is the overload test: an agent with a memory setting
// gets produce requests at twice the rate it was measured to sustain.
type OverloadConfig struct {
	StateDir string
	SiltBin  string // not built with -race: RSS is measured
	MinIOBin string
	// Memory is the memory setting: the container limit the agent is
	// sized for. GOMEMLIMIT is 90% of it; --max-buffer-bytes and
	// --max-inflight-request-bytes an eighth each, --cache-bytes a
	// sixteenth (docs/deploy.md's sizing, scaled down). RSS must stay
	// below it.
	Memory int64
	// Measure is how long capacity is measured (closed loop), Overload
	// how long it is offered twice that (open loop), RecoveryBound how
	// soon after the load drops throughput must be back.
	Measure, Overload, RecoveryBound time.Duration
	// Each request carries RecordsPerRequest records of RecordBytes
	// (chaos -overload-records, -overload-record-bytes). The default,
	// 240 KiB, is the body every figure of docs/reliability.md was
	// measured with; larger ones were answered with resets instead of 429
	// before refused bodies were drained (see "Overload" there).
	RecordBytes, RecordsPerRequest int
	// Concurrency of the closed-loop measurement.
	Concurrency int
	// MaxOutstanding bounds the open loop's requests in flight (the load
	// generator's own memory); past it a request is not sent and counted
	// as dropped by the client.
	MaxOutstanding int
	// Recovered means a one-second window reached this share of capacity.
	RecoveredShare float64
	// CheckRSS checks RSS against Memory (not for agents built with
	// -race, whose shadow memory is outside the Go heap).
	CheckRSS bool
	Logger   *slog.Logger
}

// DefaultOverloadConfig is the overload part of `make chaos`.
func DefaultOverloadConfig() OverloadConfig {
	return OverloadConfig{
		Memory: 256 << 20, Measure: 10 * time.Second, Overload: 60 * time.Second, RecoveryBound: 10 * time.Second,
		RecordBytes: 1024, RecordsPerRequest: 240, Concurrency: 64, MaxOutstanding: 2048, RecoveredShare: 0.8,
		CheckRSS: true,
	}
}

// Overload is the outcome.
type Overload struct {
	Memory          int64         `json:"memory_bytes"`
	Capacity        float64       `json:"capacity_requests_per_s"`
	CapacityMBps    float64       `json:"capacity_mb_per_s"`
	Offered         float64       `json:"offered_requests_per_s"`
	Sent            int64         `json:"sent"`
	Acked           int64         `json:"acked"`
	Refused         int64         `json:"refused_429"`
	NoRetryAfter    int64         `json:"refused_without_retry_after"`
	OtherStatus     map[int]int64 `json:"other_status"`
	TransportErrors int64         `json:"transport_errors"`
	ClientDropped   int64         `json:"not_sent_client_bound"`
	MaxRSS          int64         `json:"max_rss_bytes"`
	Crashed         bool          `json:"crashed"`
	Recovered       bool          `json:"recovered"`
	RecoveryTime    time.Duration `json:"recovery_ns"`
	RecoveredRate   float64       `json:"recovered_requests_per_s"`
	// FreshCapacity is measured only when throughput did not come back to
	// Capacity: a new agent's capacity on the same machine at that moment.
	// When the machine itself got busier (other work on shared cores), a
	// fresh agent does no better, and recovery is judged against it; an
	// agent that stayed degraded after the overload is still caught, as a
	// fresh one then does better than it.
	FreshCapacity     float64  `json:"fresh_capacity_requests_per_s,omitempty"`
	Violations        []string `json:"violations,omitempty"`
	Valid             bool     `json:"valid"`
	FirstTransportErr string   `json:"first_transport_error,omitempty"`
}

// RunOverload runs the overload test on a Postgres, MinIO and agent of
// its own.
func RunOverload(ctx context.Context, cfg OverloadConfig) (*Overload, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	logf := func(format string, args ...any) { cfg.Logger.Info(fmt.Sprintf(format, args...)) }
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("chaos: overload state: %w", err)
	}
	pc := pgcluster.DefaultConfig()
	pc.DataDir, pc.RelocateRoot, pc.Logger = filepath.Join(cfg.StateDir, "pg"), "", cfg.Logger
	pg, err := pgcluster.Start(ctx, pc)
	if err != nil {
		return nil, err
	}
	defer pg.Kill(context.WithoutCancel(ctx))
	if err := createDatabase(ctx, pg.URL("postgres"), envDatabase); err != nil {
		return nil, err
	}
	m, err := localstack.StartMinIO(ctx, localstack.MinIOConfig{Bin: cfg.MinIOBin, DataDir: filepath.Join(cfg.StateDir, "minio", "data"), Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	defer m.Stop()
	if err := localstack.EnsureBucket(ctx, m.Endpoint, localstack.MinIOAccessKey, localstack.MinIOSecretKey, envBucket); err != nil {
		return nil, err
	}
	env := append(localstack.SharedAgentEnv(),
		"SILT_DATABASE_URL="+pg.URL(envDatabase),
		"SILT_OBJECTSTORE="+localstack.S3URL(m.Endpoint, envBucket, ""),
		"AWS_ACCESS_KEY_ID="+localstack.MinIOAccessKey,
		"AWS_SECRET_ACCESS_KEY="+localstack.MinIOSecretKey,
		"GOMEMLIMIT="+strconv.FormatInt(cfg.Memory*9/10, 10),
		"SILT_MAX_BUFFER_BYTES="+strconv.FormatInt(cfg.Memory/8, 10),
		"SILT_MAX_INFLIGHT_REQUEST_BYTES="+strconv.FormatInt(cfg.Memory/8, 10),
		"SILT_CACHE_BYTES="+strconv.FormatInt(cfg.Memory/16, 10),
		"SILT_LOG_FORMAT=json",
		"SILT_AUTH=none", // anonymous load: the bounds must hold without keys
	)
	agent, err := localstack.StartAgent(ctx, localstack.AgentConfig{Bin: cfg.SiltBin, ID: "overload", Env: env, LogDir: cfg.StateDir})
	if err != nil {
		return nil, err
	}
	defer func() { _ = agent.Terminate(30 * time.Second) }()
	const topic, partitions = "overload", 8
	admin, err := client.New(agent.URL, client.WithRetry(client.DefaultRetryPolicy()))
	if err != nil {
		return nil, err
	}
	if _, err := admin.CreateTopic(ctx, client.NewTopic{Name: topic, Partitions: partitions}); err != nil {
		return nil, err
	}

	// One body, sent again and again: the generator stays cheap.
	rng := rand.New(rand.NewPCG(1, 2))
	req := binformat.Request{Records: make([]binformat.Record, cfg.RecordsPerRequest)}
	for i := range req.Records {
		v := make([]byte, cfg.RecordBytes)
		for j := range v {
			v[j] = byte('a' + rng.IntN(26))
		}
		req.Records[i] = binformat.Record{Partition: int32(i % partitions), Timestamp: -1, Value: v}
	}
	body := binformat.AppendRequest(nil, &req)
	url := agent.URL + "/v1/topics/" + topic + "/records"
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1024, IdleConnTimeout: 30 * time.Second}}
	out := &Overload{Memory: cfg.Memory, OtherStatus: map[int]int64{}}

	// RSS and crashes, all along.
	sctx, stopSampler := context.WithCancel(ctx)
	defer stopSampler()
	var maxRSS atomic.Int64
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if rss, err := readRSS(agent.PID()); err == nil && rss > maxRSS.Load() {
				maxRSS.Store(rss)
			}
			select {
			case <-sctx.Done():
				return
			case <-agent.Exited():
				return
			case <-t.C:
			}
		}
	}()

	send := func(ctx context.Context) (int, http.Header, error) {
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return 0, nil, err
		}
		r.Header.Set("Content-Type", binformat.MediaType)
		resp, err := hc.Do(r)
		if err != nil {
			return 0, nil, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header, nil
	}
	// closedLoop runs cfg.Concurrency senders for d and returns the acked
	// requests per one-second window.
	closedLoop := func(d time.Duration) []int64 {
		windows := make([]atomic.Int64, int(d/time.Second)+1)
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		var wg sync.WaitGroup
		for range cfg.Concurrency {
			wg.Go(func() {
				for cctx.Err() == nil {
					status, _, err := send(cctx)
					if err == nil && status/100 == 2 {
						if w := int(time.Since(start) / time.Second); w < len(windows) {
							windows[w].Add(1)
						}
					} else if status == http.StatusTooManyRequests {
						sleepCtx(cctx, 50*time.Millisecond)
					}
				}
			})
		}
		wg.Wait()
		res := make([]int64, int(d/time.Second))
		for i := range res {
			res[i] = windows[i].Load()
		}
		return res
	}

	logf("overload: measuring capacity for %s", cfg.Measure)
	closedLoop(2 * time.Second) // warm up
	ws := closedLoop(cfg.Measure)
	var total int64
	for _, w := range ws {
		total += w
	}
	out.Capacity = float64(total) / cfg.Measure.Seconds()
	out.CapacityMBps = out.Capacity * float64(len(body)) / 1e6
	out.Offered = 2 * out.Capacity
	logf("overload: capacity %.0f requests/s (%.1f MB/s); offering %.0f requests/s for %s", out.Capacity, out.CapacityMBps, out.Offered, cfg.Overload)
	if out.Capacity <= 0 {
		return nil, errors.New("chaos: overload: no request succeeded while measuring capacity")
	}

	// Open loop at twice the capacity: requests leave on schedule whatever
	// the answers.
	var mu sync.Mutex
	slots := make(chan struct{}, cfg.MaxOutstanding)
	var inflight sync.WaitGroup
	interval := time.Duration(float64(time.Second) / out.Offered)
	octx, stopOpen := context.WithTimeout(ctx, cfg.Overload)
	start := time.Now()
	for n := int64(0); octx.Err() == nil; n++ {
		due := start.Add(time.Duration(n) * interval)
		if d := time.Until(due); d > 0 && !sleepCtx(octx, d) {
			break
		}
		select {
		case slots <- struct{}{}:
		default:
			atomic.AddInt64(&out.ClientDropped, 1)
			continue
		}
		atomic.AddInt64(&out.Sent, 1)
		inflight.Go(func() {
			defer func() { <-slots }()
			began := time.Now()
			status, h, err := send(context.WithoutCancel(octx))
			switch {
			case err != nil:
				mu.Lock()
				if out.TransportErrors == 0 {
					out.FirstTransportErr = fmt.Sprintf("after %s: %v", time.Since(began).Round(time.Millisecond), err)
				}
				out.TransportErrors++
				mu.Unlock()
			case status/100 == 2:
				atomic.AddInt64(&out.Acked, 1)
			case status == http.StatusTooManyRequests:
				atomic.AddInt64(&out.Refused, 1)
				if ra := h.Get("Retry-After"); ra == "" || !validRetryAfter(ra) {
					atomic.AddInt64(&out.NoRetryAfter, 1)
				}
			default:
				mu.Lock()
				out.OtherStatus[status]++
				mu.Unlock()
			}
		})
	}
	stopOpen()
	logf("overload: load dropped after %d requests; measuring recovery", out.Sent)

	// Recovery: closed loop again; the first one-second window at
	// RecoveredShare of capacity ends the wait.
	rw := closedLoop(cfg.RecoveryBound + 5*time.Second)
	recovered := func(capacity float64) {
		for i, w := range rw {
			if float64(w) >= cfg.RecoveredShare*capacity {
				out.Recovered, out.RecoveryTime, out.RecoveredRate = true, time.Duration(i+1)*time.Second, float64(w)
				return
			}
		}
	}
	recovered(out.Capacity)
	inflight.Wait()
	stopSampler()
	<-samplerDone
	out.MaxRSS = maxRSS.Load()
	select {
	case <-agent.Exited():
		out.Crashed = true
	default:
	}

	if !out.Recovered && !out.Crashed {
		// Is it the agent or the machine? A fresh agent, measured the
		// same way now, tells.
		logf("overload: throughput not back to capacity; measuring a fresh agent's capacity")
		if err := agent.Terminate(30 * time.Second); err != nil {
			logf("overload: stop the agent: %v", err)
		}
		fresh, err := localstack.StartAgent(ctx, localstack.AgentConfig{Bin: cfg.SiltBin, ID: "overload-fresh", Env: env, LogDir: cfg.StateDir})
		if err != nil {
			return nil, err
		}
		defer func() { _ = fresh.Terminate(30 * time.Second) }()
		url = fresh.URL + "/v1/topics/" + topic + "/records"
		closedLoop(2 * time.Second) // warm up
		var total int64
		for _, w := range closedLoop(cfg.Measure) {
			total += w
		}
		out.FreshCapacity = float64(total) / cfg.Measure.Seconds()
		logf("overload: a fresh agent does %.0f requests/s now (%.0f before the overload)", out.FreshCapacity, out.Capacity)
		if out.FreshCapacity < out.Capacity {
			recovered(out.FreshCapacity)
		}
	}
	if out.Crashed {
		out.Violations = append(out.Violations, "the agent exited during the overload; see "+agent.Log)
	}
	if out.NoRetryAfter > 0 {
		out.Violations = append(out.Violations, fmt.Sprintf("%d refusals (429) without a valid Retry-After", out.NoRetryAfter))
	}
	for st, n := range out.OtherStatus {
		out.Violations = append(out.Violations, fmt.Sprintf("%d answers with status %d (every refusal must be 429)", n, st))
	}
	if out.TransportErrors > 0 {
		out.Violations = append(out.Violations, fmt.Sprintf("%d requests failed without an answer (first: %s)", out.TransportErrors, out.FirstTransportErr))
	}
	if cfg.CheckRSS && out.MaxRSS > cfg.Memory {
		out.Violations = append(out.Violations, fmt.Sprintf("RSS reached %d MiB, above the memory setting of %d MiB", out.MaxRSS>>20, cfg.Memory>>20))
	}
	if !out.Recovered || out.RecoveryTime > cfg.RecoveryBound {
		out.Violations = append(out.Violations, fmt.Sprintf("throughput not back to %.0f%% of capacity within %s after the load dropped (windows: %v; a fresh agent's capacity then: %.0f requests/s)", cfg.RecoveredShare*100, cfg.RecoveryBound, rw, out.FreshCapacity))
	}
	out.Valid = len(out.Violations) == 0
	logf("overload: sent %d, acked %d, refused %d, max RSS %d MiB, recovered in %s", out.Sent, out.Acked, out.Refused, out.MaxRSS>>20, out.RecoveryTime)
	return out, nil
}

// validRetryAfter accepts delay-seconds (RFC 9110) or an HTTP date.
func validRetryAfter(v string) bool {
	if n, err := strconv.Atoi(v); err == nil {
		return n >= 0
	}
	_, err := http.ParseTime(v)
	return err == nil
}

// readRSS reads a process's resident set size from /proc.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, errors.New("no VmRSS")
}
