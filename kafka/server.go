package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sync/semaphore"

	"silt/auth"
	"silt/batcher"
	"silt/fetch"
	"silt/groups"
	"silt/metadata"
)

// TopicStore is what the listener needs of the metadata store.
type TopicStore interface {
	CreateTopic(ctx context.Context, name string, partitions int32, cfg metadata.TopicConfig) (metadata.Topic, error)
	GetTopic(ctx context.Context, name string) (metadata.Topic, error)
	GetTopicByID(ctx context.Context, id int64) (metadata.Topic, error)
	ListTopics(ctx context.Context, after string, limit int) ([]metadata.Topic, error)
	AlterTopic(ctx context.Context, name string, u metadata.TopicUpdate) (metadata.Topic, error)
	DeleteTopic(ctx context.Context, name string) error
	NewProducerID(ctx context.Context) (int64, error)
	BumpProducerEpoch(ctx context.Context, id int64, epoch int16) (int16, error)
}

// Producer buffers records for the next flush; the batcher implements it.
type Producer interface {
	Submit(ctx context.Context, parts []batcher.Part) (*batcher.Pending, error)
}

// Fetcher reads partitions; fetch.Fetcher implements it.
type Fetcher interface {
	FetchChunks(ctx context.Context, req fetch.Request) (*fetch.ChunkResponse, error)
	Offsets(ctx context.Context, topicID int64, partition int32) (metadata.PartitionState, error)
	RecordForTimestamp(ctx context.Context, topicID int64, partition int32, ts int64) (offset, timestamp int64, found bool, err error)
}

// Watcher wakes fetches waiting for a partition's next commit; the
// fetch.Notifier implements it.
type Watcher interface {
	Watch(k fetch.PartitionKey) <-chan struct{}
}

// Groups coordinates consumer groups; groups.Coordinator implements it.
type Groups interface {
	KafkaJoin(ctx context.Context, group string, req groups.KafkaJoinRequest) (groups.KafkaJoinResult, error)
	KafkaSync(ctx context.Context, group string, req groups.KafkaSyncRequest) (groups.KafkaSyncResult, error)
	KafkaHeartbeat(ctx context.Context, group, member, instanceID string, generation int64) error
	KafkaLeave(ctx context.Context, group string, members []groups.KafkaMemberRef) ([]error, error)
	KafkaCommit(ctx context.Context, group string, req groups.KafkaCommitRequest) ([]error, error)
	KafkaOffsets(ctx context.Context, group string) ([]metadata.CommittedOffset, error)
	KafkaDescribe(ctx context.Context, group string) (groups.KafkaDescription, error)
	KafkaDeleteOffsets(ctx context.Context, group string, parts []groups.TopicPartitionName) ([]error, error)
	List(ctx context.Context, after string, limit int) ([]groups.Summary, error)
	Delete(ctx context.Context, group string) error
}

// ProducerKeys binds idempotent producer ids to the keys that asked for
// them; metadata.Store implements it.
type ProducerKeys interface {
	ProducerKey(ctx context.Context, producerID int64) (keyID string, found bool, err error)
	BindProducer(ctx context.Context, producerID int64, keyID string) error
}

// Deps are the listener's collaborators.
type Deps struct {
	Topics     TopicStore
	Producer   Producer
	Fetcher    Fetcher
	Watcher    Watcher
	Groups     Groups
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Auth checks keys; required with Config.RequireAuth.
	Auth Authenticator
	// Audit records admin mutations (topic and group changes, offset
	// resets); nil logs them only.
	Audit Auditor
	// Producers binds producer ids to keys; nil binds none.
	Producers ProducerKeys
}

