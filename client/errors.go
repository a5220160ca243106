package client

import (
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"silt/problem"
)

// Code is a stable error code from the agent's problem responses; the
// codes are the constants of package problem.
type Code = problem.Code

// Error is an error response of the agent (an RFC 9457 problem), or a
// non-2xx response without a problem body, in which case Code is empty and
// Detail holds the start of the body.
type Error struct {
	Status    int
	Code      Code
	Type      string
	Title     string
	Detail    string
	Instance  string
	Retriable bool
	// RetryAfter is the wait the agent asked for (Retry-After), or 0.
	RetryAfter time.Duration
	// LogStartOffset and HighWatermark are set on offset_out_of_range
	// errors: the range of offsets the partition holds.
	LogStartOffset int64
	HighWatermark  int64
	// NextOffset is set on offset_mismatch errors: the partition's next
	// offset, where a conditional append could go now.
	NextOffset int64
	// TopicID is set on topic_id_mismatch errors: the topic's current id.
	TopicID int64
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(e.Status))
	if e.Code != "" {
		b.WriteString(" ")
		b.WriteString(string(e.Code))
	}
	switch {
	case e.Detail != "":
		b.WriteString(": ")
		b.WriteString(e.Detail)
	case e.Title != "":
		b.WriteString(": ")
		b.WriteString(e.Title)
	}
	return b.String()
}

// IsCode reports whether err is (or wraps) an *Error with the code.
func IsCode(err error, code Code) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// problemJSON is the wire form of a problem.
type problemJSON struct {
	Type           string `json:"type"`
	Title          string `json:"title"`
	Status         int    `json:"status"`
	Detail         string `json:"detail"`
	Instance       string `json:"instance"`
	Code           Code   `json:"code"`
	Retriable      bool   `json:"retriable"`
	RetryAfter     int    `json:"retry_after"`
	LogStartOffset *int64 `json:"log_start_offset"`
	HighWatermark  *int64 `json:"high_watermark"`
	NextOffset     *int64 `json:"next_offset"`
	TopicID        *int64 `json:"topic_id"`
}

// maxErrorBody bounds how much of an error body is kept.
const maxErrorBody = 64 << 10

// errorFromResponse builds the *Error of a non-2xx response with its
// (possibly truncated) body.
func errorFromResponse(status int, h http.Header, body []byte) *Error {
	e := &Error{Status: status, Title: http.StatusText(status)}
	var p problemJSON
	if isJSONMedia(h.Get("Content-Type")) && json.Unmarshal(body, &p) == nil && p.Code != "" {
		e.Code, e.Type, e.Detail, e.Instance, e.Retriable = p.Code, p.Type, p.Detail, p.Instance, p.Retriable
		if p.Title != "" {
			e.Title = p.Title
		}
		if p.RetryAfter > 0 {
			e.RetryAfter = time.Duration(p.RetryAfter) * time.Second
		}
		if p.LogStartOffset != nil {
			e.LogStartOffset = *p.LogStartOffset
		}
		if p.HighWatermark != nil {
			e.HighWatermark = *p.HighWatermark
		}
		if p.NextOffset != nil {
			e.NextOffset = *p.NextOffset
		}
		if p.TopicID != nil {
			e.TopicID = *p.TopicID
		}
	} else {
		e.Detail = strings.TrimSpace(string(truncate(body, 512)))
		// Without a problem body, trust the status: proxies and load
		// balancers answer these when an agent is away.
		switch status {
		case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			e.Retriable = true
		}
	}
	if d, ok := parseRetryAfter(h.Get("Retry-After"), time.Now()); ok {
		e.RetryAfter = d
	}
	return e
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// isJSONMedia reports whether ct is application/json, problem+json or
// another +json type.
func isJSONMedia(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0, false
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	if d < 0 {
		d = 0
	}
	return d, true
}
