package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"silt/problem"
	"silt/recordjson"
)

// StreamOptions tune Stream. The zero value is usable.
type StreamOptions struct {
	// IdleTimeout, when positive, drops and reopens a connection on which
	// nothing, not even a heartbeat, arrived for this long. Set it above
	// the agent's heartbeat interval.
	IdleTimeout time.Duration
	// MaxBackoff caps the wait between reconnections (default 5s).
	MaxBackoff time.Duration
	// OffsetReset is what an offset out of range does, at the start or
	// when retention passes a slow reader: ResetEarliest or ResetLatest
	// continue from there; ResetError, or empty, ends the stream with
	// offset_out_of_range.
	OffsetReset string
	// TopicID, when not 0, pins the topic's id (see FetchOptions.TopicID).
	TopicID int64
}

// maxEventLine bounds one line of the event stream: a record's bytes,
// base64-expanded, plus its JSON.
const maxEventLine = 64 << 20

// Stream follows a partition from offset (or Earliest, Latest) over
// server-sent events and yields its records as they are produced. When the
// connection drops or the agent ends the stream, it reconnects with
// Last-Event-ID so that no record is skipped or repeated; it keeps going
// until ctx ends, then stops without an error. It yields a non-nil error,
// and stops, only for failures that reconnecting cannot fix, such as
// topic_not_found, or offset_out_of_range unless opts.OffsetReset moves
// the offset. If nothing was received yet, a reconnection with Latest
// starts from the high watermark of that time.
func (c *Client) Stream(ctx context.Context, topic string, partition int32, offset int64, opts StreamOptions) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		s := &stream{c: c, topic: topic, partition: partition, opts: opts, last: -1}
		if err := s.run(ctx, offset, yield); err != nil {
			yield(Record{}, fmt.Errorf("stream %s/%d: %w", topic, partition, err))
		}
	}
}

type stream struct {
	c         *Client
	topic     string
	partition int32
	opts      StreamOptions
	last      int64 // offset of the last record yielded; -1 before any
}

// errStopped means the consumer stopped ranging.
var errStopped = errors.New("stopped")

// run connects and reconnects until ctx ends, the consumer stops, or a
// permanent error, which it returns.
func (s *stream) run(ctx context.Context, offset int64, yield func(Record, error) bool) error {
	off, err := offsetParam(offset)
	if err != nil {
		return err
	}
	if err := validReset(s.opts.OffsetReset); err != nil {
		return err
	}
	maxBackoff := s.opts.MaxBackoff
	if maxBackoff <= 0 {
		maxBackoff = 5 * time.Second
	}
	failures := 0
	for {
		before := s.last
		err := s.connect(ctx, off, yield)
		switch {
		case errors.Is(err, errStopped), ctx.Err() != nil:
			return nil
		case IsCode(err, problem.CodeOffsetOutOfRange):
			var e *Error
			errors.As(err, &e)
			to, ok := resetTarget(s.opts.OffsetReset, e)
			if !ok {
				return err
			}
			// Continue from there, forgetting the records before: the
			// next ones may have lower offsets (a topic created again).
			off, s.last = strconv.FormatInt(to, 10), -1
		case !reconnectable(err):
			return err
		}
		if s.last != before {
			failures = 0
		}
		failures++
		wait := backoff(100*time.Millisecond, maxBackoff, failures)
		var e *Error
		if errors.As(err, &e) && e.RetryAfter > 0 {
			wait = e.RetryAfter
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// reconnectable reports whether a connection's end calls for another:
// clean ends, dropped connections and retriable problems.
func reconnectable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Retriable
	}
	var te *transportError
	return err == nil || errors.As(err, &te)
}

// connect opens one connection and yields its records. It returns nil
// when the agent ends the stream.
func (s *stream) connect(ctx context.Context, off string, yield func(Record, error) bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := request{method: http.MethodGet, path: partitionPath(s.topic, s.partition, "stream"),
		query: topicIDQuery(url.Values{"offset": {off}}, s.opts.TopicID), accept: mediaSSE}
	if s.last >= 0 {
		req.header = http.Header{"Last-Event-Id": {strconv.FormatInt(s.last, 10)}}
	}
	resp, err := s.c.open(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// Unblock reads when ctx ends (or the idle timer fires), whatever
	// the transport does about a cancelled request.
	defer context.AfterFunc(ctx, func() { resp.Body.Close() })()
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != mediaSSE {
		return fmt.Errorf("unexpected content type %q", resp.Header.Get("Content-Type"))
	}
	onLine := func() {}
	if s.opts.IdleTimeout > 0 {
		idle := time.AfterFunc(s.opts.IdleTimeout, cancel)
		defer idle.Stop()
		onLine = func() { idle.Reset(s.opts.IdleTimeout) }
	}
	events := newSSEReader(resp.Body, maxEventLine, onLine)
	for {
		ev, err := events.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return &transportError{fmt.Errorf("read event stream: %w", err)}
		}
		if ev.event == "error" {
			return streamError(ev.data)
		}
		if ev.event != "record" {
			continue
		}
		rec, err := s.decode(ev)
		if err != nil {
			return err
		}
		if rec.Offset <= s.last {
			continue // already yielded before a reconnection
		}
		s.last = rec.Offset
		if !yield(rec, nil) {
			return errStopped
		}
	}
}

// streamError is the *Error of an error event, which ends the stream: a
// problem as error responses carry it.
func streamError(data []byte) error {
	var p problemJSON
	if err := json.Unmarshal(data, &p); err != nil || p.Status == 0 {
		return &transportError{fmt.Errorf("error event %q", truncate(data, 512))}
	}
	return errorFromResponse(p.Status, http.Header{"Content-Type": {problem.MediaType}}, data)
}

func (s *stream) decode(ev sseEvent) (Record, error) {
	var j recordjson.Record
	if err := json.Unmarshal(ev.data, &j); err != nil {
		return Record{}, fmt.Errorf("decode record event %q: %w", ev.id, err)
	}
	if j.Offset == nil && ev.hasID {
		if n, err := strconv.ParseInt(ev.id, 10, 64); err == nil {
			j.Offset = &n
		}
	}
	return recordFrom(&j, s.partition)
}