// Server is the Kafka listener.
type Server struct {
	cfg      Config
	deps     Deps
	logger   *slog.Logger
	metrics  *metrics
	topics   *topicCache
	host     string // advertised
	port     int32
	inflight *semaphore.Weighted // request and fetch response bytes
	held     atomic.Int64        // bytes held in inflight, for the gauge
	bindings *producerBindings

	mu       sync.Mutex
	ln       net.Listener
	conns    map[*conn]struct{}
	closing  bool
	wg       sync.WaitGroup // connection goroutines
	stopping chan struct{}  // closed when shutdown begins: ends long-polls
	stopOnce sync.Once
}

// New returns a listener; Serve runs it.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Topics == nil || deps.Producer == nil || deps.Fetcher == nil || deps.Watcher == nil || deps.Groups == nil {
		return nil, errors.New("kafka: topics, producer, fetcher, watcher and groups are required")
	}
	if cfg.RequireAuth && deps.Auth == nil {
		return nil, errors.New("kafka: keys are required but no authenticator was given")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Registerer == nil {
		deps.Registerer = prometheus.NewRegistry()
	}
	host, port, err := splitHostPort(cfg.AdvertisedAddr)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, deps: deps, logger: deps.Logger, host: host, port: port,
		inflight: semaphore.NewWeighted(cfg.MaxInflightBytes),
		conns:    map[*conn]struct{}{},
		stopping: make(chan struct{}),
		topics:   newTopicCache(deps.Topics, cfg.TopicCacheTTL),
		bindings: &producerBindings{store: deps.Producers, owner: map[int64]string{}},
	}
	if s.metrics, err = newMetrics(deps.Registerer, s); err != nil {
		return nil, err
	}
	return s, nil
}

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	s.logger.Info("kafka listening", "addr", ln.Addr().String(), "advertised", s.cfg.AdvertisedAddr)
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("kafka accept: %w", err)
		}
		backoff = 0
		s.mu.Lock()
		if s.closing || len(s.conns) >= s.cfg.MaxConnections {
			full := !s.closing
			s.mu.Unlock()
			if full {
				s.metrics.refused.Inc()
				s.logger.Warn("kafka connection refused: too many connections", "remote", nc.RemoteAddr().String(), "max", s.cfg.MaxConnections)
			}
			nc.Close()
			continue
		}
		c := newConn(s, nc)
		s.conns[c] = struct{}{}
		s.wg.Add(2)
		s.mu.Unlock()
		s.metrics.connections.Inc()
		go c.readLoop()
		go c.writeLoop()
	}
}

// Shutdown stops accepting connections, stops reading requests, lets the
// ones in flight finish (fetches waiting for data answer at once) and
// writes their responses, then closes the connections, or until ctx ends,
// when it closes them regardless.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stopping) })
	s.mu.Lock()
	s.closing = true
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		c.stopReading()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.abort()
		}
		s.mu.Unlock()
		<-done
		return fmt.Errorf("kafka shutdown: %w", ctx.Err())
	}
}

// acquire takes n bytes of the in-flight bound, waiting for them.
func (s *Server) acquire(ctx context.Context, n int64) error {
	if n <= 0 {
		return nil
	}
	if err := s.inflight.Acquire(ctx, n); err != nil {
		return err
	}
	s.held.Add(n)
	return nil
}

// tryAcquire takes n bytes of the in-flight bound if they are free now.
func (s *Server) tryAcquire(n int64) bool {
	if n <= 0 {
		return true
	}
	if !s.inflight.TryAcquire(n) {
		return false
	}
	s.held.Add(n)
	return true
}

// releaseBytes returns n bytes to the in-flight bound.
func (s *Server) releaseBytes(n int64) {
	if n <= 0 {
		return
	}
	s.held.Add(-n)
	s.inflight.Release(n)
}

func (s *Server) inflightBytes() int64 { return s.held.Load() }

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.metrics.connections.Dec()
	c.mu.Lock()
	stop := c.unwatch
	c.unwatch = nil
	c.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// call is one request being handled.
