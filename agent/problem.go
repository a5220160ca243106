package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"silt/groups"
	"silt/problem"
)

// newProblem builds a problem for code with a formatted detail.
func newProblem(status int, code problem.Code, format string, args ...any) *problem.Details {
	p := &problem.Details{
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

func badRequest(code problem.Code, format string, args ...any) *problem.Details {
	return newProblem(http.StatusBadRequest, code, format, args...)
}

func notFound(code problem.Code, format string, args ...any) *problem.Details {
	return newProblem(http.StatusNotFound, code, format, args...)
}

// readError is the problem for a request body that could not be read:
// its chunked framing is broken, or it ended before its length or its
// last chunk. Either is the client's doing, never the agent's; the
// detail names no address (a connection error's text would).
func readError(err error) *problem.Details {
	var ne net.Error
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return badRequest(problem.CodeBadRequest, "the request body ended before its declared length or its last chunk")
	case errors.As(err, &ne), errors.Is(err, net.ErrClosed):
		return badRequest(problem.CodeBadRequest, "the request body could not be read: the connection failed")
	}
	// net/http's chunked reader: "malformed chunked encoding", "invalid
	// byte in chunk length" and the like, which name no address.
	return badRequest(problem.CodeBadRequest, "the request body's chunked transfer coding is invalid: %v", err)
}

// writeProblem sends p as the response.
func writeProblem(c echo.Context, p *problem.Details) error {
	if p.Instance == "" {
		p.Instance = c.Request().URL.Path
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, problem.MediaType)
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
	// Member ids in paths and errors authorize members: logs get them
	// shortened.
	switch path := groups.RedactMemberIDs(c.Request().URL.Path); {
	case c.Request().Context().Err() != nil:
		s.logger.Debug("request ended by the client", "method", c.Request().Method, "path", path, "err", groups.RedactMemberIDs(err.Error()))
	case p.Status >= 500:
		s.logger.Error("request failed", "method", c.Request().Method, "path", path, "status", p.Status, "code", p.Code, "err", groups.RedactMemberIDs(err.Error()))
	}
	if p.Status == http.StatusTooManyRequests {
		s.drainRefused(c, p)
	}
	if werr := writeProblem(c, p); werr != nil {
		s.logger.Debug("write problem", "err", werr)
	}
}

// toProblem maps an error to a problem; domain errors are translated in
// one place, mapDomainError (errors.go).
func (s *Server) toProblem(err error) *problem.Details {
	var p *problem.Details
	if errors.As(err, &p) {
		return p
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		switch he.Code {
		case http.StatusNotFound:
			return notFound(problem.CodeRouteNotFound, "no such route")
		case http.StatusMethodNotAllowed:
			return newProblem(http.StatusMethodNotAllowed, problem.CodeMethodNotAllowed, "method not allowed on this route")
		case http.StatusRequestEntityTooLarge:
			return newProblem(he.Code, problem.CodeRequestTooLarge, "request body too large")
		case http.StatusUnsupportedMediaType:
			return newProblem(he.Code, problem.CodeUnsupportedMediaType, "%v", he.Message)
		}
		if he.Code < 500 {
			return newProblem(he.Code, problem.CodeBadRequest, "%v", he.Message)
		}
	}
	if p := mapDomainError(err); p != nil {
		return p
	}
	return newProblem(http.StatusInternalServerError, problem.CodeInternal, "internal error")
}
