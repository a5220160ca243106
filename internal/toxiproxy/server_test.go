package toxiproxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"silt/localstack"
)

// When the chosen port is taken by another HTTP server (another test's
// toxiproxy, say), start notices that the answers are not from the server
// it launched, so Start can retry on another port.
func TestStartRefusesAServerItDidNotLaunch(t *testing.T) {
	t.Parallel()
	bin := os.Getenv(localstack.EnvToxiproxyBin)
	if bin == "" {
		if testing.Short() {
			t.Skipf("toxiproxy not available under -short (%s unset)", localstack.EnvToxiproxyBin)
		}
		t.Fatalf("%s is unset. Run the tests with `make test`, which builds Toxiproxy.", localstack.EnvToxiproxyBin)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	impostor := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":"proxy not found","status":404}`))
	})}
	go func() { _ = impostor.Serve(l) }()
	defer impostor.Close()

	cfg := DefaultConfig()
	cfg.Bin = bin
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := start(ctx, cfg, l.Addr().(*net.TCPAddr).Port)
	if err == nil {
		_ = s.Stop()
		t.Fatal("start accepted a server it did not launch")
	}
	if !errors.Is(err, errNotOurs) {
		t.Fatalf("start: %v, want errNotOurs", err)
	}
}