type call struct {
	c        *conn
	key      int16
	version  int16
	corr     int32
	clientID string
	req      kmsg.Request // body decoded only when served
	served   bool
	size     int64 // request bytes held in the in-flight bound
	released sync.Once
	started  time.Time

	// What the writer sends: resp (nil sends nothing, for acks=0), or
	// rawResp unframed by a header when raw (SASL tokens after a version 0
	// handshake), then releases extra bytes of the in-flight bound, then
	// closes the connection if closeAfter.
	resp       kmsg.Response
	raw        bool
	rawResp    []byte
	extra      int64
	closeAfter bool
	done       chan struct{} // closed when resp is final

	// Produce requests pass a token in arrival order so that their
	// records reach the batcher in that order: prevSubmit is closed when
	// the connection's previous produce request has submitted (or given
	// up), and this one closes submitted when it has.
	prevSubmit <-chan struct{}
	submitted  chan struct{}
	submitOnce sync.Once
}

// submitDone passes the produce token on to the next produce request.
func (cl *call) submitDone() {
	if cl.submitted != nil {
		cl.submitOnce.Do(func() { close(cl.submitted) })
	}
}

// release returns the request's bytes to the in-flight bound, once.
func (cl *call) release() {
	cl.released.Do(func() { cl.c.s.releaseBytes(cl.size) })
}

// reply finishes a call with resp.
func (cl *call) reply(resp kmsg.Response) {
	cl.resp = resp
	close(cl.done)
}

// conn is one client connection: a reader that decodes requests and
// starts a goroutine per request, and a writer that sends the responses
// in request order.
type conn struct {
	s       *Server
	nc      net.Conn
	ctx     context.Context // ends when the connection is closed
	cancel  context.CancelFunc
	calls   chan *call // in request order, to the writer
	mu      sync.Mutex
	idle    bool // waiting for a request's first bytes
	closing bool // stop reading
	// lastSubmit is the produce token of the latest produce request.
	lastSubmit chan struct{}

	// principal is who the connection authenticated as (nil until then,
	// when keys are required); unwatch (under mu) ends the watch of its
	// key. sasl is the reader's.
	principal    atomic.Pointer[auth.Principal]
	unwatch      func()
	sasl         saslState
	authDeadline time.Time
}

func newConn(s *Server, nc net.Conn) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan struct{})
	close(first)
	return &conn{s: s, nc: nc, ctx: ctx, cancel: cancel,
		calls: make(chan *call, s.cfg.MaxInflightPerConn), lastSubmit: first,
		authDeadline: time.Now().Add(s.cfg.AuthTimeout)}
}

func (c *conn) remote() string { return c.nc.RemoteAddr().String() }

// preAuthenticated reports whether the connection must still authenticate.
func (c *conn) preAuthenticated() bool { return c.s.cfg.RequireAuth && c.principal.Load() == nil }

// stopReading makes the reader stop once the request it is reading, if
// any, is read.
func (c *conn) stopReading() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closing = true
	if c.idle {
		_ = c.nc.SetReadDeadline(time.Now())
	}
}

// awaitRequest arms the idle timeout, or says to stop.
func (c *conn) awaitRequest() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.idle = true
	deadline := time.Now().Add(c.s.cfg.IdleTimeout)
	if c.preAuthenticated() && c.authDeadline.Before(deadline) {
		deadline = c.authDeadline
	}
	_ = c.nc.SetReadDeadline(deadline)
	return true
}

// requestStarted bounds the time the rest of a request may take to arrive.
func (c *conn) requestStarted() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.idle = false
	_ = c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
}

// abort closes the connection now, failing requests in flight.
func (c *conn) abort() {
	c.cancel()
	c.nc.Close()
}

