package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/semaphore"

	"silt/console"
	"silt/partitioner"
	"silt/problem"
	"silt/topiccache"
)

// Config holds the HTTP server's settings and request limits.
type Config struct {
	Listen string // host:port
	// MaxRecordBytes bounds one record's encoded size
	// (segment.RecordSize).
	MaxRecordBytes int
	// MaxRecordHeaders bounds one record's headers.
	MaxRecordHeaders int
	// MaxRequestBytes bounds one produce request body.
	MaxRequestBytes int64
	// MaxInflightRequestBytes bounds the produce request bodies being
	// read and parsed at once; past it produce gets 429.
	MaxInflightRequestBytes int64
	// MaxRecordsPerRequest bounds the records in one produce request.
	MaxRecordsPerRequest int
	// RequestBodyTimeout bounds the time to receive a produce request's
	// body once its headers are in; past it the request gets 408.
	RequestBodyTimeout time.Duration
	// WriteTimeout bounds each write of a response (see progressWriter);
	// past it the connection is closed.
	WriteTimeout time.Duration
	// ReadyTimeout bounds each readiness check.
	ReadyTimeout time.Duration
	// MaxPartitions bounds a topic's partition count.
	MaxPartitions int32
	// TopicCacheTTL is how long produce trusts a cached topic description.
	TopicCacheTTL time.Duration
	// MaxWait caps wait_ms of long-polls.
	MaxWait time.Duration
	// SSEHeartbeat is the idle interval after which a stream sends a comment.
	SSEHeartbeat time.Duration
	// Pprof serves Go's profiler under /debug/pprof/.
	Pprof bool
	// Version is reported by /v1/cluster and the agent registry.
	Version string
	// AgentID names this agent in /v1/stats.
	AgentID string
	// Auth is AuthRequired (a key on every route but /healthz, /readyz
	// and /metrics) or AuthNone (anonymous, for development).
	Auth string
	// MetricsElsewhere leaves /metrics out: another listener serves it.
	MetricsElsewhere bool
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Listen:                  ":8080",
		MaxRecordBytes:          1 << 20,
		MaxRecordHeaders:        1000,
		MaxRequestBytes:         16 << 20,
		MaxRecordsPerRequest:    100_000,
		MaxInflightRequestBytes: 256 << 20,
		RequestBodyTimeout:      60 * time.Second,
		WriteTimeout:            60 * time.Second,
		ReadyTimeout:            2 * time.Second,
		MaxPartitions:           10_000,
		TopicCacheTTL:           2 * time.Second,
		MaxWait:                 30 * time.Second,
		SSEHeartbeat:            15 * time.Second,
		Version:                 "dev",
		Auth:                    AuthRequired,
	}
}

// Validate checks the config.
func (c Config) Validate() error {
	switch {
	case c.Listen == "":
		return errors.New("agent: listen address is required")
	case c.MaxRecordBytes < 1:
		return errors.New("agent: max record bytes must be positive")
	case c.MaxRequestBytes < int64(c.MaxRecordBytes):
		return fmt.Errorf("agent: max request bytes (%d) must be at least max record bytes (%d)", c.MaxRequestBytes, c.MaxRecordBytes)
	case c.MaxInflightRequestBytes < c.MaxRequestBytes:
		return fmt.Errorf("agent: max in-flight request bytes (%d) must be at least max request bytes (%d)", c.MaxInflightRequestBytes, c.MaxRequestBytes)
	case c.MaxRecordHeaders < 1:
		return errors.New("agent: max record headers must be positive")
	case c.MaxRecordsPerRequest < 1:
		return errors.New("agent: max records per request must be positive")
	case c.RequestBodyTimeout <= 0:
		return errors.New("agent: request body timeout must be positive")
	case c.WriteTimeout <= 0:
		return errors.New("agent: write timeout must be positive")
	case c.ReadyTimeout <= 0:
		return errors.New("agent: ready timeout must be positive")
	case c.MaxPartitions < 1:
		return errors.New("agent: max partitions must be positive")
	case c.TopicCacheTTL < 0:
		return errors.New("agent: topic cache TTL must not be negative")
	case c.MaxWait <= 0:
		return errors.New("agent: max wait must be positive")
	case c.SSEHeartbeat <= 0:
		return errors.New("agent: SSE heartbeat must be positive")
	case c.Auth != AuthRequired && c.Auth != AuthNone:
		return fmt.Errorf("agent: auth %q: want %s or %s", c.Auth, AuthRequired, AuthNone)
	}
	return nil
}

// ReadyCheck is one dependency probed by /readyz.
type ReadyCheck struct {
	Name  string
	Check func(ctx context.Context) error
}

// Deps are the agent's collaborators, wired by cmd/silt.
type Deps struct {
	Topics   TopicStore
	Producer Producer
	Fetcher  Fetcher
	Cluster  Cluster
	Ready    []ReadyCheck
	// Gatherer serves /metrics; Registerer receives the agent's own metrics.
	Gatherer   prometheus.Gatherer
	Registerer prometheus.Registerer
	Logger     *slog.Logger

	// Groups serves /v1/groups; nil leaves those routes out.
	Groups GroupCoordinator
	// LagHistory serves /v1/groups/{group}/lag-history; nil leaves it out.
	LagHistory LagHistory

	// Auth authenticates and authorizes requests (see guard.go).
	Auth AuthDeps
}

