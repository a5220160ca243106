// Package tlsreload serves a TLS certificate (and an optional client CA
// for mutual TLS) from PEM files, and reloads them when the files change,
// without a restart: certificate rotation by cert-manager, a Kubernetes
// Secret update or a renewal script just works.
package tlsreload

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config names the files.
type Config struct {
	CertFile string // PEM certificate chain
	KeyFile  string // PEM private key
	// ClientCAFile, when set, asks clients for a certificate signed by
	// one of its CAs (optional: clients without one may still send a key)
	// and verifies it.
	ClientCAFile string
	// Interval is how often the files are checked for changes.
	Interval time.Duration
}

// DefaultConfig returns the defaults; the files must be set.
func DefaultConfig() Config { return Config{Interval: 10 * time.Second} }

// Enabled reports whether TLS is configured.
func (c Config) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

// Validate checks the config.
func (c Config) Validate() error {
	switch {
	case (c.CertFile == "") != (c.KeyFile == ""):
		return errors.New("tls: a certificate needs its key and a key its certificate (--tls-cert and --tls-key)")
	case c.ClientCAFile != "" && c.CertFile == "":
		return errors.New("tls: a client CA (--tls-client-ca) needs --tls-cert and --tls-key")
	case c.Interval <= 0:
		return errors.New("tls: reload interval must be positive")
	}
	return nil
}

// Reloader holds the current certificate and client CAs.
type Reloader struct {
	cfg    Config
	logger *slog.Logger

	mu       sync.RWMutex
	cert     *tls.Certificate
	clientCA *x509.CertPool
	stamps   map[string]stamp

	reloads  *prometheus.CounterVec
	notAfter prometheus.Gauge
}

// stamp is what tells a file changed.
type stamp struct {
	mod  time.Time
	size int64
}

// New loads the files; Run watches them.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Reloader, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, errors.New("tls: no certificate configured")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{cfg: cfg, logger: logger, stamps: map[string]stamp{},
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "silt_tls_reloads_total", Help: "TLS certificate reloads after their files changed, by result.",
		}, []string{"result"}),
		notAfter: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "silt_tls_certificate_not_after_seconds", Help: "Expiry of the served TLS certificate, as a Unix time.",
		}),
	}
	if err := r.load(); err != nil {
		return nil, err
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{r.reloads, r.notAfter} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("tls metrics: %w", err)
			}
		}
	}
	return r, nil
}

func (r *Reloader) files() []string {
	f := []string{r.cfg.CertFile, r.cfg.KeyFile}
	if r.cfg.ClientCAFile != "" {
		f = append(f, r.cfg.ClientCAFile)
	}
	return f
}

// load reads every file; on error nothing changes.
func (r *Reloader) load() error {
	stamps := map[string]stamp{}
	for _, f := range r.files() {
		st, err := os.Stat(f)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		stamps[f] = stamp{mod: st.ModTime(), size: st.Size()}
	}
	cert, err := tls.LoadX509KeyPair(r.cfg.CertFile, r.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("tls: load certificate %s and key %s: %w", r.cfg.CertFile, r.cfg.KeyFile, err)
	}
	var pool *x509.CertPool
	if r.cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(r.cfg.ClientCAFile)
		if err != nil {
			return fmt.Errorf("tls: client CA: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("tls: client CA file %s holds no PEM certificate", r.cfg.ClientCAFile)
		}
	}
	if cert.Leaf != nil {
		r.notAfter.Set(float64(cert.Leaf.NotAfter.Unix()))
	}
	r.mu.Lock()
	r.cert, r.clientCA, r.stamps = &cert, pool, stamps
	r.mu.Unlock()
	return nil
}

// changed reports whether a file's stamp moved since the last load.
func (r *Reloader) changed() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, f := range r.files() {
		st, err := os.Stat(f)
		if err != nil {
			return true // gone or unreadable: try, and report
		}
		if old := r.stamps[f]; !old.mod.Equal(st.ModTime()) || old.size != st.Size() {
			return true
		}
	}
	return false
}

// Check reloads the files if they changed. A failed reload keeps the
// last good certificate.
func (r *Reloader) Check() error {
	if !r.changed() {
		return nil
	}
	if err := r.load(); err != nil {
		r.reloads.WithLabelValues("error").Inc()
		return err
	}
	r.reloads.WithLabelValues("ok").Inc()
	r.logger.Info("tls certificate reloaded", "cert", r.cfg.CertFile)
	return nil
}

// Run checks the files every interval until ctx ends.
func (r *Reloader) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.Check(); err != nil {
			r.logger.Warn("tls certificate not reloaded; serving the previous one", "err", err)
		}
	}
}

// ServerConfig is the server's TLS configuration: TLS 1.2 or newer,
// HTTP/2 offered, the current certificate and client CAs on every
// handshake.
func (r *Reloader) ServerConfig() *tls.Config {
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	base.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		r.mu.RLock()
		defer r.mu.RUnlock()
		return r.cert, nil
	}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		r.mu.RLock()
		cert, pool := r.cert, r.clientCA
		r.mu.RUnlock()
		c := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: base.NextProtos, Certificates: []tls.Certificate{*cert}}
		if pool != nil {
			c.ClientCAs, c.ClientAuth = pool, tls.VerifyClientCertIfGiven
		}
		return c, nil
	}
	return base
}
