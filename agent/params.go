package agent

import (
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"silt/problem"
)

// Strict request parsing: where leniency could make one request mean two
// things, the agent refuses it instead. See docs/security.md.

// strictRequest refuses requests whose query or body coding the handlers
// would otherwise read leniently: a malformed query string (Go would drop
// the pairs it cannot parse), a parameter given twice (which one wins?),
// or a body in a content coding the agent does not decode.
func (s *Server) strictRequest(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.URL.RawQuery != "" {
			q, err := url.ParseQuery(r.URL.RawQuery)
			if err != nil {
				return badRequest(problem.CodeInvalidParameter, "the query string is malformed: %v", err)
			}
			for k, vs := range q {
				if len(vs) > 1 {
					return badRequest(problem.CodeInvalidParameter, "the query parameter %q is given %d times; give it once", k, len(vs))
				}
			}
		}
		if ce := r.Header.Values("Content-Encoding"); len(ce) > 0 && !(len(ce) == 1 && strings.EqualFold(strings.TrimSpace(ce[0]), "identity")) {
			return newProblem(http.StatusUnsupportedMediaType, problem.CodeUnsupportedMediaType,
				"content coding %q is not supported; send the body without a Content-Encoding", strings.Join(ce, ", "))
		}
		return next(c)
	}
}

// pathParam returns path parameter name, percent-decoded. Echo routes on
// the escaped path when a request escapes more than it must (%74 for t,
// %2F), and its parameters are then still escaped; otherwise they are
// decoded already. Decoding here makes both the same.
func pathParam(c echo.Context, name string) (string, error) {
	v := c.Param(name)
	if c.Request().URL.RawPath == "" || !strings.Contains(v, "%") {
		return v, nil
	}
	d, err := url.PathUnescape(v)
	if err != nil {
		return "", badRequest(problem.CodeInvalidParameter, "path parameter %s %q is not validly percent-encoded", name, v)
	}
	return d, nil
}

// parseCanonicalInt parses a decimal integer written the one way it can
// be: digits, no sign but a minus on a non-zero value, no leading zeros
// (so not +1, 01, -0 or 1_000).
func parseCanonicalInt(s string, bits int) (int64, error) {
	digits := strings.TrimPrefix(s, "-")
	switch {
	case digits == "":
		return 0, fmt.Errorf("%q is not an integer", s)
	case len(digits) > 1 && digits[0] == '0', digits == "0" && len(s) > 1:
		return 0, fmt.Errorf("%q has a leading zero or sign", s)
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, fmt.Errorf("%q is not a decimal integer", s)
		}
	}
	return strconv.ParseInt(s, 10, bits)
}

// partitionParam parses a partition path segment: a canonical integer
// from 0 to 2^31-1.
func partitionParam(c echo.Context) (int32, error) {
	raw, err := pathParam(c, "partition")
	if err != nil {
		return 0, err
	}
	n, err := parseCanonicalInt(raw, 32)
	if err != nil || n < 0 {
		return 0, badRequest(problem.CodeInvalidParameter, "partition %q must be an integer from 0 to 2147483647, written without sign or leading zeros", raw)
	}
	return int32(n), nil
}

// bodyMediaType returns the media type of a request body. A body needs
// one (415 without); JSON types take no charset but UTF-8 (RFC 8259).
func bodyMediaType(r *http.Request) (string, error) {
	raw := r.Header.Get(echo.HeaderContentType)
	if raw == "" {
		if r.ContentLength == 0 {
			return "", nil // no body
		}
		return "", newProblem(http.StatusUnsupportedMediaType, problem.CodeUnsupportedMediaType,
			"the request has a body but no Content-Type; send one")
	}
	mt, params, err := mime.ParseMediaType(raw)
	if err != nil {
		return "", newProblem(http.StatusUnsupportedMediaType, problem.CodeUnsupportedMediaType, "Content-Type %q is malformed", raw)
	}
	if cs, ok := params["charset"]; ok && (mt == MediaJSON || mt == MediaNDJSON) && !strings.EqualFold(cs, "utf-8") {
		return "", newProblem(http.StatusUnsupportedMediaType, problem.CodeUnsupportedMediaType, "charset %q is not supported; JSON is UTF-8", cs)
	}
	return mt, nil
}
