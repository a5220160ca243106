package pgcluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNoBinaries is returned when no PostgreSQL server binaries are found.
var ErrNoBinaries = errors.New("pgcluster: PostgreSQL server binaries (initdb, pg_ctl) not found; install PostgreSQL (make installs it with apt-get)")

// SuperUser is the cluster's superuser name.
const SuperUser = "silt"

// DefaultRelocateRoot is where clusters go whose data directory the
// postgres user cannot reach (see Config.RelocateRoot).
const DefaultRelocateRoot = "/var/lib/silt"

// Config describes a cluster.
type Config struct {
	// DataDir holds the cluster; created and initialized when missing.
	DataDir string
	// Port to listen on (127.0.0.1); 0 picks a free port.
	Port int
	// BinDir holds initdb and pg_ctl; empty searches PATH and /usr/lib/postgresql/*/bin.
	BinDir string
	// Fast trades durability for speed (fsync off); for tests only.
	Fast bool
	// MaxConnections is the server's max_connections.
	MaxConnections int
	// Settings are further server settings (name to value), given as
	// -c name=value at start.
	Settings map[string]string
	// RelocateRoot matters only when the caller is root, so the server runs
	// as the postgres user: when that user cannot reach DataDir (a parent
	// directory only its owner may enter, such as a home directory or a
	// mktemp -d folder), the cluster lives in RelocateRoot/<hash of DataDir>
	// instead, owned by postgres, and the file PointerFile(DataDir) records
	// where, so later runs find it. Empty refuses such a DataDir.
	RelocateRoot string
	// Logger receives progress lines.
	Logger *slog.Logger
}

// DefaultConfig returns a config with a data directory to fill in.
func DefaultConfig() Config {
	return Config{MaxConnections: 200, RelocateRoot: DefaultRelocateRoot, Logger: slog.New(slog.DiscardHandler)}
}

// PointerFile is the file beside dataDir that names the directory holding
// the cluster when it was relocated (see Config.RelocateRoot).
func PointerFile(dataDir string) string {
	return filepath.Clean(dataDir) + ".location"
}

// Validate checks the config.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("pgcluster: data directory is required")
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("pgcluster: port %d out of range", c.Port)
	}
	if c.MaxConnections < 10 {
		return fmt.Errorf("pgcluster: max connections %d below 10", c.MaxConnections)
	}
	for k, v := range c.Settings {
		if k == "" || strings.ContainsAny(k+v, " \t\n'\"\\") {
			return fmt.Errorf("pgcluster: setting %q=%q: names and values must not hold spaces or quotes", k, v)
		}
	}
	return nil
}

// Cluster is a running server.
type Cluster struct {
	cfg       Config // cfg.DataDir is absolute
	dir       string // where the cluster lives: cfg.DataDir, or the relocated directory
	relocated bool
	bin       string
	port      int
	cred      *syscall.Credential
	logger    *slog.Logger
}

// FindBinDir locates the directory holding initdb and pg_ctl.
func FindBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool { return versionOf(matches[i]) > versionOf(matches[j]) })
	for _, m := range matches {
		dir := filepath.Dir(m)
		if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
			return dir, nil
		}
	}
	return "", ErrNoBinaries
}

func versionOf(path string) int {
	// /usr/lib/postgresql/<v>/bin/initdb
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(path))))
	return v
}

func newCluster(cfg Config) (*Cluster, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	bin := cfg.BinDir
	if bin == "" {
		var err error
		if bin, err = FindBinDir(); err != nil {
			return nil, err
		}
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: data dir: %w", err)
	}
	cfg.DataDir = dataDir
	c := &Cluster{cfg: cfg, dir: dataDir, bin: bin, logger: cfg.Logger}
	if os.Geteuid() == 0 {
		if c.cred, err = serviceUser(); err != nil {
			return nil, err
		}
	}
	target, err := readPointer(dataDir, cfg.RelocateRoot)
	if err != nil {
		return nil, err
	}
	if target != "" {
		c.dir, c.relocated = target, true
	}
	return c, nil
}

