package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"silt/internal/pgcluster"
)

// FindPgBouncer returns the pgbouncer binary: on PATH, else Debian's
// /usr/sbin/pgbouncer (`make pgbouncer` installs it).
func FindPgBouncer() (string, error) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	const debian = "/usr/sbin/pgbouncer"
	if _, err := os.Stat(debian); err == nil {
		return debian, nil
	}
	return "", errors.New("pgbouncer not found on PATH or at /usr/sbin/pgbouncer; install it with `make pgbouncer`")
}

// PgBouncer starts a private pgbouncer in transaction pooling mode in
// front of the database of postgresURL (a URL from PostgresURL), on a free
// 127.0.0.1 port, with at most serverConns server sessions, and returns
// the URL that reaches the database through it. It stops with the test;
// its log (stderr) is shown when the test fails.
func PgBouncer(t testing.TB, postgresURL string, serverConns int) string {
	t.Helper()
	bin, err := FindPgBouncer()
	if err != nil {
		if testing.Short() {
			t.Skipf("testenv: %v", err)
		}
		t.Fatalf("testenv: %v", err)
	}
	u, err := url.Parse(postgresURL)
	if err != nil {
		t.Fatalf("testenv: parse %s: %v", postgresURL, err)
	}
	port, err := pgcluster.FreePort()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	// Not t.TempDir: its parent is private to root, and pgbouncer runs as
	// the postgres user when the test runs as root.
	dir, err := os.MkdirTemp("", "silt-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	db, userName := u.Path[1:], u.User.Username()
	server := fmt.Sprintf("host=%s port=%s dbname=%s user=%s", u.Hostname(), u.Port(), db, userName)
	if pass, ok := u.User.Password(); ok {
		server += " password=" + pass
	}
	ini := fmt.Sprintf(`[databases]
%s = %s
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = transaction
default_pool_size = %d
max_client_conn = 200
ignore_startup_parameters = extra_float_digits
`, db, server, port, filepath.Join(dir, "users.txt"), serverConns)
	for name, body := range map[string]string{"pgbouncer.ini": ini, "users.txt": strconv.Quote(userName) + ` ""` + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	cmd.Stderr = &stderr
	if os.Geteuid() == 0 { // pgbouncer refuses to run as root
		pu, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("testenv: pgbouncer as root needs the 'postgres' system user: %v", err)
		}
		uid, _ := strconv.Atoi(pu.Uid)
		gid, _ := strconv.Atoi(pu.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start pgbouncer: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("pgbouncer log:\n%s", lastBytes(stderr.Bytes(), 4000))
		}
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("testenv: pgbouncer exited: %s", stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: pgbouncer not listening on %s: %v", addr, err)
		}
		select {
		case <-exited:
		case <-time.After(20 * time.Millisecond):
		}
	}
	through := *u
	through.Host = addr
	return through.String()
}
