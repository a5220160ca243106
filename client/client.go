package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Client talks to one agent (or a load balancer in front of agents). It is
// safe for concurrent use.
type Client struct {
	base  *url.URL
	http  *http.Client
	retry RetryPolicy
	token string // API key, sent as a bearer token

	freshOnce sync.Once
	fresh     *http.Client // http without connection reuse (freshHTTP)
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the client send its requests through hc. Streams
// last long: a hc.Timeout ends them, after which Stream reconnects.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.http = hc }
}

// WithRetry retries retriable errors under p. Zero bounds of p take the
// values of DefaultRetryPolicy, except MaxAttempts: below 2 it disables
// retries.
func WithRetry(p RetryPolicy) Option {
	return func(c *Client) { c.retry = p }
}

// New returns a client of the agent at baseURL, such as
// http://127.0.0.1:8080.
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("client: base URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q must be http:// or https:// with a host", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("client: base URL %q must not have a query or fragment", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	c := &Client{base: u, http: &http.Client{}}
	for _, o := range opts {
		o(c)
	}
	if c.http == nil {
		return nil, errors.New("client: WithHTTPClient(nil)")
	}
	return c, nil
}

// request is one API call.
type request struct {
	method string
	path   []string // path segments after the base, escaped when joined
	query  url.Values
	body   []byte
	ctype  string
	accept string
	header http.Header
	// safe marks requests that may be repeated after a transport failure.
	safe bool
	// fresh sends the request on a connection of its own: net/http
	// resends a GET by itself when a reused connection closes before the
	// answer, which a request with effects on the agent must not allow.
	fresh bool
	// retry overrides the client's policy when set.
	retry *RetryPolicy
}

// response is a complete 2xx response.
type response struct {
	header http.Header
	body   []byte
}

func (c *Client) url(path []string, q url.Values) string {
	u := *c.base
	var p, raw strings.Builder
	p.WriteString(u.Path)
	raw.WriteString(u.EscapedPath())
	for _, s := range path {
		p.WriteString("/" + s)
		raw.WriteString("/" + url.PathEscape(s))
	}
	u.Path, u.RawPath = p.String(), raw.String()
	if len(q) > 0 {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// call sends req, retrying under the policy, and returns the complete 2xx
// response or an error: *Error for error responses, wrapped.
func (c *Client) call(ctx context.Context, req request) (*response, error) {
	policy := c.retry
	if req.retry != nil {
		policy = *req.retry
	}
	r := newRetrier(policy)
	for {
		resp, err := c.try(ctx, req, policy.AttemptTimeout)
		if err == nil {
			return resp, nil
		}
		if !r.wait(ctx, err, req.safe || req.method == http.MethodGet) {
			return nil, err
		}
	}
}

// try makes one attempt and reads the whole body.
func (c *Client) try(ctx context.Context, req request, timeout time.Duration) (*response, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	resp, err := c.open(ctx, req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	defer context.AfterFunc(ctx, func() { resp.Body.Close() })()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, &transportError{fmt.Errorf("read response: %w", err)}
	}
	return &response{header: resp.Header, body: b}, nil
}

// open sends req once and returns the response with its body unread when
// the status is 2xx; the caller closes it.
func (c *Client) open(ctx context.Context, req request) (*http.Response, error) {
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, c.url(req.path, req.query), body)
	if err != nil {
		return nil, err
	}
	for k, v := range req.header {
		hr.Header[k] = v
	}
	if req.ctype != "" {
		hr.Header.Set("Content-Type", req.ctype)
	}
	if req.accept != "" {
		hr.Header.Set("Accept", req.accept)
	}
	if c.token != "" {
		hr.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := c.http
	if req.fresh {
		hc = c.freshHTTP()
	}
	resp, err := hc.Do(hr)
	if err != nil {
		return nil, &transportError{err}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return nil, errorFromResponse(resp.StatusCode, resp.Header, b)
	}
	return resp, nil
}

// freshHTTP returns the client's HTTP client with a transport that never
// reuses a connection, so that net/http never resends on its own (it does
// so only on reused connections). A transport of the caller's other than
// *http.Transport is used as it is.
func (c *Client) freshHTTP() *http.Client {
	c.freshOnce.Do(func() {
		hc := *c.http
		var tr *http.Transport
		switch t := hc.Transport.(type) {
		case nil:
			if d, ok := http.DefaultTransport.(*http.Transport); ok {
				tr = d.Clone()
			}
		case *http.Transport:
			tr = t.Clone()
		}
		if tr != nil {
			tr.DisableKeepAlives = true
			hc.Transport = tr
		}
		c.fresh = &hc
	})
	return c.fresh
}

// callJSON sends in as JSON (when non-nil) and decodes a 2xx body into out
// (when non-nil).
func (c *Client) callJSON(ctx context.Context, req request, in, out any) error {
	if in != nil {
		b, err := marshalJSON(in)
		if err != nil {
			return err
		}
		req.body, req.ctype = b, mediaJSON
	}
	req.accept = mediaJSON
	resp, err := c.call(ctx, req)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(resp.body, out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}

const (
	mediaJSON   = "application/json"
	mediaNDJSON = "application/x-ndjson"
	mediaSSE    = "text/event-stream"
)
