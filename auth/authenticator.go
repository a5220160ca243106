package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"silt/metadata"
)

// Reasons a request is not authenticated.
var (
	// ErrUnauthenticated is what every reason below wraps.
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrNoKey           = fmt.Errorf("%w: no API key; send Authorization: Bearer silt_...", ErrUnauthenticated)
	ErrMalformedKey    = fmt.Errorf("%w: the API key is malformed", ErrUnauthenticated)
	ErrInvalidToken    = fmt.Errorf("%w: the API key is not valid", ErrUnauthenticated)
	ErrRevoked         = fmt.Errorf("%w: the API key is revoked", ErrUnauthenticated)
	ErrExpired         = fmt.Errorf("%w: the API key has expired", ErrUnauthenticated)
	ErrUnknownName     = fmt.Errorf("%w: the client certificate names no live key", ErrUnauthenticated)
)

// reason is a short label of an authentication failure, for metrics.
func reason(err error) string {
	switch {
	case errors.Is(err, ErrNoKey):
		return "missing"
	case errors.Is(err, ErrMalformedKey):
		return "malformed"
	case errors.Is(err, ErrRevoked):
		return "revoked"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrUnknownName):
		return "unknown_certificate"
	case errors.Is(err, ErrUnauthenticated):
		return "invalid"
	}
	return "error"
}

// Store is what authentication needs of the metadata store.
type Store interface {
	GetKey(ctx context.Context, id string) (metadata.Key, error)
	GetKeyByName(ctx context.Context, name string) (metadata.Key, error)
	TouchKeys(ctx context.Context, ids []string) error
}

// Config tunes an Authenticator.
type Config struct {
	// CacheTTL bounds how long a cached key is trusted without a
	// notification; it also paces the re-check of keys with open streams
	// and long-polls. It bounds revocation when notifications are lost.
	CacheTTL time.Duration
	// TouchInterval is how often last-used times are written.
	TouchInterval time.Duration
	// MaxCachedKeys bounds the cache; past it, it is cleared.
	MaxCachedKeys int
	// LookupTimeout bounds one key lookup in Postgres.
	LookupTimeout time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{CacheTTL: 3 * time.Second, TouchInterval: time.Minute, MaxCachedKeys: 10_000, LookupTimeout: 5 * time.Second}
}

// Validate checks the config.
func (c Config) Validate() error {
	switch {
	case c.CacheTTL <= 0 || c.CacheTTL > 5*time.Second:
		return errors.New("auth: cache TTL must be positive and at most 5s (it bounds revocation)")
	case c.TouchInterval <= 0:
		return errors.New("auth: touch interval must be positive")
	case c.MaxCachedKeys < 1:
		return errors.New("auth: max cached keys must be positive")
	case c.LookupTimeout <= 0:
		return errors.New("auth: lookup timeout must be positive")
	}
	return nil
}

// Deps are an Authenticator's collaborators.
type Deps struct {
	Store      Store
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Authenticator turns keys (and client-certificate names) into
// principals, from a cache.
type Authenticator struct {
	cfg    Config
	store  Store
	logger *slog.Logger
	flight singleflight.Group

	mu sync.RWMutex
	// epoch grows with every invalidation: a lookup that began before one
	// does not cache what it read, so that the request after a
	// revocation reads the key again.
	epoch    uint64
	byID     map[string]*entry
	byName   map[string]nameEntry
	watchers map[string]map[*watcher]struct{}

	failures *prometheus.CounterVec
	lookups  prometheus.Counter
}

// entry is a cached key: a principal for live keys, or why not.
type entry struct {
	hash      []byte
	scram     map[string]metadata.SCRAMCredential
	principal *Principal // nil when err is set
	err       error      // ErrRevoked, ErrInvalidToken (unknown id)
	loaded    time.Time
	used      atomic.Bool // since the last touch
}

type nameEntry struct {
	id     string // empty: no live key of that name
	loaded time.Time
}

type watcher struct{ fn func(*Principal) }

// New returns an Authenticator; Run runs its background work.
func New(cfg Config, deps Deps) (*Authenticator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Store == nil {
		return nil, errors.New("auth: a store is required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Authenticator{cfg: cfg, store: deps.Store, logger: deps.Logger,
		byID: map[string]*entry{}, byName: map[string]nameEntry{}, watchers: map[string]map[*watcher]struct{}{},
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silt_auth_failures_total", Help: "Requests refused authentication, by reason.",
		}, []string{"reason"}),
		lookups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "silt_auth_key_lookups_total", Help: "Key lookups in Postgres (cache misses and refreshes).",
		}),
	}
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{a.failures, a.lookups} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("auth metrics: %w", err)
			}
		}
	}
	return a, nil
}

// Authenticate returns the principal of a key, or an error wrapping
// ErrUnauthenticated, or another error when Postgres could not be asked.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (*Principal, error) {
	p, err := a.authenticate(ctx, token)
	if err != nil && errors.Is(err, ErrUnauthenticated) {
		a.failures.WithLabelValues(reason(err)).Inc()
	}
	return p, err
}