// Server is the HTTP API.
type Server struct {
	cfg      Config
	deps     Deps
	logger   *slog.Logger
	echo     *echo.Echo
	http     *http.Server
	draining atomic.Bool
	metrics  *serverMetrics
	topics   *topiccache.Cache
	sticky   partitioner.Sticky
	bodies   *semaphore.Weighted // produce request bytes in flight (bodyReservation)
	drains   *semaphore.Weighted // refused bodies being drained (drainRefused)
	stopping chan struct{}       // closed when shutdown begins: ends streams and long-polls
	stopOnce sync.Once

	guardState guardState
	console    *console.Handler
	lastFlush  atomic.Int64 // unix ms of the last produce acknowledged here
	started    time.Time

	statsMu      sync.Mutex // guards the readiness checks /v1/stats reuses
	statsLast    map[string]string
	statsChecked time.Time
}

// New builds the server and its routes.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Registerer == nil {
		deps.Registerer = prometheus.NewRegistry()
	}
	if deps.Gatherer == nil {
		deps.Gatherer = prometheus.NewRegistry()
	}
	if deps.Auth.Producers != nil {
		b := &producerBindings{store: deps.Auth.Producers, owner: map[int64]string{}}
		if deps.Producer != nil {
			deps.Producer = boundProducer{Producer: deps.Producer, bindings: b}
		}
		if deps.Topics != nil {
			deps.Topics = bindingTopics{TopicStore: deps.Topics, bindings: b}
		}
	}
	s := &Server{cfg: cfg, deps: deps, logger: deps.Logger, stopping: make(chan struct{}), started: time.Now().UTC(), bodies: semaphore.NewWeighted(cfg.MaxInflightRequestBytes), drains: semaphore.NewWeighted(maxRefusedDrains)}
	s.topics = topiccache.New(deps.Topics, cfg.TopicCacheTTL)
	m, err := newServerMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.errorHandler
	e.Use(s.observe, s.guard, s.strictRequest)
	s.echo = e
	ccfg := console.DefaultConfig()
	ccfg.Auth, ccfg.Version = cfg.Auth, cfg.Version
	if s.console, err = console.New(ccfg); err != nil {
		return nil, err
	}
	s.routes()
	s.http = &http.Server{
		Handler:           s.withWriteDeadlines(e),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	return s, nil
}

func (s *Server) routes() {
	e := s.echo
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	if !s.cfg.MetricsElsewhere {
		e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(s.deps.Gatherer, promhttp.HandlerOpts{})))
	}
	if s.cfg.Pprof {
		e.GET("/debug/pprof/*", echo.WrapHandler(http.HandlerFunc(pprof.Index)))
		e.GET("/debug/pprof/profile", echo.WrapHandler(http.HandlerFunc(pprof.Profile)))
		e.GET("/debug/pprof/trace", echo.WrapHandler(http.HandlerFunc(pprof.Trace)))
		e.GET("/debug/pprof/symbol", echo.WrapHandler(http.HandlerFunc(pprof.Symbol)))
	}
	// The web console: static files, served without a key (the page asks
	// for one and sends it on its /v1 calls).
	e.GET("/ui", func(c echo.Context) error { return c.Redirect(http.StatusMovedPermanently, "/ui/") })
	e.GET("/ui/*", echo.WrapHandler(s.console))
	v1 := e.Group("/v1")
	s.topicRoutes(v1)
	s.produceRoutes(v1)
	s.fetchRoutes(v1)
	s.groupRoutes(v1)
	v1.GET("/cluster", s.cluster)
	v1.GET("/openapi.json", s.openapi)
	v1.GET("/stats", s.stats)
	s.securityRoutes(v1)
}

// Handler exposes the HTTP handler (for in-process tests).
func (s *Server) Handler() http.Handler { return s.http.Handler }

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.logger.Info("http listening", "addr", ln.Addr().String())
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("http serve: %w", err)
}

// Drain makes /readyz fail so load balancers stop sending new requests,
// while requests keep being served.
func (s *Server) Drain() { s.draining.Store(true) }

// Stopping is closed when shutdown begins; long-polls and streams end on it.
func (s *Server) Stopping() <-chan struct{} { return s.stopping }

// Shutdown ends streams and long-polls, stops accepting connections and
// waits for in-flight requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Drain()
	s.stopOnce.Do(func() { close(s.stopping) })
	if err := s.http.Shutdown(ctx); err != nil {
		return fmt.Errorf("http shutdown: %w", err)
	}
	return nil
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

type readyResponse struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

func (s *Server) readyz(c echo.Context) error {
	if s.draining.Load() {
		return newProblem(http.StatusServiceUnavailable, problem.CodeShuttingDown, "agent is shutting down")
	}
	resp := readyResponse{Status: "ok", Checks: map[string]string{}}
	var names, failed []string
	for _, rc := range s.deps.Ready {
		ctx, cancel := context.WithTimeout(c.Request().Context(), s.cfg.ReadyTimeout)
		err := rc.Check(ctx)
		cancel()
		if err != nil {
			names = append(names, rc.Name)
			failed = append(failed, rc.Name+": "+err.Error())
			continue
		}
		resp.Checks[rc.Name] = "ok"
	}
	if len(failed) > 0 {
		// The body names the failing checks only: their errors carry
		// object keys, hosts and SQL, which go to the log (the error
		// handler logs the whole chain).
		p := newProblem(http.StatusServiceUnavailable, problem.CodeUnavailable, "not ready: %s failing", strings.Join(names, ", "))
		return fmt.Errorf("not ready: %s: %w", strings.Join(failed, "; "), p)
	}
	return c.JSON(http.StatusOK, resp)
}