// readPointer returns the directory PointerFile(dataDir) names, or "" when
// there is no pointer. Only a directory right under root is accepted: root
// chowns the directory it names to the postgres user.
func readPointer(dataDir, root string) (string, error) {
	path := PointerFile(dataDir)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("pgcluster: read %s: %w", path, err)
	}
	target := strings.TrimSpace(string(b))
	if root == "" || !filepath.IsAbs(target) || filepath.Clean(target) != target || filepath.Dir(target) != filepath.Clean(root) {
		return "", fmt.Errorf("pgcluster: %s names %q, which is not a directory right under %q; remove the file (and that cluster) to start afresh", path, target, root)
	}
	return target, nil
}

// relocatedDir is where the cluster of dataDir lives when relocated.
func relocatedDir(root, dataDir string) string {
	sum := sha256.Sum256([]byte(dataDir))
	return filepath.Join(filepath.Clean(root), hex.EncodeToString(sum[:8]))
}

// StopDataDir stops a server running on cfg.DataDir, if any.
func StopDataDir(ctx context.Context, cfg Config) error {
	c, err := newCluster(cfg)
	if err != nil {
		return err
	}
	if _, running := c.runningPort(ctx); !running {
		return nil
	}
	return c.Stop(ctx)
}

// Start initializes (when needed) and starts the cluster.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	c, err := newCluster(cfg)
	if err != nil {
		return nil, err
	}
	cfg = c.cfg
	if err := c.ensureInit(ctx); err != nil {
		return nil, err
	}
	if port, ok := c.runningPort(ctx); ok {
		c.port = port
		c.logger.Info("postgres already running; adopting it", "data_dir", c.dir, "port", port)
		return c, nil
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port := cfg.Port
		if port == 0 {
			if port, err = FreePort(); err != nil {
				return nil, err
			}
		}
		if lastErr = c.start(ctx, port); lastErr == nil {
			c.port = port
			return c, nil
		}
		if cfg.Port != 0 || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func serviceUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: running as root needs the 'postgres' system user (created by the PostgreSQL package): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (c *Cluster) ensureInit(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(c.dir, "PG_VERSION")); err == nil {
		return c.chown(c.dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pgcluster: data dir: %w", err)
	}
	if err := c.prepare(ctx); err != nil {
		return err
	}
	c.logger.Info("initializing postgres cluster", "data_dir", c.dir)
	out, err := c.run(ctx, "initdb", "-D", c.dir, "-U", SuperUser, "--auth=trust", "--encoding=UTF8", "--no-locale")
	if err != nil {
		return fmt.Errorf("pgcluster: initdb: %w: %s", err, out)
	}
	return nil
}

// prepare makes the data directory for initdb, owned by the server user,
// and relocates it when the server user cannot reach it.
func (c *Cluster) prepare(ctx context.Context) error {
	if c.relocated {
		if err := c.makeRoot(); err != nil {
			return err
		}
	}
	if err := c.makeDir(c.dir); err != nil {
		return err
	}
	err := c.checkAccess(ctx, c.dir)
	if err == nil || c.relocated || c.cfg.RelocateRoot == "" {
		return err
	}
	_ = os.Remove(c.dir) // the empty directory just made (a non-empty one stays)
	return c.relocate(ctx)
}

// relocate moves the cluster to be initialized under RelocateRoot and
// writes the pointer that later runs follow.
func (c *Cluster) relocate(ctx context.Context) error {
	target := relocatedDir(c.cfg.RelocateRoot, c.cfg.DataDir)
	if _, err := os.Lstat(target); err == nil {
		// No pointer names it (else c.relocated would be set): it belongs
		// to an earlier data directory at this path that was deleted, and
		// the objects its index referred to went with it.
		c.logger.Warn("removing the relocated postgres cluster of a deleted data directory", "data_dir", c.cfg.DataDir, "dir", target)
		if _, err := os.Stat(filepath.Join(target, "PG_VERSION")); err == nil {
			_, _ = c.run(ctx, "pg_ctl", "stop", "-w", "-m", "immediate", "-D", target)
		}
		if err := os.RemoveAll(target); err != nil {
			return fmt.Errorf("pgcluster: remove stale %s: %w", target, err)
		}
	}
	if err := c.makeRoot(); err != nil {
		return err
	}
	if err := c.makeDir(target); err != nil {
		return err
	}
	if err := c.checkAccess(ctx, target); err != nil {
		return fmt.Errorf("pgcluster: the postgres user can reach neither %s nor %s (check the permissions of %s)", c.cfg.DataDir, target, c.cfg.RelocateRoot)
	}
	pointer := PointerFile(c.cfg.DataDir)
	if err := writeFileAtomic(pointer, []byte(target+"\n")); err != nil {
		return fmt.Errorf("pgcluster: write %s: %w", pointer, err)
	}
	c.logger.Info("the postgres user cannot reach the data directory; the cluster lives in a directory it owns",
		"data_dir", c.cfg.DataDir, "cluster_dir", target, "pointer", pointer)
	c.dir, c.relocated = target, true
	return nil
}

// makeRoot creates RelocateRoot, traversable by everyone, when missing.
func (c *Cluster) makeRoot() error {
	root := c.cfg.RelocateRoot
	if _, err := os.Stat(root); err == nil {
		return nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("pgcluster: create %s: %w", root, err)
	}
	if err := os.Chmod(root, 0o755); err != nil { // whatever the umask
		return fmt.Errorf("pgcluster: chmod %s: %w", root, err)
	}
	return nil
}

// makeDir creates dir (0700) and hands it to the server user.
func (c *Cluster) makeDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pgcluster: create data dir: %w", err)
	}
	return c.chown(dir)
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// checkAccess verifies that the server user can write the data directory
// (its parents must be traversable when it is not the caller).
func (c *Cluster) checkAccess(ctx context.Context, dir string) error {
	if c.cred == nil {
		return nil
	}
	cmd := exec.CommandContext(ctx, "test", "-w", dir, "-a", "-x", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	cmd.Dir = "/"
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pgcluster: the postgres user cannot reach %s (a parent directory is not traversable); choose a data directory elsewhere", dir)
	}
	return nil
}

