package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// QuotaKind is one of a key's three quotas.
type QuotaKind int

// The quotas.
const (
	QuotaRequests QuotaKind = iota // requests/s
	QuotaProduce                   // produced bytes/s (request bodies)
	QuotaFetch                     // fetched bytes/s (response bodies)
)

func (k QuotaKind) String() string {
	switch k {
	case QuotaRequests:
		return "requests"
	case QuotaProduce:
		return "produce_bytes"
	case QuotaFetch:
		return "fetch_bytes"
	}
	return "unknown"
}

// QuotaConfig tunes Quotas.
type QuotaConfig struct {
	// LiveInterval is how often the number of live agents is read.
	LiveInterval time.Duration
	// MaxKeyLabels bounds the distinct key names in metric labels; the
	// keys past it share the label "_other".
	MaxKeyLabels int
}

// DefaultQuotaConfig returns the defaults.
func DefaultQuotaConfig() QuotaConfig {
	return QuotaConfig{LiveInterval: 5 * time.Second, MaxKeyLabels: 100}
}

// Validate checks the config.
func (c QuotaConfig) Validate() error {
	if c.LiveInterval <= 0 || c.MaxKeyLabels < 1 {
		return errors.New("auth: quota live interval and max key labels must be positive")
	}
	return nil
}

// Quotas enforces per-key quotas on one agent. A key's quota is for the
// whole cluster: each agent allows its share, the quota divided by the
// live agents (a load balancer spreads a key's traffic over them).
// Produced and fetched bytes are charged after the fact: a key in debt is
// refused (or, on a stream, paused) until its share has paid it back, as
// Kafka throttles.
type Quotas struct {
	cfg    QuotaConfig
	live   atomic.Int64
	liveFn func(ctx context.Context) (int, error)
	logger *slog.Logger

	mu   sync.Mutex
	keys map[string]*keyBuckets

	labels    *labelSet
	throttled *prometheus.CounterVec
	bytes     *prometheus.CounterVec
}

type keyBuckets struct {
	mu      sync.Mutex
	buckets [3]bucket
}

// bucket is a token bucket that may go into debt.
type bucket struct {
	tokens float64
	last   time.Time
}

// maxQuotaKeys bounds the keys tracked; past it the state is cleared.
const maxQuotaKeys = 100_000

// NewQuotas returns Quotas. liveAgents counts the live agents (at least
// this one); Run refreshes the count.
func NewQuotas(cfg QuotaConfig, liveAgents func(ctx context.Context) (int, error), logger *slog.Logger, reg prometheus.Registerer) (*Quotas, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	q := &Quotas{cfg: cfg, liveFn: liveAgents, logger: logger, keys: map[string]*keyBuckets{}, labels: newLabelSet(cfg.MaxKeyLabels),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silt_auth_quota_throttled_total", Help: "Requests refused or streams paused over a key's quota, by key name and quota.",
		}, []string{"key", "quota"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silt_auth_quota_bytes_total", Help: "Bytes charged to keys with a quota, by key name and quota.",
		}, []string{"key", "quota"}),
	}
	q.live.Store(1)
	if reg != nil {
		for _, c := range []prometheus.Collector{q.throttled, q.bytes} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("quota metrics: %w", err)
			}
		}
	}
	return q, nil
}

