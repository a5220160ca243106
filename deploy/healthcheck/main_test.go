package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.Error(w, "draining", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	var stderr strings.Builder
	if code := run([]string{srv.URL + "/readyz"}, &stderr); code != 0 {
		t.Fatalf("ready endpoint: exit %d: %s", code, stderr.String())
	}
	stderr.Reset()
	if code := run([]string{srv.URL + "/other"}, &stderr); code != 1 || !strings.Contains(stderr.String(), "503") {
		t.Fatalf("503 endpoint: exit %d: %s", code, stderr.String())
	}
	srv.Close()
	if code := run([]string{"-timeout", "1s", srv.URL + "/readyz"}, io.Discard); code != 1 {
		t.Fatalf("closed server: exit %d", code)
	}
	if code := run([]string{"a", "b"}, io.Discard); code != 2 {
		t.Fatalf("two URLs: exit %d", code)
	}
}

// An agent serving TLS is probed with -insecure: its certificate names
// another host than loopback.
func TestRunInsecureTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	if code := run([]string{srv.URL + "/readyz"}, io.Discard); code != 1 {
		t.Fatalf("an unverifiable certificate without -insecure: exit %d", code)
	}
	var stderr strings.Builder
	if code := run([]string{"-insecure", srv.URL + "/readyz"}, &stderr); code != 0 {
		t.Fatalf("-insecure: exit %d: %s", code, stderr.String())
	}
}