func (c *Cluster) chown(dir string) error {
	if c.cred == nil {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(c.cred.Uid), int(c.cred.Gid))
	})
}

func (c *Cluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
		cmd.Dir = "/"
	}
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	err := cmd.Run()
	return buf.Bytes(), err
}

// runningPort reports the port of a server already running on the data dir.
func (c *Cluster) runningPort(ctx context.Context) (int, bool) {
	if _, err := c.run(ctx, "pg_ctl", "status", "-D", c.dir); err != nil {
		return 0, false
	}
	b, err := os.ReadFile(filepath.Join(c.dir, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 4 {
		return 0, false
	}
	port, err := strconv.Atoi(strings.TrimSpace(lines[3]))
	return port, err == nil
}

func (c *Cluster) start(ctx context.Context, port int) error {
	opts := []string{
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=",
		"-c", "max_connections=" + strconv.Itoa(c.cfg.MaxConnections),
	}
	if c.cfg.Fast {
		opts = append(opts, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	} else {
		// Spelled out, so a durable server is durable whatever its
		// postgresql.conf says (the data directory may be an old fast one).
		opts = append(opts, "-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "full_page_writes=on")
	}
	names := make([]string, 0, len(c.cfg.Settings))
	for k := range c.cfg.Settings {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		opts = append(opts, "-c", k+"="+c.cfg.Settings[k])
	}
	logFile := filepath.Join(c.dir, "server.log")
	out, err := c.run(ctx, "pg_ctl", "start", "-w", "-t", "60", "-D", c.dir, "-l", logFile, "-o", strings.Join(opts, " "))
	if err != nil {
		tail, _ := os.ReadFile(logFile)
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return fmt.Errorf("pgcluster: pg_ctl start on port %d: %w: %s\n%s", port, err, out, tail)
	}
	c.logger.Info("postgres started", "data_dir", c.dir, "port", port)
	return nil
}

// DataDir is the directory holding the cluster: Config.DataDir, or the
// directory under Config.RelocateRoot that PointerFile(Config.DataDir) names.
func (c *Cluster) DataDir() string { return c.dir }

// Port is the TCP port the server listens on.
func (c *Cluster) Port() int { return c.port }

// URL returns a connection URL for database db.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", SuperUser, c.port, db)
}

// Stop shuts the server down (fast mode: running transactions roll back).
func (c *Cluster) Stop(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	out, err := c.run(ctx, "pg_ctl", "stop", "-w", "-m", "fast", "-D", c.dir)
	if err != nil {
		return fmt.Errorf("pgcluster: pg_ctl stop: %w: %s", err, out)
	}
	c.logger.Info("postgres stopped", "data_dir", c.dir)
	return nil
}

// FreePort returns a currently free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgcluster: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