func (c *conn) readLoop() {
	defer c.s.wg.Done()
	defer close(c.calls) // the writer drains what is queued, then closes
	if !c.handshake() {
		return
	}
	var hdr [4]byte
	for c.awaitRequest() {
		if _, err := io.ReadFull(c.nc, hdr[:]); err != nil {
			c.readFailed(err)
			return
		}
		c.requestStarted()
		size := int64(int32(binary.BigEndian.Uint32(hdr[:])))
		pre := c.preAuthenticated()
		limit, least := c.s.cfg.MaxRequestBytes, int64(8)
		if pre {
			limit = maxPreAuthBytes
			if c.sasl.raw {
				least = 0
			}
		}
		if size < least || size > limit {
			c.s.metrics.malformed.Inc()
			c.s.logger.Warn("kafka request refused: size out of bounds; closing the connection",
				"remote", c.nc.RemoteAddr().String(), "size", size, "max", limit, "authenticated", !pre)
			c.abort()
			return
		}
		if err := c.s.acquire(c.ctx, size); err != nil {
			return
		}
		body := make([]byte, size)
		if _, err := io.ReadFull(c.nc, body); err != nil {
			c.s.releaseBytes(size)
			c.readFailed(err)
			return
		}
		if pre && c.sasl.raw {
			ok := c.rawToken(body)
			c.s.releaseBytes(size)
			if !ok {
				return
			}
			continue
		}
		cl, err := c.decode(body)
		if err != nil {
			c.s.releaseBytes(size)
			c.s.metrics.malformed.Inc()
			c.s.logger.Warn("kafka request not decodable; closing the connection", "remote", c.nc.RemoteAddr().String(), "err", err)
			c.abort()
			return
		}
		cl.size = size
		if pre {
			if !c.preAuth(cl) {
				return
			}
			continue
		}
		if cl.key == keyProduce {
			cl.prevSubmit = c.lastSubmit
			cl.submitted = make(chan struct{})
			c.lastSubmit = cl.submitted
		}
		select {
		case c.calls <- cl: // waits while MaxInflightPerConn are queued
		case <-c.ctx.Done():
			c.s.releaseBytes(size)
			return
		}
		go c.s.handle(cl)
	}
}

func (c *conn) readFailed(err error) {
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if closing {
		return // shutdown
	}
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
	case errors.As(err, &ne) && ne.Timeout():
		c.s.logger.Debug("kafka connection idle; closing", "remote", c.nc.RemoteAddr().String())
	default:
		c.s.logger.Debug("kafka connection read failed", "remote", c.nc.RemoteAddr().String(), "err", err)
	}
}

// decode parses a request's header and, when the API and version are
// served, its body. body aliases the request frame, which the request's
// byte fields (records) keep referring to.
func (c *conn) decode(body []byte) (*call, error) {
	r := reader{b: body}
	cl := &call{c: c, key: r.int16(), version: r.int16(), corr: r.int32(), done: make(chan struct{}), started: time.Now()}
	cl.clientID = r.nullableString()
	if r.err != nil {
		return nil, fmt.Errorf("request header: %w", r.err)
	}
	req := kmsg.RequestForKey(cl.key)
	if req == nil || cl.version < 0 || cl.version > req.MaxVersion() {
		if cl.key == keyApiVersions {
			return cl, nil // answered in version 0, whatever was asked
		}
		return nil, fmt.Errorf("API key %d version %d is unknown to this listener", cl.key, cl.version)
	}
	req.SetVersion(cl.version)
	if req.IsFlexible() {
		r.skipTags()
		if r.err != nil {
			return nil, fmt.Errorf("request header tags: %w", r.err)
		}
	}
	cl.req = req
	if cl.served = served(cl.key, cl.version); !cl.served {
		return cl, nil // answered with UNSUPPORTED_VERSION; the body is not read
	}
	if err := req.ReadFrom(r.b); err != nil {
		return nil, fmt.Errorf("%s v%d body: %w", kmsg.NameForKey(cl.key), cl.version, err)
	}
	return cl, nil
}

