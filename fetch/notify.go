package fetch

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// PartitionKey names a partition.
type PartitionKey struct {
	TopicID   int64
	Partition int32
}

// Notifier fans Postgres commit notifications out to waiters in memory,
// over one LISTEN connection.
type Notifier struct {
	url     string
	channel string
	logger  *slog.Logger

	mu        sync.Mutex
	waiters   map[PartitionKey]chan struct{}
	ready     chan struct{} // closed once the first LISTEN is up
	readyOnce sync.Once
	stopped   chan struct{}
	notes     prometheus.Counter
	others    []channelHandler // further channels on the same connection
}

// channelHandler receives the notifications of another channel.
type channelHandler struct {
	channel string
	note    func(payload string)
	gap     func() // notifications may have been missed
}

// NewNotifier returns a Notifier for channel on the database at url.
// Run it with Run.
func NewNotifier(url, channel string, logger *slog.Logger, reg prometheus.Registerer) (*Notifier, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{
		url: url, channel: channel, logger: logger,
		waiters: map[PartitionKey]chan struct{}{},
		ready:   make(chan struct{}),
		stopped: make(chan struct{}),
		notes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "silt_fetch_notifications_total", Help: "Partition commit notifications received.",
		}),
	}
	if reg != nil {
		if err := reg.Register(n.notes); err != nil {
			return nil, fmt.Errorf("notifier metrics: %w", err)
		}
	}
	return n, nil
}

// Also listens on another channel over the same connection: note gets
// each notification's payload, and gap is called whenever notifications
// may have been missed (after a reconnection). Call it before Run.
func (n *Notifier) Also(channel string, note func(payload string), gap func()) {
	n.others = append(n.others, channelHandler{channel: channel, note: note, gap: gap})
}

// Ready is closed once the notifier listens for the first time.
func (n *Notifier) Ready() <-chan struct{} { return n.ready }

// Watch returns a channel that is closed at the next notification for k
// (or when the listener reconnects). Subscribe before checking the state
// the wait depends on, so that no notification falls in between.
func (n *Notifier) Watch(k PartitionKey) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch, ok := n.waiters[k]
	if !ok {
		ch = make(chan struct{})
		n.waiters[k] = ch
	}
	return ch
}

// Stopped is closed when Run returns.
func (n *Notifier) Stopped() <-chan struct{} { return n.stopped }

// Run listens until ctx ends, reconnecting with backoff.
func (n *Notifier) Run(ctx context.Context) {
	defer close(n.stopped)
	defer n.wakeAll() // release waiters on shutdown
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := n.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		n.logger.Warn("notify listener lost; reconnecting", "err", err, "in", backoff)
		n.wakeAll() // notifications may have been missed
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (n *Notifier) listen(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, n.url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{n.channel}.Sanitize()); err != nil {
		return err
	}
	for _, h := range n.others {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{h.channel}.Sanitize()); err != nil {
			return err
		}
	}
	n.readyOnce.Do(func() { close(n.ready) })
	n.wakeAll() // anything committed while we were not listening
	for _, h := range n.others {
		h.gap()
	}
	for {
		note, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if note.Channel != n.channel {
			for _, h := range n.others {
				if h.channel == note.Channel {
					h.note(note.Payload)
				}
			}
			continue
		}
		n.dispatch(note.Payload)
	}
}

// dispatch wakes the waiters of every partition named in payload, a list
// of "topicID:partition:highWatermark" entries (waiters re-read the
// watermark themselves), and of every partition of a topic named in a
// "topicID:*:deleted" entry (metadata.TopicDeletedNotice).
func (n *Notifier) dispatch(payload string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, e := range strings.Fields(payload) {
		parts := strings.Split(e, ":")
		if len(parts) != 3 {
			continue
		}
		t, err1 := strconv.ParseInt(parts[0], 10, 64)
		if err1 != nil {
			continue
		}
		if parts[1] == "*" {
			for k, ch := range n.waiters {
				if k.TopicID == t {
					close(ch)
					delete(n.waiters, k)
				}
			}
			n.notes.Inc()
			continue
		}
		p, err2 := strconv.ParseInt(parts[1], 10, 32)
		if err2 != nil {
			continue
		}
		k := PartitionKey{t, int32(p)}
		if ch, ok := n.waiters[k]; ok {
			close(ch)
			delete(n.waiters, k)
		}
		n.notes.Inc()
	}
}

func (n *Notifier) wakeAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, ch := range n.waiters {
		close(ch)
		delete(n.waiters, k)
	}
}
