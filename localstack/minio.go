package localstack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"silt/internal/pgcluster"
)

// MinIO credentials used by the local topology.
const (
	MinIOAccessKey = "siltminio"
	MinIOSecretKey = "siltminio-secret"
)

// MinIO is a running MinIO server.
type MinIO struct {
	Endpoint string // http://127.0.0.1:port
	Port     int
	pid      int
	proc     *os.Process
}

// MinIOConfig configures StartMinIO.
type MinIOConfig struct {
	Bin      string // path to the minio binary
	DataDir  string
	Port     int  // 0 picks a free port
	Detached bool // survive this process (own session); otherwise dies with it
	Logger   *slog.Logger
}

// StartMinIO starts MinIO and waits until it answers its health check.
func StartMinIO(ctx context.Context, cfg MinIOConfig) (*MinIO, error) {
	if cfg.Bin == "" {
		return nil, errors.New("localstack: minio binary path is required (make installs it)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("localstack: minio data dir: %w", err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port := cfg.Port
		if port == 0 {
			var err error
			if port, err = pgcluster.FreePort(); err != nil {
				return nil, err
			}
		}
		m, err := startMinIO(ctx, cfg, port)
		if err == nil {
			return m, nil
		}
		lastErr = err
		if cfg.Port != 0 || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func startMinIO(ctx context.Context, cfg MinIOConfig, port int) (*MinIO, error) {
	consolePort, err := pgcluster.FreePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(filepath.Dir(cfg.DataDir), "minio.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("localstack: minio log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(cfg.Bin, "server", "--quiet",
		"--address", "127.0.0.1:"+strconv.Itoa(port),
		"--console-address", "127.0.0.1:"+strconv.Itoa(consolePort),
		cfg.DataDir)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+MinIOAccessKey,
		"MINIO_ROOT_PASSWORD="+MinIOSecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_CI_CD=1",
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if cfg.Detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		// Own process group: a Ctrl-C at the terminal reaches only us, and we
		// stop children in order; Pdeathsig ends them if we die.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("localstack: start minio: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	m := &MinIO{Endpoint: "http://127.0.0.1:" + strconv.Itoa(port), Port: port, pid: cmd.Process.Pid, proc: cmd.Process}
	if err := waitHTTP(ctx, m.Endpoint+"/minio/health/ready", 60*time.Second, exited); err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("localstack: minio on port %d (log %s): %w", port, logPath, err)
	}
	cfg.Logger.Info("minio started", "endpoint", m.Endpoint)
	return m, nil
}

// PID is the server's process id.
func (m *MinIO) PID() int { return m.pid }

// Kill ends the server with SIGKILL (a crash) and waits for it to exit.
// Its data directory stays; StartMinIO on the same directory and port
// brings it back.
func (m *MinIO) Kill() error {
	if err := m.proc.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("localstack: kill minio: %w", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for alive(m.pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("localstack: minio (pid %d) still running 20s after SIGKILL", m.pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// Stop terminates the server and waits for it to exit.
func (m *MinIO) Stop() error { return stopPID(m.pid, 20*time.Second) }

// stopPID sends SIGTERM, then SIGKILL after grace, and waits for exit.
func stopPID(pid int, grace time.Duration) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return nil
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return nil // already gone
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = p.Signal(syscall.SIGKILL)
	for i := 0; i < 100 && alive(pid); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	// A zombie child counts as gone.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	for i := 0; i+2 < len(b); i++ {
		if b[i] == ')' {
			return b[i+2] != 'Z'
		}
	}
	return true
}

// waitHTTP polls url until it answers 200, the deadline passes, or exited fires.
func waitHTTP(ctx context.Context, url string, limit time.Duration, exited <-chan struct{}) error {
	return waitHTTPS(ctx, nil, url, limit, exited)
}

// waitHTTPS is waitHTTP over TLS with cfg (when not nil).
func waitHTTPS(ctx context.Context, cfg *tls.Config, url string, limit time.Duration, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	if cfg != nil {
		tr := &http.Transport{TLSClientConfig: cfg.Clone()}
		defer tr.CloseIdleConnections()
		client.Transport = tr
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("process exited before it was ready")
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w", ctx.Err())
		case <-tick.C:
		}
	}
}