func (c *conn) writeLoop() {
	defer c.s.wg.Done()
	defer func() {
		c.abort()
		c.s.forget(c)
		// Calls still queued (after a write failed) are waited for, so
		// that their bytes return to the in-flight bound.
		for cl := range c.calls {
			<-cl.done
			c.s.releaseBytes(cl.extra)
		}
	}()
	var buf []byte // small responses; large ones use pooled buffers
	for cl := range c.calls {
		select {
		case <-cl.done:
		case <-c.ctx.Done():
			<-cl.done
		}
		if cl.raw && c.ctx.Err() == nil {
			frame := binary.BigEndian.AppendUint32(nil, uint32(len(cl.rawResp)))
			_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
			if _, err := c.nc.Write(append(frame, cl.rawResp...)); err != nil {
				return
			}
		}
		if cl.resp != nil && c.ctx.Err() == nil {
			out := buf[:0]
			var big *[]byte
			if cl.extra > smallResponse {
				// A fetch answer: its size is about its reservation;
				// a buffer that fits avoids growing (and copying) it
				// while the records are appended.
				big = getResponseBuffer(int(cl.extra) + responseSlack)
				out = (*big)[:0]
			}
			out = appendResponse(out, cl)
			_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
			_, err := c.nc.Write(out)
			if big != nil && cap(out) <= maxPooledBytes {
				*big = out
				responseBuffers.Put(big)
			} else if cap(out) <= smallResponse {
				buf = out
			}
			if err != nil {
				c.s.releaseBytes(cl.extra)
				c.s.logger.Debug("kafka response write failed", "remote", c.nc.RemoteAddr().String(), "err", err)
				return
			}
		}
		c.s.releaseBytes(cl.extra)
		c.s.metrics.observe(cl)
		if c.s.logger.Enabled(context.Background(), slog.LevelDebug) {
			c.s.logger.Debug("kafka request", "api", kmsg.NameForKey(cl.key), "version", cl.version, "client_id", cl.clientID,
				"remote", c.nc.RemoteAddr().String(), "served", cl.served, "ms", time.Since(cl.started).Milliseconds())
		}
		if cl.closeAfter {
			return
		}
	}
}

// Response buffers: fetch answers (at most MaxFetchBytes, plus the
// framing) are written from pooled buffers; other answers from one small
// buffer per connection.
const (
	smallResponse  = 64 << 10
	responseSlack  = 64 << 10 // framing and partition headers around the records
	maxPooledBytes = 128 << 20
)

var responseBuffers sync.Pool // *[]byte

func getResponseBuffer(size int) *[]byte {
	if bp, ok := responseBuffers.Get().(*[]byte); ok && cap(*bp) >= size {
		return bp
	}
	b := make([]byte, 0, size)
	return &b
}

// appendResponse frames a response: size, correlation id, the header's
// tags when flexible (never for ApiVersions), the body.
func appendResponse(dst []byte, cl *call) []byte {
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(cl.corr))
	if cl.resp.IsFlexible() && cl.key != keyApiVersions {
		dst = append(dst, 0)
	}
	dst = cl.resp.AppendTo(dst)
	binary.BigEndian.PutUint32(dst, uint32(len(dst)-4))
	return dst
}

// reader reads the request header's primitives.
type reader struct {
	b   []byte
	err error
}

var errShort = errors.New("truncated")

func (r *reader) take(n int) []byte {
	if r.err != nil || n < 0 || len(r.b) < n {
		r.err = errShort
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) int16() int16 {
	if b := r.take(2); b != nil {
		return int16(binary.BigEndian.Uint16(b))
	}
	return 0
}

func (r *reader) int32() int32 {
	if b := r.take(4); b != nil {
		return int32(binary.BigEndian.Uint32(b))
	}
	return 0
}

func (r *reader) nullableString() string {
	n := r.int16()
	if n < 0 || r.err != nil {
		return ""
	}
	return string(r.take(int(n)))
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

// skipTags skips a tagged-fields section (the flexible header's).
func (r *reader) skipTags() {
	for n := r.uvarint(); n > 0 && r.err == nil; n-- {
		r.uvarint() // tag
		size := r.uvarint()
		if size > uint64(len(r.b)) {
			r.err = errShort
			return
		}
		r.take(int(size))
	}
}