// Run refreshes the number of live agents until ctx ends.
func (q *Quotas) Run(ctx context.Context) {
	t := time.NewTicker(q.cfg.LiveInterval)
	defer t.Stop()
	for {
		q.refreshLive(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (q *Quotas) refreshLive(ctx context.Context) {
	if q.liveFn == nil {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, q.cfg.LiveInterval)
	defer cancel()
	n, err := q.liveFn(lctx)
	if err != nil {
		if ctx.Err() == nil {
			q.logger.Debug("could not count live agents for quotas", "err", err)
		}
		return
	}
	q.live.Store(int64(max(n, 1)))
}

// SetLiveAgents sets the number of live agents (for tests and callers
// that count them themselves).
func (q *Quotas) SetLiveAgents(n int) { q.live.Store(int64(max(n, 1))) }

// limit is p's share of quota kind on this agent, per second; 0 is none.
func (q *Quotas) limit(p *Principal, kind QuotaKind) float64 {
	if p == nil {
		return 0
	}
	var total float64
	switch kind {
	case QuotaRequests:
		total = p.Quota.RequestsPerSec
	case QuotaProduce:
		total = float64(p.Quota.ProduceBytesPerSec)
	case QuotaFetch:
		total = float64(p.Quota.FetchBytesPerSec)
	}
	if total <= 0 {
		return 0
	}
	return total / float64(q.live.Load())
}

func (q *Quotas) state(id string) *keyBuckets {
	q.mu.Lock()
	defer q.mu.Unlock()
	kb := q.keys[id]
	if kb == nil {
		if len(q.keys) >= maxQuotaKeys {
			q.keys = map[string]*keyBuckets{}
		}
		kb = &keyBuckets{}
		q.keys[id] = kb
	}
	return kb
}

// refill brings b up to date; burst is one second of rate (at least one
// token).
func (b *bucket) refill(rate float64, now time.Time) {
	burst := math.Max(rate, 1)
	if b.last.IsZero() {
		b.tokens, b.last = burst, now
		return
	}
	b.tokens = math.Min(burst, b.tokens+rate*now.Sub(b.last).Seconds())
	b.last = now
}

// Admit takes one request from p's request quota. When none is left it
// returns false and how long to wait.
func (q *Quotas) Admit(p *Principal) (time.Duration, bool) {
	rate := q.limit(p, QuotaRequests)
	if rate == 0 {
		return 0, true
	}
	kb := q.state(p.KeyID)
	kb.mu.Lock()
	b := &kb.buckets[QuotaRequests]
	b.refill(rate, time.Now())
	ok := b.tokens >= 1
	wait := time.Duration(0)
	if ok {
		b.tokens--
	} else {
		wait = secondsDuration((1 - b.tokens) / rate)
	}
	kb.mu.Unlock()
	if !ok {
		q.throttled.WithLabelValues(q.labels.get(p.Name), QuotaRequests.String()).Inc()
	}
	return wait, ok
}

// Check reports whether p's byte quota kind is out of debt; if not, how
// long until it is.
func (q *Quotas) Check(p *Principal, kind QuotaKind) (time.Duration, bool) {
	rate := q.limit(p, kind)
	if rate == 0 {
		return 0, true
	}
	kb := q.state(p.KeyID)
	kb.mu.Lock()
	b := &kb.buckets[kind]
	b.refill(rate, time.Now())
	tokens := b.tokens
	kb.mu.Unlock()
	if tokens >= 0 {
		return 0, true
	}
	q.throttled.WithLabelValues(q.labels.get(p.Name), kind.String()).Inc()
	return secondsDuration(-tokens / rate), false
}

// Charge takes n bytes from p's byte quota kind, into debt if need be.
func (q *Quotas) Charge(p *Principal, kind QuotaKind, n int64) {
	rate := q.limit(p, kind)
	if rate == 0 || n <= 0 {
		return
	}
	kb := q.state(p.KeyID)
	kb.mu.Lock()
	b := &kb.buckets[kind]
	b.refill(rate, time.Now())
	b.tokens -= float64(n)
	kb.mu.Unlock()
	q.bytes.WithLabelValues(q.labels.get(p.Name), kind.String()).Add(float64(n))
}

// Limited reports whether p has quota kind at all.
func (q *Quotas) Limited(p *Principal, kind QuotaKind) bool { return q.limit(p, kind) > 0 }

// Rate is p's share of quota kind on this agent, per second (0: none).
func (q *Quotas) Rate(p *Principal, kind QuotaKind) float64 { return q.limit(p, kind) }

// Wait blocks until p's byte quota kind is out of debt: a stream pauses
// instead of being refused. It returns nil early when stop is closed (the
// caller goes on regardless, as a stream ending for a shutdown does), and
// ctx's cause when ctx ends first.
func (q *Quotas) Wait(ctx context.Context, p *Principal, kind QuotaKind, stop <-chan struct{}) error {
	for {
		wait, ok := q.Check(p, kind)
		if ok {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		case <-stop:
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func secondsDuration(s float64) time.Duration {
	d := time.Duration(s * float64(time.Second))
	return max(d, time.Millisecond)
}

// labelSet hands out at most n distinct label values; the rest share
// "_other", so that per-key metrics stay bounded.
type labelSet struct {
	mu   sync.Mutex
	n    int
	seen map[string]bool
}

func newLabelSet(n int) *labelSet { return &labelSet{n: n, seen: map[string]bool{}} }

func (l *labelSet) get(name string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen[name] {
		return name
	}
	if len(l.seen) >= l.n {
		return "_other"
	}
	l.seen[name] = true
	return name
}
