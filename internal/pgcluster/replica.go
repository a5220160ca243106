package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Crash faults and streaming replication, for the fault suite (package
// chaos): stop a server the way a crash does, kill it outright, build a
// streaming standby with pg_basebackup and promote it.

// StopImmediate stops the server in immediate mode: every process quits at
// once without a checkpoint, as in a crash; the next start runs crash
// recovery from the WAL.
func (c *Cluster) StopImmediate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	out, err := c.run(ctx, "pg_ctl", "stop", "-w", "-m", "immediate", "-D", c.dir)
	if err != nil {
		return fmt.Errorf("pgcluster: pg_ctl stop -m immediate: %w: %s", err, out)
	}
	c.logger.Info("postgres stopped (immediate)", "data_dir", c.dir)
	return nil
}

// Kill sends SIGKILL to the postmaster and to every process it had started
// (backends, WAL writer, WAL senders), as when the machine dies, and waits
// until they are gone. The data directory stays as the crash left it.
func (c *Cluster) Kill(ctx context.Context) error {
	pid, err := c.postmasterPID()
	if err != nil {
		return err
	}
	children := childrenOf(pid)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for _, ch := range children {
		_ = syscall.Kill(ch, syscall.SIGKILL)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		alive := processAlive(pid)
		for _, ch := range children {
			alive = alive || processAlive(ch)
		}
		if !alive {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: killed postgres (pid %d) did not exit: %w", pid, ctx.Err())
		case <-tick.C:
		}
	}
	c.logger.Info("postgres killed", "data_dir", c.dir, "pid", pid)
	return nil
}

// postmasterPID reads the first line of postmaster.pid.
func (c *Cluster) postmasterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(c.dir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("pgcluster: postmaster.pid: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pgcluster: postmaster.pid: bad pid %q", line)
	}
	return pid, nil
}

// childrenOf lists the processes whose parent is pid (from /proc).
func childrenOf(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := parentOf(n); ok && ppid == pid {
			out = append(out, n)
		}
	}
	return out
}

// parentOf reads a process's parent id from /proc/<pid>/stat.
func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}

// processAlive reports whether pid runs (a zombie counts as gone).
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// Restart starts a stopped (or crashed) server again on its port.
func (c *Cluster) Restart(ctx context.Context) error {
	if _, running := c.runningPort(ctx); running {
		return nil
	}
	return c.start(ctx, c.port)
}

// Promote turns a standby into a primary and waits until it accepts
// writes.
func (c *Cluster) Promote(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	out, err := c.run(ctx, "pg_ctl", "promote", "-w", "-t", "60", "-D", c.dir)
	if err != nil {
		return fmt.Errorf("pgcluster: pg_ctl promote: %w: %s", err, out)
	}
	c.logger.Info("postgres promoted", "data_dir", c.dir)
	return nil
}

// StandbyName is the application_name a standby made by StartStandby
// connects to its primary with: the name synchronous_standby_names lists.
const StandbyName = "silt_standby"

// StartStandby makes a streaming standby of primary with pg_basebackup in
// cfg.DataDir (which must be empty or missing) and starts it on cfg.Port
// (0: a free port). It replicates as StandbyName, so that the primary can
// make it synchronous (SyncStandby). Settings of the primary made with
// ALTER SYSTEM are copied, except synchronous_standby_names: a promoted
// standby must not wait for a standby it does not have.
func StartStandby(ctx context.Context, cfg Config, primary *Cluster) (*Cluster, error) {
	c, err := newCluster(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(c.dir, "PG_VERSION")); err == nil {
		return nil, fmt.Errorf("pgcluster: standby data dir %s holds a cluster already; remove it first", c.dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("pgcluster: standby data dir: %w", err)
	}
	if err := c.prepare(ctx); err != nil {
		return nil, err
	}
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=%s application_name=%s", primary.port, SuperUser, StandbyName)
	c.logger.Info("making a standby with pg_basebackup", "data_dir", c.dir, "primary_port", primary.port)
	out, err := c.run(ctx, "pg_basebackup", "-D", c.dir, "-d", conninfo, "-X", "stream", "-c", "fast", "--no-sync")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: pg_basebackup: %w: %s", err, out)
	}
	if err := c.writeStandbyConfig(conninfo); err != nil {
		return nil, err
	}
	port := cfg.Port
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if err := c.start(ctx, port); err != nil {
		return nil, err
	}
	c.port = port
	return c, nil
}

// writeStandbyConfig rewrites postgresql.auto.conf without
// synchronous_standby_names and with primary_conninfo, and creates
// standby.signal.
func (c *Cluster) writeStandbyConfig(conninfo string) error {
	auto := filepath.Join(c.dir, "postgresql.auto.conf")
	b, err := os.ReadFile(auto)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pgcluster: read %s: %w", auto, err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		k, _, _ := strings.Cut(strings.TrimSpace(l), "=")
		switch strings.TrimSpace(k) {
		case "synchronous_standby_names", "primary_conninfo":
			continue
		}
		if l != "" {
			lines = append(lines, l)
		}
	}
	lines = append(lines, "primary_conninfo = '"+strings.ReplaceAll(conninfo, "'", "''")+"'")
	if err := os.WriteFile(auto, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return fmt.Errorf("pgcluster: write %s: %w", auto, err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "standby.signal"), nil, 0o600); err != nil {
		return fmt.Errorf("pgcluster: standby.signal: %w", err)
	}
	return c.chown(c.dir)
}

// Remove deletes the data directory of a stopped or killed cluster (and
// its pointer file when it was relocated), so that a new cluster can be
// made there.
func (c *Cluster) Remove() error {
	if pid, err := c.postmasterPID(); err == nil && processAlive(pid) {
		return fmt.Errorf("pgcluster: %s is running (pid %d); stop it before removing it", c.dir, pid)
	}
	if err := os.RemoveAll(c.dir); err != nil {
		return fmt.Errorf("pgcluster: remove %s: %w", c.dir, err)
	}
	if c.relocated {
		if err := os.Remove(PointerFile(c.cfg.DataDir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("pgcluster: remove pointer: %w", err)
		}
	}
	return nil
}

// SyncStandby makes StandbyName the primary's synchronous standby (ALTER
// SYSTEM, reload) and waits until it streams as one: from then on a commit
// is acknowledged only once the standby has flushed its WAL.
func SyncStandby(ctx context.Context, primary *Cluster) error {
	conn, err := pgx.Connect(ctx, primary.URL("postgres"))
	if err != nil {
		return fmt.Errorf("pgcluster: connect to the primary: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = '"+StandbyName+"'"); err != nil {
		return fmt.Errorf("pgcluster: set synchronous_standby_names: %w", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("pgcluster: reload: %w", err)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var n int
		err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND sync_state = 'sync' AND state = 'streaming'", StandbyName).Scan(&n)
		if err != nil {
			return fmt.Errorf("pgcluster: pg_stat_replication: %w", err)
		}
		if n > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: the standby did not become synchronous: %w", ctx.Err())
		case <-tick.C:
		}
	}
}
