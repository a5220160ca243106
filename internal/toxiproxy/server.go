package toxiproxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Config configures Start.
type Config struct {
	// Bin is the server binary (the module's cmd/server; make builds it).
	Bin string
	// Log receives the server's log lines; nil discards them.
	Log io.Writer
	// StartTimeout bounds the wait for the server to answer.
	StartTimeout time.Duration
	// StopTimeout bounds the wait after SIGTERM before SIGKILL.
	StopTimeout time.Duration
}

// DefaultConfig returns a config with the binary to fill in.
func DefaultConfig() Config {
	return Config{StartTimeout: 30 * time.Second, StopTimeout: 10 * time.Second}
}

// Validate checks the config.
func (c Config) Validate() error {
	if c.Bin == "" {
		return errors.New("toxiproxy: server binary path is required (make builds it)")
	}
	if c.StartTimeout <= 0 || c.StopTimeout <= 0 {
		return errors.New("toxiproxy: start and stop timeouts must be positive")
	}
	return nil
}

// Server is a running toxiproxy server, a child process.
type Server struct {
	client  *Client
	cfg     Config
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// errNotOurs means something else answers on the port we picked.
var errNotOurs = errors.New("toxiproxy: another server answers on the chosen port")

// Start runs the server on a free 127.0.0.1 port and waits until it answers.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s, err := start(ctx, cfg, port)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if !errors.Is(err, errNotOurs) || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// start launches the server with a disabled marker proxy of a random name
// in its startup config, so that readiness is proved by that server and not
// by another one that took the port first.
func start(ctx context.Context, cfg Config, port int) (*Server, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	marker := "startup-" + hex.EncodeToString(b[:])
	dir, err := os.MkdirTemp("", "toxiproxy-")
	if err != nil {
		return nil, fmt.Errorf("toxiproxy: config dir: %w", err)
	}
	defer os.RemoveAll(dir)
	config, err := json.Marshal([]Proxy{{Name: marker, Listen: "127.0.0.1:0", Upstream: "127.0.0.1:9", Enabled: false}})
	if err != nil {
		return nil, fmt.Errorf("toxiproxy: config: %w", err)
	}
	path := filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, config, 0o644); err != nil {
		return nil, fmt.Errorf("toxiproxy: config: %w", err)
	}
	cmd := exec.Command(cfg.Bin, "-host", "127.0.0.1", "-port", strconv.Itoa(port), "-config", path)
	cmd.Stdout, cmd.Stderr = cfg.Log, cfg.Log
	// Own process group, so a Ctrl-C at the terminal reaches only us;
	// Pdeathsig ends it if we die.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("toxiproxy: start %s: %w", cfg.Bin, err)
	}
	s := &Server{
		client: NewClient("http://127.0.0.1:" + strconv.Itoa(port)),
		cfg:    cfg,
		cmd:    cmd,
		exited: make(chan struct{}),
	}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(ctx, marker); err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("toxiproxy: server on port %d: %w", port, err)
	}
	if err := s.client.DeleteProxy(ctx, marker); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) waitReady(ctx context.Context, marker string) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := s.client.Proxy(ctx, marker)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrNotFound):
			return errNotOurs
		}
		var netErr *net.OpError
		if !errors.As(err, &netErr) && ctx.Err() == nil {
			// An HTTP answer that is not the toxiproxy API.
			return fmt.Errorf("%w: %w", errNotOurs, err)
		}
		select {
		case <-s.exited:
			return fmt.Errorf("exited before it answered: %v", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("not answering: %w (last: %w)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// Client returns a client of the server's API.
func (s *Server) Client() *Client { return s.client }

// URL is the server's API base URL.
func (s *Server) URL() string { return s.client.URL() }

// PID is the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Stop ends the server (SIGTERM, then SIGKILL after StopTimeout) and waits
// for it to exit. Connections through its proxies are cut.
func (s *Server) Stop() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("toxiproxy: stop: %w", err)
	}
	select {
	case <-s.exited:
		return nil
	case <-time.After(s.cfg.StopTimeout):
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	return fmt.Errorf("toxiproxy: server did not stop within %s of SIGTERM; killed", s.cfg.StopTimeout)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("toxiproxy: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
