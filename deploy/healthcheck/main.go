// Command silt-healthcheck probes an HTTP endpoint and exits 0 when it
// answers 2xx, 1 otherwise. The agent's image is distroless (no shell, no
// curl), so Docker and Compose health checks run this instead:
//
//	silt-healthcheck [-timeout 3s] [-insecure] [URL]    (default http://127.0.0.1:8080/readyz)
//
// -insecure skips verifying an https URL's certificate: an agent serving
// TLS (--tls-cert) is probed on loopback, which its certificate does not
// name.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("silt-healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 3*time.Second, "bound on the whole probe")
	insecure := fs.Bool("insecure", false, "do not verify an https URL's certificate (the agent's own, probed on loopback)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	url := "http://127.0.0.1:8080/readyz"
	switch fs.NArg() {
	case 0:
	case 1:
		url = fs.Arg(0)
	default:
		fmt.Fprintln(stderr, "usage: silt-healthcheck [-timeout 3s] [URL]")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := probe(ctx, url, *insecure); err != nil {
		fmt.Fprintf(stderr, "silt-healthcheck: %v\n", err)
		return 1
	}
	return 0
}

// probe GETs url and succeeds on a 2xx answer.
func probe(ctx context.Context, url string, insecure bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	hc := http.DefaultClient
	if insecure {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // a loopback probe of the agent's own listener
		defer tr.CloseIdleConnections()
		hc = &http.Client{Transport: tr}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s %s", url, resp.Status, body)
	}
	return nil
}
