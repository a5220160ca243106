package localstack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"silt/auth"
	"silt/internal/pgcluster"
)

// AgentConfig starts one `silt agent` process.
type AgentConfig struct {
	Bin  string // the silt binary
	ID   string // agent id (SILT_AGENT_ID)
	Port int    // listen port on 127.0.0.1; 0 picks a free one
	// KafkaPort, when set, turns the Kafka listener on at 127.0.0.1:KafkaPort,
	// advertising KafkaAdvertised (the load balancer; default the listener).
	KafkaPort       int
	KafkaAdvertised string
	Env             []string // extra KEY=VALUE settings (SILT_* flags, AWS_* credentials)
	LogDir          string   // where <id>.log goes
	Detached        bool     // survive this process
	// ClientTLS, when the agent serves TLS (SILT_TLS_CERT in Env), is how
	// to reach it: its URL is then https.
	ClientTLS *tls.Config
}

// AgentProc is a running agent process.
type AgentProc struct {
	ID   string
	Port int
	URL  string // http(s)://127.0.0.1:port
	// KafkaAddr is the agent's own Kafka listener, when it has one.
	KafkaAddr string
	Log       string
	cmd       *exec.Cmd
	exited    chan struct{} // closed when the process has exited
	err       error         // its exit status, once exited is closed
}

// StartAgent starts an agent and waits until /readyz answers 200.
func StartAgent(ctx context.Context, cfg AgentConfig) (*AgentProc, error) {
	port := cfg.Port
	if port == 0 {
		var err error
		if port, err = pgcluster.FreePort(); err != nil {
			return nil, err
		}
	}
	logPath := filepath.Join(cfg.LogDir, cfg.ID+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("localstack: agent log: %w", err)
	}
	defer logFile.Close()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(cfg.Bin, "agent")
	cmd.Env = append(os.Environ(), "SILT_AGENT_ID="+cfg.ID, "SILT_LISTEN="+addr, "SILT_ADVERTISE_ADDRESS="+addr)
	kafkaAddr := ""
	if cfg.KafkaPort > 0 {
		kafkaAddr = "127.0.0.1:" + strconv.Itoa(cfg.KafkaPort)
		advertised := cfg.KafkaAdvertised
		if advertised == "" {
			advertised = kafkaAddr
		}
		// With keys required (agent.env), Kafka clients authenticate
		// with SASL PLAIN: the key's id and the key.
		cmd.Env = append(cmd.Env, "SILT_KAFKA_LISTEN="+kafkaAddr, "SILT_KAFKA_ADVERTISED_ADDR="+advertised)
	}
	cmd.Env = append(cmd.Env, cfg.Env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if cfg.Detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		// Own process group: a Ctrl-C at the terminal reaches only us, and we
		// stop children in order; Pdeathsig ends them if we die.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("localstack: start agent %s: %w", cfg.ID, err)
	}
	scheme := "http://"
	if cfg.ClientTLS != nil {
		scheme = "https://"
	}
	p := &AgentProc{ID: cfg.ID, Port: port, URL: scheme + addr, KafkaAddr: kafkaAddr, Log: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	if err := waitHTTPS(ctx, cfg.ClientTLS, p.URL+"/readyz", 60*time.Second, p.exited); err != nil {
		_ = cmd.Process.Kill()
		tail, _ := os.ReadFile(logPath)
		if len(tail) > 3000 {
			tail = tail[len(tail)-3000:]
		}
		return nil, fmt.Errorf("localstack: agent %s not ready: %w\n%s", cfg.ID, err, tail)
	}
	return p, nil
}

// AdminKeyFile returns the admin key kept in path, making (and keeping,
// readable by its owner only) a fresh one the first time.
func AdminKeyFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		key := strings.TrimSpace(string(b))
		if _, ok := auth.ParseToken(key); ok {
			return key, nil
		}
		return "", fmt.Errorf("localstack: %s does not hold an API key; delete it to make a new one", path)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("localstack: admin key: %w", err)
	}
	key, _, err := auth.NewToken()
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("localstack: admin key: %w", err)
	}
	return key, nil
}

// PID is the agent's process id.
func (p *AgentProc) PID() int { return p.cmd.Process.Pid }

// Exited is closed once the process has exited.
func (p *AgentProc) Exited() <-chan struct{} { return p.exited }

// Kill ends the agent with SIGKILL (a crash) and waits for it.
func (p *AgentProc) Kill() error {
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-p.exited
	return nil
}

// Terminate sends SIGTERM (a graceful stop) and waits up to grace before
// killing it; it returns the process's exit error, if any.
func (p *AgentProc) Terminate(grace time.Duration) error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.exited:
		return p.err
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("localstack: agent %s ignored SIGTERM for %s", p.ID, grace)
	}
}
