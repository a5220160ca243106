// Package console serves Silt's web console: static assets embedded in the
// binary (no CDN, works offline and through a load balancer) that speak
// only the public /v1 API with the key the user gives them.
//
// The handler serves the files of assets/ under a prefix (/ui/ in the
// agent), gzipped when the client accepts it, with strong ETags, and
// /ui/config.json: the answering agent's auth mode and version, so the
// page knows whether to ask for a key before it calls the API. Every
// answer carries a strict Content-Security-Policy: the page runs only its
// own scripts and talks only to its own origin.
package console

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
)

//go:embed assets
var assets embed.FS

// Config is what the page is told about the agent serving it.
type Config struct {
	// Prefix is where the console is mounted, with slashes on both sides.
	Prefix string
	// Auth is the agent's mode: "required" (the page asks for a key) or
	// "none".
	Auth string
	// Version is the agent's version, shown in the page's footer.
	Version string
}

// DefaultConfig mounts the console at /ui/ with keys required.
func DefaultConfig() Config {
	return Config{Prefix: "/ui/", Auth: "required", Version: "dev"}
}

// Validate checks the config.
func (c Config) Validate() error {
	if !strings.HasPrefix(c.Prefix, "/") || !strings.HasSuffix(c.Prefix, "/") {
		return fmt.Errorf("console: prefix %q must begin and end with /", c.Prefix)
	}
	if c.Auth != "required" && c.Auth != "none" {
		return fmt.Errorf("console: auth %q: want required or none", c.Auth)
	}
	return nil
}

// file is one asset, ready to serve.
type file struct {
	ctype string
	etag  string
	plain []byte
	gz    []byte // nil when gzip does not make it smaller
}

// Handler serves the console.
type Handler struct {
	prefix string
	files  map[string]*file
}

// contentSecurityPolicy lets the page load only its own files and call
// only its own origin; it cannot be framed.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// New builds the handler: every asset is read, hashed and compressed once.
func New(cfg Config) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &Handler{prefix: cfg.Prefix, files: map[string]*file{}}
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, fmt.Errorf("console assets: %w", err)
	}
	err = fs.WalkDir(sub, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, name)
		if err != nil {
			return err
		}
		h.files[name] = newFile(name, b)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("console assets: %w", err)
	}
	conf, err := json.Marshal(map[string]string{"auth": cfg.Auth, "version": cfg.Version})
	if err != nil {
		return nil, fmt.Errorf("console config: %w", err)
	}
	h.files["config.json"] = newFile("config.json", conf)
	return h, nil
}

func newFile(name string, b []byte) *file {
	ctype := mime.TypeByExtension(path.Ext(name))
	switch path.Ext(name) { // not left to the host's mime tables
	case ".js":
		ctype = "text/javascript; charset=utf-8"
	case ".css":
		ctype = "text/css; charset=utf-8"
	case ".html":
		ctype = "text/html; charset=utf-8"
	case ".svg":
		ctype = "image/svg+xml"
	case ".json":
		ctype = "application/json"
	}
	sum := sha256.Sum256(b)
	f := &file{ctype: ctype, etag: `"` + hex.EncodeToString(sum[:12]) + `"`, plain: b}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write(b)
	_ = zw.Close()
	if buf.Len() < len(b) {
		f.gz = buf.Bytes()
	}
	return f
}

// Sizes reports the assets' total bytes as served plain and gzipped.
func (h *Handler) Sizes() (plain, gzipped int) {
	for _, f := range h.files {
		plain += len(f.plain)
		if f.gz != nil {
			gzipped += len(f.gz)
		} else {
			gzipped += len(f.plain)
		}
	}
	return plain, gzipped
}

// ServeHTTP serves an asset; the prefix itself is the page.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", contentSecurityPolicy)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	name, ok := strings.CutPrefix(r.URL.Path, h.prefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if name == "" {
		name = "index.html"
	}
	f, ok := h.files[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	hdr.Set("Content-Type", f.ctype)
	hdr.Set("ETag", f.etag)
	hdr.Set("Vary", "Accept-Encoding")
	// Revalidate every time: an upgraded agent serves new assets at once,
	// and an unchanged asset costs a 304.
	hdr.Set("Cache-Control", "no-cache")
	if r.Header.Get("If-None-Match") == f.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := f.plain
	if f.gz != nil && acceptsGzip(r.Header.Get("Accept-Encoding")) {
		hdr.Set("Content-Encoding", "gzip")
		body = f.gz
	}
	hdr.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

func acceptsGzip(v string) bool {
	for _, part := range strings.Split(v, ",") {
		enc, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.TrimSpace(enc) == "gzip" && strings.ReplaceAll(strings.TrimSpace(params), " ", "") != "q=0" {
			return true
		}
	}
	return false
}
