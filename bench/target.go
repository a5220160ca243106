package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"silt/agent"
	"silt/batcher"
	"silt/client"
	"silt/internal/agentd"
)

// Target is the agent a Silt run talks to.
type Target struct {
	// URL is the agent's base URL.
	URL string
	// KafkaAddr is the agent's Kafka listener (host:port), when known.
	KafkaAddr string
	// Metrics reads the agent's Prometheus registry.
	Metrics Gatherer
	// Linger and SegmentBytes are the agent's batching settings when known
	// (an agent of this process); 0 when not.
	Linger       time.Duration
	SegmentBytes int64
	// InflightFlushes is the agent's bound on concurrent flushes (0: unknown).
	InflightFlushes int
	// Token is the API key every request carries ("" for none); TLS, when
	// set, is how HTTPS agents are reached.
	Token string
	TLS   *tls.Config
	// Security names how the agent is reached: none, auth or auth+tls.
	Security string

	restart func(ctx context.Context) (*Target, error)
	stop    func(ctx context.Context) error
}

// ExternalTarget is an agent running elsewhere, whose metrics are scraped
// from /metrics; kafkaAddr is its Kafka listener, if it has one, and
// token and tlsCfg (either may be empty) are how to reach it.
func ExternalTarget(url, kafkaAddr, token string, tlsCfg *tls.Config) *Target {
	t := &Target{URL: url, KafkaAddr: kafkaAddr, Token: token, TLS: tlsCfg, Security: SecurityNone}
	if token != "" {
		t.Security = SecurityAuth
	}
	if tlsCfg != nil {
		t.Security += "+tls"
	}
	t.Metrics = ScrapeGatherer{URL: metricsURL(url), Client: t.client(&http.Transport{})}
	return t
}

// client returns an HTTP client over base that speaks TLS with t.TLS and
// sends t.Token with every request.
func (t *Target) client(base *http.Transport) *http.Client {
	if t.TLS != nil {
		// A copy each: an HTTP/2 transport adds "h2" to its config's
		// protocols, which an HTTP/1 transport sharing it must not offer.
		base.TLSClientConfig = t.TLS.Clone()
	}
	var rt http.RoundTripper = base
	if t.Token != "" {
		rt = bearer{base: base, value: "Bearer " + t.Token}
	}
	return &http.Client{Transport: rt}
}

// clientOptions are the Go client's options to reach t.
func (t *Target) clientOptions() []client.Option {
	var opts []client.Option
	if t.TLS != nil {
		opts = append(opts, client.WithTLSConfig(t.TLS))
	}
	if t.Token != "" {
		opts = append(opts, client.WithToken(t.Token))
	}
	return opts
}