func (a *Authenticator) authenticate(ctx context.Context, token string) (*Principal, error) {
	if token == "" {
		return nil, ErrNoKey
	}
	id, ok := ParseToken(token)
	if !ok {
		return nil, ErrMalformedKey
	}
	e, err := a.entry(ctx, id)
	if err != nil {
		return nil, err
	}
	// The hash is compared before anything about the key is told.
	if e.hash == nil || !hashEqual(e.hash, HashToken(token)) {
		return nil, ErrInvalidToken
	}
	return a.use(e)
}

// use returns a cached entry's principal, checking expiry now.
func (a *Authenticator) use(e *entry) (*Principal, error) {
	if e.err != nil {
		return nil, e.err
	}
	if !e.principal.ExpiresAt.IsZero() && !time.Now().Before(e.principal.ExpiresAt) {
		return nil, ErrExpired
	}
	e.used.Store(true)
	return e.principal, nil
}

// Principal returns the current principal of a key that authenticated
// earlier on a long-lived connection (the Kafka listener checks it again
// on every request): ErrRevoked, ErrExpired or ErrInvalidToken once it no
// longer holds. It answers from the cache, as Authenticate does.
func (a *Authenticator) Principal(ctx context.Context, keyID string) (*Principal, error) {
	e, err := a.entry(ctx, keyID)
	if err != nil {
		return nil, err
	}
	if e.hash == nil && e.err == nil {
		return nil, ErrInvalidToken
	}
	return a.use(e)
}

// AuthenticateName returns the principal of the live key named name: the
// CN or a SAN of a verified client certificate.
func (a *Authenticator) AuthenticateName(ctx context.Context, name string) (*Principal, error) {
	p, err := a.authenticateName(ctx, name)
	if err != nil && errors.Is(err, ErrUnauthenticated) {
		a.failures.WithLabelValues(reason(err)).Inc()
	}
	return p, err
}

func (a *Authenticator) authenticateName(ctx context.Context, name string) (*Principal, error) {
	if name == "" || len(name) > maxKeyName {
		return nil, ErrUnknownName
	}
	a.mu.RLock()
	ne, ok := a.byName[name]
	a.mu.RUnlock()
	if !ok || time.Since(ne.loaded) >= a.cfg.CacheTTL {
		v, err, _ := a.flight.Do("name\x00"+name, func() (any, error) {
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.LookupTimeout)
			defer cancel()
			a.lookups.Inc()
			epoch := a.currentEpoch()
			k, err := a.store.GetKeyByName(lctx, name)
			ne := nameEntry{loaded: time.Now()}
			switch {
			case err == nil:
				ne.id = k.ID
				a.put(k.ID, a.entryFrom(k), epoch)
			case !errors.Is(err, metadata.ErrKeyNotFound):
				return nil, err
			}
			a.mu.Lock()
			if a.epoch == epoch {
				a.bound()
				a.byName[name] = ne
			}
			a.mu.Unlock()
			return ne, nil
		})
		if err != nil {
			return nil, err
		}
		ne = v.(nameEntry)
	}
	if ne.id == "" {
		return nil, ErrUnknownName
	}
	e, err := a.entry(ctx, ne.id)
	if err != nil {
		return nil, err
	}
	return a.use(e)
}

// entry returns the fresh cached entry of a key id, loading it when
// missing or older than the TTL.
func (a *Authenticator) entry(ctx context.Context, id string) (*entry, error) {
	a.mu.RLock()
	e, ok := a.byID[id]
	a.mu.RUnlock()
	if ok && time.Since(e.loaded) < a.cfg.CacheTTL {
		return e, nil
	}
	v, err, _ := a.flight.Do(id, func() (any, error) {
		// Shared by every request waiting on this key: one going away
		// must not fail the others.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.LookupTimeout)
		defer cancel()
		return a.load(lctx, id)
	})
	if err != nil {
		return nil, err
	}
	return v.(*entry), nil
}

// load reads a key from Postgres into the cache.
func (a *Authenticator) load(ctx context.Context, id string) (*entry, error) {
	a.lookups.Inc()
	epoch := a.currentEpoch()
	k, err := a.store.GetKey(ctx, id)
	var e *entry
	switch {
	case err == nil:
		e = a.entryFrom(k)
	case errors.Is(err, metadata.ErrKeyNotFound):
		e = &entry{err: ErrInvalidToken, loaded: time.Now()}
	default:
		return nil, fmt.Errorf("look up key: %w", err)
	}
	a.put(id, e, epoch)
	return e, nil
}

func (a *Authenticator) currentEpoch() uint64 {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.epoch
}

func (a *Authenticator) entryFrom(k metadata.Key) *entry {
	e := &entry{hash: k.SecretHash, scram: k.SCRAM, loaded: time.Now()}
	if k.RevokedAt != nil {
		e.err = ErrRevoked
	} else {
		e.principal = keyFrom(k).principal()
	}
	return e
}

