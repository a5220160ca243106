package console_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"silt/console"
)

func newHandler(t *testing.T) *console.Handler {
	t.Helper()
	cfg := console.DefaultConfig()
	cfg.Auth, cfg.Version = "none", "v9.9.9"
	h, err := console.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func get(t *testing.T, h http.Handler, path string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// The page, its scripts and its config are served with a strict policy;
// anything else is 404.
func TestServesAssets(t *testing.T) {
	h := newHandler(t)
	for path, ctype := range map[string]string{
		"/ui/":            "text/html; charset=utf-8",
		"/ui/app.js":      "text/javascript; charset=utf-8",
		"/ui/lib.js":      "text/javascript; charset=utf-8",
		"/ui/app.css":     "text/css; charset=utf-8",
		"/ui/favicon.svg": "image/svg+xml",
		"/ui/config.json": "application/json",
	} {
		rec := get(t, h, path)
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != ctype {
			t.Errorf("%s: %d %q", path, rec.Code, rec.Header().Get("Content-Type"))
		}
		if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", path, csp)
		}
		if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", path)
		}
	}
	for _, path := range []string{"/ui/nope.js", "/ui/assets/app.js", "/ui/../console.go", "/other/app.js"} {
		if rec := get(t, h, path); rec.Code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, rec.Code)
		}
	}
	var conf map[string]string
	if err := json.Unmarshal(get(t, h, "/ui/config.json").Body.Bytes(), &conf); err != nil || conf["auth"] != "none" || conf["version"] != "v9.9.9" {
		t.Fatalf("config.json: %v %v", conf, err)
	}
}

// Assets are gzipped for clients that accept it and revalidated by ETag.
func TestGzipAndETag(t *testing.T) {
	h := newHandler(t)
	plain := get(t, h, "/ui/topics.js")
	gz := get(t, h, "/ui/topics.js", "Accept-Encoding", "br, gzip")
	if gz.Header().Get("Content-Encoding") != "gzip" || gz.Body.Len() >= plain.Body.Len() {
		t.Fatalf("gzip: %q, %d bytes against %d", gz.Header().Get("Content-Encoding"), gz.Body.Len(), plain.Body.Len())
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz.Body.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	un, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(un, plain.Body.Bytes()) {
		t.Fatalf("the gzipped body is not the asset: %v", err)
	}
	if refused := get(t, h, "/ui/topics.js", "Accept-Encoding", "gzip;q=0"); refused.Header().Get("Content-Encoding") != "" {
		t.Fatal("gzip sent to a client that refused it")
	}
	etag := plain.Header().Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if rec := get(t, h, "/ui/topics.js", "If-None-Match", etag); rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
		t.Fatalf("If-None-Match: %d", rec.Code)
	}
}

// The shipped assets stay small: the goal is 300 KiB gzipped.
func TestAssetsAreSmall(t *testing.T) {
	plain, gzipped := newHandler(t).Sizes()
	t.Logf("console assets: %d bytes, %d gzipped", plain, gzipped)
	if gzipped > 300<<10 {
		t.Fatalf("console assets are %d bytes gzipped, over 300 KiB", gzipped)
	}
}

func TestValidate(t *testing.T) {
	for _, cfg := range []console.Config{{Prefix: "ui/", Auth: "none"}, {Prefix: "/ui", Auth: "none"}, {Prefix: "/ui/", Auth: "maybe"}} {
		if _, err := console.New(cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}
