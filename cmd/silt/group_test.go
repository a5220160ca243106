package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"silt/client"
	"silt/internal/agenttest"
)

// groupCLI runs `silt group ...` in-process.
func groupCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code = run(ctx, append([]string{"group"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

func groupCLIOK(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := groupCLI(t, args...)
	if code != 0 {
		t.Fatalf("silt group %q: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	return out
}

func groupCLIFails(t *testing.T, want string, args ...string) {
	t.Helper()
	code, out, errOut := groupCLI(t, args...)
	if code == 0 || !strings.Contains(errOut, want) {
		t.Fatalf("silt group %q: exit %d, want a failure mentioning %q\nstdout: %s\nstderr: %s", args, code, want, out, errOut)
	}
}

func groupTestClient(t *testing.T) (context.Context, *client.Client, string) {
	t.Helper()
	a := agenttest.Start(t, agenttest.Options{})
	c, err := client.New(a.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx, c, a.URL
}

func committed(t *testing.T, ctx context.Context, c *client.Client, group string) string {
	t.Helper()
	offs, err := c.GroupOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range offs {
		out = append(out, fmt.Sprintf("%s/%d=%s", o.Topic, o.Partition, offsetOrDash(o.CommittedOffset)))
	}
	return strings.Join(out, " ")
}

func TestGroupResetOffsets(t *testing.T) {
	ctx, c, url := groupTestClient(t)
	url = "--url=" + url
	if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "t", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	t0 := time.UnixMilli(1_700_000_000_000)
	var msgs []client.Message
	for i := range 20 {
		ts := t0
		if i%10 >= 5 {
			ts = t0.Add(time.Hour)
		}
		msgs = append(msgs, client.Message{Partition: client.Partition(int32(i / 10)), Timestamp: ts, Value: []byte(fmt.Sprint(i))})
	}
	if _, err := c.Produce(ctx, "t", msgs); err != nil {
		t.Fatal(err)
	}

	out := groupCLIOK(t, "reset-offsets", "g", "--topic", "t", "--to-earliest", url)
	if !strings.Contains(out, "Reset offsets of group g on topic t.") || committed(t, ctx, c, "g") != "t/0=0 t/1=0" {
		t.Fatalf("to-earliest:\n%s\ncommitted %s", out, committed(t, ctx, c, "g"))
	}
	groupCLIOK(t, "reset-offsets", "g", "--topic", "t", "--to-latest", "--partition", "1", url)
	if got := committed(t, ctx, c, "g"); got != "t/0=0 t/1=10" {
		t.Fatalf("to-latest on partition 1: %s", got)
	}
	out = groupCLIOK(t, "reset-offsets", "g", url, "--topic=t", "--to-offset", "4")
	if got := committed(t, ctx, c, "g"); got != "t/0=4 t/1=4" {
		t.Fatalf("to-offset: %s", got)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 4 || strings.Join(strings.Fields(lines[3]), " ") != "t 1 10 4" {
		t.Fatalf("to-offset output:\n%s", out)
	}
	groupCLIOK(t, "reset-offsets", "g", "--topic", "t", "--to-offset", "99", url)
	if got := committed(t, ctx, c, "g"); got != "t/0=10 t/1=10" {
		t.Fatalf("to-offset past the end is moved to the high watermark: %s", got)
	}
	groupCLIOK(t, "reset-offsets", "g", "--topic", "t", "--to-timestamp", fmt.Sprint(t0.Add(time.Minute).UnixMilli()), url)
	if got := committed(t, ctx, c, "g"); got != "t/0=5 t/1=5" {
		t.Fatalf("to-timestamp: %s", got)
	}
	groupCLIOK(t, "reset-offsets", "g", "--topic", "t", "--to-timestamp", fmt.Sprint(t0.Add(2*time.Hour).UnixMilli()), url)
	if got := committed(t, ctx, c, "g"); got != "t/0=10 t/1=10" {
		t.Fatalf("to-timestamp after every record: %s", got)
	}
	out = groupCLIOK(t, "reset-offsets", "g", "--topic", "t", "--to-earliest", "--dry-run", "--output", "json", url)
	var plan struct {
		DryRun  bool        `json:"dry_run"`
		Offsets []resetPlan `json:"offsets"`
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil || !plan.DryRun || len(plan.Offsets) != 2 || plan.Offsets[0].Offset != 0 || *plan.Offsets[0].Previous != 10 {
		t.Fatalf("dry run %s: %+v %v", out, plan, err)
	}
	if got := committed(t, ctx, c, "g"); got != "t/0=10 t/1=10" {
		t.Fatalf("a dry run committed: %s", got)
	}

	// Refused while the group has a member.
	m, err := c.JoinGroup(ctx, "g", client.JoinGroupRequest{Topics: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	groupCLIFails(t, "group_not_empty", "reset-offsets", "g", "--topic", "t", "--to-earliest", url)
	if got := committed(t, ctx, c, "g"); got != "t/0=10 t/1=10" {
		t.Fatalf("a refused reset committed: %s", got)
	}
	out = groupCLIOK(t, "list", url)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || strings.Join(strings.Fields(lines[1]), " ") != "g stable 1 1" {
		t.Fatalf("list:\n%s", out)
	}
	out = groupCLIOK(t, "describe", "g", url)
	for _, want := range []string{"State:       stable", m.MemberID, "t/0,t/1"} {
		if !strings.Contains(out, want) {
			t.Fatalf("describe lacks %q:\n%s", want, out)
		}
	}
	var rows []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 7 && f[0] == "t" {
			rows = append(rows, strings.Join(f, " "))
		}
	}
	if want := fmt.Sprintf("[t 0 10 0 10 0 %[1]s t 1 10 0 10 0 %[1]s]", m.MemberID); fmt.Sprint(rows) != want {
		t.Fatalf("describe offsets %v, want %s:\n%s", rows, want, out)
	}
	groupCLIFails(t, "group_not_empty", "delete", "g", url)
	if err := c.LeaveGroup(ctx, "g", m.MemberID); err != nil {
		t.Fatal(err)
	}
	groupCLIOK(t, "reset-offsets", "g", "--topic", "t", "--to-earliest", url)
	if got := committed(t, ctx, c, "g"); got != "t/0=0 t/1=0" {
		t.Fatalf("reset after the member left: %s", got)
	}
	groupCLIOK(t, "delete", "g", url)
	groupCLIFails(t, "group_not_found", "describe", "g", url)

	// Usage errors.
	groupCLIFails(t, "exactly one of", "reset-offsets", "g", "--topic", "t", url)
	groupCLIFails(t, "exactly one of", "reset-offsets", "g", "--topic", "t", "--to-earliest", "--to-latest", url)
	groupCLIFails(t, "--topic is required", "reset-offsets", "g", "--to-earliest", url)
	groupCLIFails(t, "expected 1 argument", "reset-offsets", "--topic", "t", "--to-earliest", url)
	groupCLIFails(t, "there is no partition 7", "reset-offsets", "g", "--topic", "t", "--to-earliest", "--partition", "7", url)
	groupCLIFails(t, "topic_not_found", "reset-offsets", "g", "--topic", "nope", "--to-earliest", url)
	groupCLIFails(t, "unknown subcommand", "frobnicate")
}

// lineSink collects printed lines from concurrent consumers.
type lineSink struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines *[]string
	all   *sync.Mutex
}

func (s *lineSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	for {
		line, err := s.buf.ReadString('\n')
		if err != nil {
			s.buf.Reset()
			s.buf.WriteString(line)
			return len(p), nil
		}
		s.all.Lock()
		*s.lines = append(*s.lines, strings.TrimSuffix(line, "\n"))
		s.all.Unlock()
	}
}

// printedRecord is a line of formatJSON.
type printedRecord struct {
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Value     string `json:"value"`
}

func parsePrinted(t *testing.T, lines []string) []printedRecord {
	t.Helper()
	out := make([]printedRecord, len(lines))
	for i, l := range lines {
		if err := json.Unmarshal([]byte(l), &out[i]); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
	}
	return out
}

func TestConsumeGroupCommitsWhatItPrints(t *testing.T) {
	ctx, c, _ := groupTestClient(t)
	if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "t", Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	var msgs []client.Message
	for i := range 30 {
		msgs = append(msgs, client.Message{Key: []byte(fmt.Sprint("k", i)), Value: []byte(fmt.Sprint("v", i))})
	}
	if _, err := c.Produce(ctx, "t", msgs); err != nil {
		t.Fatal(err)
	}
	opts := groupConsumeOptions{AutoOffsetReset: client.ResetEarliest, MaxRecords: 12, FetchRecords: 5, Wait: 100 * time.Millisecond}
	var first, second bytes.Buffer
	if err := consumeGroup(ctx, c, "g", []string{"t"}, opts, &first); err != nil {
		t.Fatal(err)
	}
	opts.MaxRecords = 18
	if err := consumeGroup(ctx, c, "g", []string{"t"}, opts, &second); err != nil {
		t.Fatal(err)
	}
	lines := append(strings.Split(strings.TrimSpace(first.String()), "\n"), strings.Split(strings.TrimSpace(second.String()), "\n")...)
	recs := parsePrinted(t, lines)
	if len(recs) != 30 {
		t.Fatalf("printed %d records:\n%s\n--\n%s", len(recs), first.String(), second.String())
	}
	seen := map[string]bool{}
	for _, r := range recs {
		if seen[r.Value] {
			t.Fatalf("%s printed twice", r.Value)
		}
		seen[r.Value] = true
	}
	offs, err := c.GroupOffsets(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range offs {
		if o.Lag != 0 {
			t.Fatalf("lag after consuming everything: %+v", o)
		}
	}
	d, err := c.DescribeGroup(ctx, "g")
	if err != nil || len(d.Members) != 0 {
		t.Fatalf("members left behind: %+v, %v", d, err)
	}
	// Nothing left: it waits until its context ends, then returns cleanly.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	var none bytes.Buffer
	opts.MaxRecords = 0
	if err := consumeGroup(short, c, "g", []string{"t"}, opts, &none); err != nil || none.Len() != 0 {
		t.Fatalf("idle consumer: %v, printed %q", err, none.String())
	}
}

// Two consumers of one group share the partitions: the second join makes
// the first rejoin, and together they print every record (at least once).
func TestConsumeGroupRebalances(t *testing.T) {
	ctx, c, _ := groupTestClient(t)
	if _, err := c.CreateTopic(ctx, client.NewTopic{Name: "t", Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lines []string
	var stops [2]context.CancelFunc
	var dones [2]chan struct{}
	var logs [2]bytes.Buffer
	var logMu sync.Mutex
	start := func(i int) {
		runCtx, stop := context.WithCancel(ctx)
		stops[i], dones[i] = stop, make(chan struct{})
		t.Cleanup(stop)
		go func() {
			defer close(dones[i])
			opts := groupConsumeOptions{AutoOffsetReset: client.ResetEarliest, SessionTimeout: 3 * time.Second, Wait: 200 * time.Millisecond,
				Log: writerFunc(func(p []byte) (int, error) { logMu.Lock(); defer logMu.Unlock(); return logs[i].Write(p) })}
			if err := consumeGroup(runCtx, c, "g", []string{"t"}, opts, &lineSink{lines: &lines, all: &mu}); err != nil {
				t.Errorf("consumer %d: %v", i, err)
			}
		}()
	}
	produce := func(from, n int) {
		var msgs []client.Message
		for i := from; i < from+n; i++ {
			msgs = append(msgs, client.Message{Key: []byte(fmt.Sprint("k", i)), Value: []byte(fmt.Sprint("v", i))})
		}
		if _, err := c.Produce(ctx, "t", msgs); err != nil {
			t.Fatal(err)
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for !cond() {
			select {
			case <-deadline:
				logMu.Lock()
				defer logMu.Unlock()
				t.Fatalf("timed out waiting for %s\nlog 0:\n%s\nlog 1:\n%s", what, logs[0].String(), logs[1].String())
			case <-tick.C:
			}
		}
	}
	distinct := func() int {
		mu.Lock()
		defer mu.Unlock()
		set := map[string]bool{}
		for _, r := range parsePrinted(t, lines) {
			set[r.Value] = true
		}
		return len(set)
	}
	start(0)
	produce(0, 40)
	waitFor("the first consumer to read 40 records", func() bool { return distinct() == 40 })
	start(1)
	// The second consumer's join rebalances: wait until both hold partitions.
	waitFor("two members at one generation", func() bool {
		d, err := c.DescribeGroup(ctx, "g")
		if err != nil || len(d.Members) != 2 || d.State != "stable" {
			return false
		}
		return len(d.Members[0].Assignments) == 2 && len(d.Members[1].Assignments) == 2
	})
	produce(40, 40)
	waitFor("every record", func() bool { return distinct() == 80 })
	// Members stop one at a time. A member that leaves rebalances the
	// group, so the other's commit of records it had just printed may be
	// refused (the at-least-once window): it rejoins, reads them again
	// and commits. Only then does the last member stop.
	stops[0]()
	<-dones[0]
	waitFor("the remaining member to commit everything", func() bool {
		offs, err := c.GroupOffsets(ctx, "g")
		if err != nil {
			return false
		}
		for _, o := range offs {
			if o.Lag != 0 || o.CommittedOffset == nil {
				return false
			}
		}
		return true
	})
	stops[1]()
	<-dones[1]
	d, err := c.DescribeGroup(ctx, "g")
	if err != nil || len(d.Members) != 0 {
		t.Fatalf("members after both stopped: %+v, %v", d, err)
	}
	offs, err := c.GroupOffsets(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range offs {
		if o.Lag != 0 || o.CommittedOffset == nil {
			t.Fatalf("offsets after consuming everything: %+v", offs)
		}
	}
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// `silt consume --group` reads every record once across two runs: the
// second run starts from what the first committed.
func TestConsumeCommandWithGroup(t *testing.T) {
	t.Parallel()
	_, _, url := groupTestClient(t)
	silt(t, nil, "topic", "create", "g", "--partitions", "2", "--url", url).ok(t)
	var in strings.Builder
	for i := 0; i < 10; i++ {
		fmt.Fprintf(&in, "k%d:v%d\n", i, i)
	}
	silt(t, strings.NewReader(in.String()), "produce", "g", "-K", ":", "--url", url).ok(t)
	first := silt(t, nil, "consume", "g", "--group", "cg", "--offset", "earliest", "--max-records", "6", "--format", "value", "--url", url).ok(t)
	second := silt(t, nil, "consume", "g", "--group", "cg", "--offset", "earliest", "--max-records", "4", "--format", "value", "--url", url).ok(t)
	seen := map[string]int{}
	for _, line := range strings.Fields(first.stdout + second.stdout) {
		seen[line]++
	}
	for i := 0; i < 10; i++ {
		if v := fmt.Sprintf("v%d", i); seen[v] != 1 {
			t.Fatalf("%s read %d times across the two runs: %q then %q", v, seen[v], first.stdout, second.stdout)
		}
	}
	silt(t, nil, "consume", "g", "--group", "cg", "--partition", "0", "--url", url).fails(t, "--partition")
}