// put caches an entry read at epoch, unless an invalidation came since.
func (a *Authenticator) put(id string, e *entry, epoch uint64) {
	a.mu.Lock()
	if a.epoch != epoch {
		a.mu.Unlock()
		return
	}
	a.bound()
	if old, ok := a.byID[id]; ok && old.used.Load() {
		e.used.Store(true) // keep the pending touch
	}
	a.byID[id] = e
	a.mu.Unlock()
}

// bound clears the cache when it is full; a.mu is held.
func (a *Authenticator) bound() {
	if len(a.byID) >= a.cfg.MaxCachedKeys {
		a.byID = map[string]*entry{}
	}
	if len(a.byName) >= a.cfg.MaxCachedKeys {
		a.byName = map[string]nameEntry{}
	}
}

func hashEqual(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

// Invalidate drops a key from the cache (a notification said it changed)
// and re-checks the long requests that rely on it.
func (a *Authenticator) Invalidate(id string) {
	// Lookups already under way read the key before the change: the
	// next request must not join them, nor find what they cache.
	a.flight.Forget(id)
	a.mu.Lock()
	a.epoch++
	delete(a.byID, id)
	for name, ne := range a.byName {
		if ne.id == id || ne.id == "" {
			delete(a.byName, name)
		}
	}
	watched := len(a.watchers[id]) > 0
	a.mu.Unlock()
	if watched {
		go a.recheck(context.Background(), id)
	}
}

// InvalidateAll empties the cache (notifications may have been missed)
// and re-checks every long request.
func (a *Authenticator) InvalidateAll() {
	a.mu.Lock()
	a.epoch++
	a.byID = map[string]*entry{}
	a.byName = map[string]nameEntry{}
	a.mu.Unlock()
	go a.recheckAll(context.Background())
}

// Watch calls fn whenever the key's state is checked again after a change
// or after the cache TTL: with its current principal, or with nil once it
// is revoked, expired or gone. A long request uses it to end when its key
// no longer allows it. stop ends the watch.
func (a *Authenticator) Watch(id string, fn func(*Principal)) (stop func()) {
	w := &watcher{fn: fn}
	a.mu.Lock()
	set := a.watchers[id]
	if set == nil {
		set = map[*watcher]struct{}{}
		a.watchers[id] = set
	}
	set[w] = struct{}{}
	a.mu.Unlock()
	return func() {
		a.mu.Lock()
		delete(a.watchers[id], w)
		if len(a.watchers[id]) == 0 {
			delete(a.watchers, id)
		}
		a.mu.Unlock()
	}
}

// recheck reloads a watched key and tells its watchers.
func (a *Authenticator) recheck(ctx context.Context, id string) {
	v, err, _ := a.flight.Do(id, func() (any, error) {
		lctx, cancel := context.WithTimeout(ctx, a.cfg.LookupTimeout)
		defer cancel()
		return a.load(lctx, id)
	})
	if err != nil {
		a.logger.Debug("re-check of a key failed; its streams go on", "key_id", id, "err", err)
		return
	}
	p, err := a.use(v.(*entry))
	if err != nil {
		p = nil
	}
	a.mu.RLock()
	fns := make([]func(*Principal), 0, len(a.watchers[id]))
	for w := range a.watchers[id] {
		fns = append(fns, w.fn)
	}
	a.mu.RUnlock()
	for _, fn := range fns {
		fn(p)
	}
}

func (a *Authenticator) recheckAll(ctx context.Context) {
	a.mu.RLock()
	ids := make([]string, 0, len(a.watchers))
	for id := range a.watchers {
		ids = append(ids, id)
	}
	a.mu.RUnlock()
	for _, id := range ids {
		a.recheck(ctx, id)
	}
}

// Run writes last-used times and re-checks watched keys every TTL (in
// case a notification was lost, and for expiry) until ctx ends.
func (a *Authenticator) Run(ctx context.Context) {
	recheck := time.NewTicker(a.cfg.CacheTTL)
	defer recheck.Stop()
	touch := time.NewTicker(a.cfg.TouchInterval)
	defer touch.Stop()
	for {
		select {
		case <-ctx.Done():
			a.touch(context.WithoutCancel(ctx))
			return
		case <-recheck.C:
			a.recheckAll(ctx)
		case <-touch.C:
			a.touch(ctx)
		}
	}
}

// touch writes the last-used time of the keys used since the last call.
func (a *Authenticator) touch(ctx context.Context) {
	a.mu.RLock()
	var ids []string
	for id, e := range a.byID {
		if e.used.Swap(false) {
			ids = append(ids, id)
		}
	}
	a.mu.RUnlock()
	if len(ids) == 0 {
		return
	}
	tctx, cancel := context.WithTimeout(ctx, a.cfg.LookupTimeout)
	defer cancel()
	if err := a.store.TouchKeys(tctx, ids); err != nil {
		a.logger.Warn("could not record when keys were last used", "keys", len(ids), "err", err)
	}
}
