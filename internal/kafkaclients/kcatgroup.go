package kafkaclients

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// KcatMember is a running `kcat -G`: a member of a consumer group
// (librdkafka's balanced consumer, with its auto-commit) printing every
// record it consumes.
type KcatMember struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{}

	mu       sync.Mutex
	records  []KcatRecord
	assigned map[int32]bool
	// assignedAt is when each partition was last assigned to the member.
	assignedAt map[int32]time.Time
	stderr     []string
}

// KcatRecord is a record a kcat -G member printed.
type KcatRecord struct {
	Partition int32
	Offset    int64
	Key       string
	At        time.Time // when it was read
}

var kcatRebalance = regexp.MustCompile(`rebalanced \(memberid [^)]*\): (assigned|revoked): (.*)$`)
var kcatPartition = regexp.MustCompile(`\[(\d+)\]`)

// StartKcatGroup starts `kcat -G group topic` against b, with extra
// librdkafka settings (-X name=value), until the test ends. It starts
// from the group's committed offsets, from the beginning where there are
// none.
func StartKcatGroup(t testing.TB, b Broker, name, group, topic string, settings ...string) *KcatMember {
	t.Helper()
	args := append(b.KcatArgs(), "-G", group, "-X", "auto.offset.reset=earliest", "-f", `%p %o %k\n`, "-u")
	for _, s := range settings {
		args = append(args, "-X", s)
	}
	args = append(args, topic)
	cmd := exec.Command("kcat", args...)
	cmd.Dir = t.TempDir()
	cmd.Env = os.Environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	m := &KcatMember{Name: name, cmd: cmd, done: make(chan struct{}), assigned: map[int32]bool{}, assignedAt: map[int32]time.Time{}}
	if err := cmd.Start(); err != nil {
		t.Fatalf("kcat -G: %v", err)
	}
	var readers sync.WaitGroup
	readers.Go(func() { m.readRecords(stdout) })
	readers.Go(func() { m.readLog(stderr) })
	go func() {
		readers.Wait()
		_ = cmd.Wait()
		close(m.done)
	}()
	t.Cleanup(func() { m.Kill() })
	return m
}

func (m *KcatMember) readRecords(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), " ", 3)
		if len(f) != 3 {
			continue
		}
		p, err1 := strconv.ParseInt(f[0], 10, 32)
		o, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		m.mu.Lock()
		m.records = append(m.records, KcatRecord{Partition: int32(p), Offset: o, Key: f[2], At: time.Now()})
		m.mu.Unlock()
	}
}

func (m *KcatMember) readLog(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		m.mu.Lock()
		if len(m.stderr) < 200 {
			m.stderr = append(m.stderr, line)
		}
		if g := kcatRebalance.FindStringSubmatch(line); g != nil {
			for _, pm := range kcatPartition.FindAllStringSubmatch(g[2], -1) {
				p, _ := strconv.ParseInt(pm[1], 10, 32)
				if g[1] == "assigned" {
					m.assigned[int32(p)] = true
					m.assignedAt[int32(p)] = time.Now()
				} else {
					delete(m.assigned, int32(p))
				}
			}
		}
		m.mu.Unlock()
	}
}

// Records returns what the member printed so far.
func (m *KcatMember) Records() []KcatRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.records)
}

// Assigned returns the partitions assigned to the member now, sorted.
func (m *KcatMember) Assigned() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []int32
	for p := range m.assigned {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// AssignedAt is when partition p was last assigned to the member (zero if
// never).
func (m *KcatMember) AssignedAt(p int32) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.assignedAt[p]
}

// Log returns the start of kcat's standard error.
func (m *KcatMember) Log() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return strings.Join(m.stderr, "\n")
}

// Kill ends kcat with SIGKILL (a crash: no LeaveGroup, no last commit)
// and waits for it.
func (m *KcatMember) Kill() {
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.done
}

// Stop ends kcat with SIGTERM (it commits and leaves the group) and waits
// up to a bound for it.
func (m *KcatMember) Stop(ctx context.Context) error {
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		m.Kill()
		return fmt.Errorf("kcat %s ignored SIGTERM: %w", m.Name, ctx.Err())
	}
}
