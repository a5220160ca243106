package toxiproxy

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
	"time"
)

// Errors of the API, matched with errors.Is.
var (
	ErrNotFound = errors.New("toxiproxy: not found")      // no such proxy or toxic (404)
	ErrExists   = errors.New("toxiproxy: already exists") // a proxy or toxic of that name (409)
)

// Stream directions of a toxic.
const (
	Upstream   = "upstream"   // client → upstream server
	Downstream = "downstream" // upstream server → client
)

// Proxy is a proxy as the server describes it.
type Proxy struct {
	Name     string `json:"name"`
	Listen   string `json:"listen"` // the address it listens on, port resolved
	Upstream string `json:"upstream"`
	Enabled  bool   `json:"enabled"`
}

// Toxic is a fault applied to one direction of a proxy's connections.
type Toxic struct {
	Name       string         `json:"name,omitempty"` // default: <type>_<stream>
	Type       string         `json:"type"`           // timeout, latency, bandwidth, reset_peer, ...
	Stream     string         `json:"stream"`         // Upstream or Downstream
	Toxicity   float32        `json:"toxicity,omitempty"`
	Attributes map[string]any `json:"attributes,omitempty"`
}

// Freeze is the toxic that stops the bytes flowing in stream while the
// connections stay open (the timeout toxic with timeout 0). Its name is
// "freeze_<stream>".
func Freeze(stream string) Toxic {
	return Toxic{Name: "freeze_" + stream, Type: "timeout", Stream: stream, Toxicity: 1, Attributes: map[string]any{"timeout": 0}}
}

// Client speaks a server's HTTP API.
type Client struct {
	base string
	http *http.Client
}

// NewClient returns a client of the server at baseURL (http://host:port).
func NewClient(baseURL string) *Client {
	return &Client{base: strings.TrimSuffix(baseURL, "/"), http: &http.Client{Timeout: 30 * time.Second}}
}

// URL is the server's base URL.
func (c *Client) URL() string { return c.base }

// CreateProxy creates an enabled proxy from listen to upstream (host:port)
// and returns it with the address it listens on; an empty listen picks a
// free port on 127.0.0.1.
func (c *Client) CreateProxy(ctx context.Context, name, listen, upstream string) (Proxy, error) {
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	var p Proxy
	err := c.do(ctx, http.MethodPost, "/proxies", Proxy{Name: name, Listen: listen, Upstream: upstream, Enabled: true}, &p)
	return p, err
}

// Proxy returns a proxy.
func (c *Client) Proxy(ctx context.Context, name string) (Proxy, error) {
	var p Proxy
	err := c.do(ctx, http.MethodGet, "/proxies/"+url.PathEscape(name), nil, &p)
	return p, err
}

// SetEnabled enables or disables a proxy. A disabled proxy closes its
// listener and every connection through it (clients see a reset, new
// connections are refused); enabled again, it listens on the same address.
func (c *Client) SetEnabled(ctx context.Context, name string, enabled bool) (Proxy, error) {
	var p Proxy
	err := c.do(ctx, http.MethodPatch, "/proxies/"+url.PathEscape(name), map[string]bool{"enabled": enabled}, &p)
	return p, err
}

// DeleteProxy removes a proxy and closes its connections.
func (c *Client) DeleteProxy(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/proxies/"+url.PathEscape(name), nil, nil)
}

// AddToxic applies a toxic to proxy and returns it as the server stored it
// (with its default name filled in). A zero Toxicity means 1 (always).
func (c *Client) AddToxic(ctx context.Context, proxy string, t Toxic) (Toxic, error) {
	var out Toxic
	err := c.do(ctx, http.MethodPost, "/proxies/"+url.PathEscape(proxy)+"/toxics", t, &out)
	return out, err
}

// RemoveToxic removes the toxic named toxic from proxy.
func (c *Client) RemoveToxic(ctx context.Context, proxy, toxic string) error {
	return c.do(ctx, http.MethodDelete, "/proxies/"+url.PathEscape(proxy)+"/toxics/"+url.PathEscape(toxic), nil, nil)
}

// do sends body as JSON and decodes a 2xx answer into out.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("toxiproxy: encode %s %s: %w", method, path, err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return fmt.Errorf("toxiproxy: %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("toxiproxy: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("toxiproxy: %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var apiErr struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &apiErr) == nil && apiErr.Error != "" {
			msg = apiErr.Error
		}
		err := fmt.Errorf("toxiproxy: %s %s: %d %s", method, path, resp.StatusCode, msg)
		switch resp.StatusCode {
		case http.StatusNotFound:
			err = fmt.Errorf("%w: %w", ErrNotFound, err)
		case http.StatusConflict:
			err = fmt.Errorf("%w: %w", ErrExists, err)
		}
		return err
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("toxiproxy: %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}
