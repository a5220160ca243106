package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
)

// Code is a stable, machine-readable error code carried in every problem
// response. Codes never change meaning; new ones may be added.
type Code string

// The error codes of the HTTP API.
const (
	CodeBadRequest           Code = "bad_request"
	CodeInvalidJSON          Code = "invalid_json"
	CodeInvalidParameter     Code = "invalid_parameter"
	CodeInvalidTopicName     Code = "invalid_topic_name"
	CodeInvalidConfig        Code = "invalid_config"
	CodeInvalidRecord        Code = "invalid_record"
	CodeInvalidPartitions    Code = "invalid_partition_count"
	CodeRouteNotFound        Code = "route_not_found"
	CodeMethodNotAllowed     Code = "method_not_allowed"
	CodeTopicNotFound        Code = "topic_not_found"
	CodePartitionNotFound    Code = "partition_not_found"
	CodeTopicExists          Code = "topic_exists"
	CodeRecordTooLarge       Code = "record_too_large"
	CodeRequestTooLarge      Code = "request_too_large"
	CodeTooManyRecords       Code = "too_many_records"
	CodeUnsupportedMediaType Code = "unsupported_media_type"
	CodeNotAcceptable        Code = "not_acceptable"
	CodeBackpressure         Code = "backpressure"
	CodeUnavailable          Code = "unavailable"
	CodeShuttingDown         Code = "shutting_down"
	CodeOffsetOutOfRange     Code = "offset_out_of_range"
	CodeSequenceGap          Code = "out_of_order_sequence"
	CodeUnknownProducer      Code = "unknown_producer"
	CodeFenced               Code = "fenced"
	CodeInternal             Code = "internal"
)

// Problem is an RFC 9457 problem details object.
type Problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	Instance  string `json:"instance,omitempty"`
	Code      Code   `json:"code"`
	Retriable bool   `json:"retriable"`
	// RetryAfter, in seconds, is also sent as the Retry-After header.
	RetryAfter int `json:"retry_after,omitempty"`
	// LogStartOffset and HighWatermark accompany offset_out_of_range.
	LogStartOffset *int64 `json:"log_start_offset,omitempty"`
	HighWatermark  *int64 `json:"high_watermark,omitempty"`
}

// Error makes a Problem usable as an error returned from handlers.
func (p *Problem) Error() string { return fmt.Sprintf("%d %s: %s", p.Status, p.Code, p.Detail) }

// ContentTypeProblem is the media type of error bodies.
const ContentTypeProblem = "application/problem+json"

// problem builds a Problem for code with a formatted detail.
func problem(status int, code Code, format string, args ...any) *Problem {
	p := &Problem{
		Type:   "urn:silt:problem:" + string(code),
		Title:  http.StatusText(status),
		Status: status,
		Detail: fmt.Sprintf(format, args...),
		Code:   code,
	}
	switch status {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		p.Retriable = true
		p.RetryAfter = 1
	}
	return p
}

func badRequest(code Code, format string, args ...any) *Problem {
	return problem(http.StatusBadRequest, code, format, args...)
}

func notFound(code Code, format string, args ...any) *Problem {
	return problem(http.StatusNotFound, code, format, args...)
}

// writeProblem sends p as the response.
func writeProblem(c echo.Context, p *Problem) error {
	if p.Instance == "" {
		p.Instance = c.Request().URL.Path
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, ContentTypeProblem)
	if p.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(p.RetryAfter))
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	c.Response().WriteHeader(p.Status)
	_, err = c.Response().Write(append(b, '\n'))
	return err
}

// errorHandler turns every handler error into a problem response.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	p := s.toProblem(err)
	if p.Status >= 500 {
		s.logger.Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "status", p.Status, "code", p.Code, "err", err)
	}
	if werr := writeProblem(c, p); werr != nil {
		s.logger.Debug("write problem", "err", werr)
	}
}

// toProblem maps an error to a Problem; mapErr hooks let handlers' domain
// errors be translated in one place (errors.go).
func (s *Server) toProblem(err error) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		switch he.Code {
		case http.StatusNotFound:
			return notFound(CodeRouteNotFound, "no such route")
		case http.StatusMethodNotAllowed:
			return problem(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "method not allowed on this route")
		case http.StatusRequestEntityTooLarge:
			return problem(he.Code, CodeRequestTooLarge, "request body too large")
		case http.StatusUnsupportedMediaType:
			return problem(he.Code, CodeUnsupportedMediaType, "%v", he.Message)
		}
		if he.Code < 500 {
			return problem(he.Code, CodeBadRequest, "%v", he.Message)
		}
	}
	if p := mapDomainError(err); p != nil {
		return p
	}
	return problem(http.StatusInternalServerError, CodeInternal, "internal error")
}