// bearer adds an Authorization header to every request.
type bearer struct {
	base  *http.Transport
	value string
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", b.value)
	return b.base.RoundTrip(r)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// transport.
func (b bearer) CloseIdleConnections() { b.base.CloseIdleConnections() }

// Local reports whether the target runs in this process.
func (t *Target) Local() bool { return t.stop != nil }

// Stop stops an agent of this process; a no-op for external targets.
func (t *Target) Stop(ctx context.Context) error {
	if t.stop == nil {
		return nil
	}
	return t.stop(ctx)
}

// Restart stops an agent of this process and starts a fresh one with the
// same settings (cold caches); external targets are returned as they are.
func (t *Target) Restart(ctx context.Context) (*Target, error) {
	if t.restart == nil {
		return t, nil
	}
	return t.restart(ctx)
}

// LocalAgent is an agent to run in this process, wired as `silt agent`
// wires one (internal/agentd) against real Postgres and object storage.
type LocalAgent struct {
	DatabaseURL  string
	ObjectStore  string // bucket URL
	Linger       time.Duration
	SegmentBytes int64
	// Configure, when set, edits the config before the agent starts.
	Configure func(*agentd.Config)
	Logger    *slog.Logger
	// Security is how the agent is reached: SecurityNone (anonymous, plain
	// HTTP; the default), SecurityAuth (keys required: the run uses a key
	// limited to the bench's topics) or SecurityAuthTLS (and HTTPS).
	Security string

	sec *securityState // made by the first Start, kept across restarts
}

// Config returns the agent configuration a LocalAgent starts with. The
// janitor's background work (retention, merging, compaction, garbage
// collection) is pushed out to once a day: its PUTs and GETs would
// otherwise mix with the ones measured. Leases and heartbeats run as usual.
func (l LocalAgent) Config() agentd.Config {
	cfg := agentd.DefaultConfig()
	var b [4]byte
	_, _ = rand.Read(b[:])
	cfg.AgentID = "bench-" + hex.EncodeToString(b[:])
	cfg.DatabaseURL = l.DatabaseURL
	cfg.ObjectStore = l.ObjectStore
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.HTTP.Auth = agent.AuthNone   // Security turns keys (and TLS) on
	cfg.Kafka.Listen = "127.0.0.1:0" // its address is known once listening
	cfg.ShutdownTimeout = time.Minute
	if l.Linger > 0 {
		cfg.Batcher.Linger = l.Linger
	}
	if l.SegmentBytes > 0 {
		// The memory limit grows with larger segments, so that the buffer
		// holds 8 of them and 4 flushes fit (as 8 MiB ones do in the
		// default 512 MiB); the budgets follow it.
		cfg.Batcher.MaxSegmentBytes = int(l.SegmentBytes)
		cfg.MemoryLimit = max(cfg.MemoryLimit, 64*l.SegmentBytes)
		cfg.DeriveBudgets(nil)
	}
	j := &cfg.Ownership.Janitor
	day := 24 * time.Hour
	j.RetentionInterval, j.MergeInterval, j.CompactInterval, j.GCInterval, j.OrphanInterval = day, day, day, day, day
	if l.Configure != nil {
		l.Configure(&cfg)
	}
	return cfg
}

// Start starts the agent; Target.Stop stops it.
func (l LocalAgent) Start(ctx context.Context) (*Target, error) {
	cfg := l.Config()
	if l.sec == nil {
		sec, err := newSecurityState(l.Security)
		if err != nil {
			return nil, err
		}
		l.sec = sec
	}
	l.sec.configure(&cfg)
	logger := l.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return nil, fmt.Errorf("bench agent: %w", err)
	}
	cfg.Advertise = ln.Addr().String()
	kln, err := net.Listen("tcp", cfg.Kafka.Listen)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("bench agent: %w", err)
	}
	cfg.Kafka.Listen, cfg.Kafka.AdvertisedAddr = kln.Addr().String(), kln.Addr().String()
	a, err := agentd.Start(ctx, cfg, agentd.Overrides{Listener: ln, KafkaListener: kln}, logger)
	if err != nil {
		ln.Close()
		kln.Close()
		return nil, fmt.Errorf("bench agent: %w", err)
	}
	t := &Target{
		URL:             "http://" + ln.Addr().String(),
		KafkaAddr:       kln.Addr().String(),
		Metrics:         a.Metrics(),
		Linger:          cfg.Batcher.Linger,
		SegmentBytes:    int64(cfg.Batcher.MaxSegmentBytes),
		InflightFlushes: cfg.Batcher.MaxInflightFlushes,
	}
	if err := l.sec.target(ctx, t); err != nil {
		_ = a.Stop(ctx)
		return nil, err
	}
	t.stop = func(ctx context.Context) error {
		err := a.Stop(ctx)
		l.sec.remove()
		return err
	}
	t.restart = func(ctx context.Context) (*Target, error) {
		if err := a.Stop(ctx); err != nil {
			return nil, err
		}
		return l.Start(ctx)
	}
	return t, nil
}

// defaultInflightFlushes is the batcher's default, assumed for external
// agents.
var defaultInflightFlushes = batcher.DefaultConfig().MaxInflightFlushes
