package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"silt/client"
	kc "silt/internal/kafkaclients"
	"silt/internal/testcerts"
	"silt/localstack"
)

// Kafka consumer groups through HAProxy in front of three agents, with
// keys required and TLS: every client authenticates with SASL PLAIN over
// TLS, and the members of a group reach different agents (HAProxy
// balances each connection to the least busy agent).
func TestLBKafkaGroups(t *testing.T) {
	ca := testcerts.NewCA(t, "silt-kafka")
	cert := ca.Server(t, "agent")
	c := startLBClusterTLS(t, 3, &localstack.ClusterTLS{CertFile: cert.CertFile, KeyFile: cert.KeyFile, CAFile: ca.File},
		"SILT_GROUP_INITIAL_REBALANCE_DELAY=1s")
	admin := kc.Broker{Addr: c.KafkaAddr, CAFile: ca.File}.WithKey(c.AdminKey)
	prod := kafkaClient(t, admin)
	hc := lbClient(t, c, newAgentTally())

	t.Run("kcat -G", func(t *testing.T) { kcatGroup(t, c, admin, prod, hc) })
	t.Run("confluent-kafka manual commits", func(t *testing.T) { confluentGroup(t, admin, prod) })
	t.Run("franz-go cooperative-sticky and static", func(t *testing.T) { franzGroup(t, admin, prod, hc) })
	t.Run("ten members", func(t *testing.T) { tenMembers(t, admin, prod) })
	// The members of the groups above reached every agent: a JoinGroup or
	// SyncGroup parked on one agent was woken by another's NOTIFY.
	served := map[string]int{}
	for _, a := range c.Agents() {
		served[a.ID] = groupRequests(t, c, a)
	}
	t.Logf("JoinGroup and SyncGroup requests served per agent: %v", served)
	busy := 0
	for _, n := range served {
		if n > 0 {
			busy++
		}
	}
	if busy < 2 {
		t.Fatalf("group requests reached %d agent(s): %v", busy, served)
	}
	t.Run("SASL", func(t *testing.T) { saslChecks(t, c, admin, prod, hc) })
}

// createKafkaTopic creates a topic over Kafka and fills it with n records
// keyed <topic>-0 ... <topic>-(n-1).
func createKafkaTopic(t *testing.T, cl *kgo.Client, topic string, partitions int32, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	adm := kadmOf(cl)
	res, err := adm.CreateTopics(ctx, partitions, -1, nil, topic)
	if err != nil || res[topic].Err != nil {
		t.Fatalf("create %s: %v %v", topic, err, res[topic].Err)
	}
	produceKeys(t, cl, topic, 0, n)
}

// produceKeys produces records keyed <topic>-from ... <topic>-(from+n-1).
func produceKeys(t *testing.T, cl *kgo.Client, topic string, from, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var recs []*kgo.Record
	for i := from; i < from+n; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("%s-%d", topic, i)), Value: []byte("v")})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// Three kcat -G members share six partitions; one is killed with SIGKILL
// (no LeaveGroup, no last commit) and the other two take its partitions
// once its session ends. Everything produced is read, at least once, with
// no gap in any partition; the HTTP view (silt group describe) shows the
// members, their assignment and the lag.
func kcatGroup(t *testing.T, c *localstack.Cluster, b kc.Broker, prod *kgo.Client, hc *client.Client) {
	const topic, group, parts = "kg-kcat", "kcat-group", int32(6)
	createKafkaTopic(t, prod, topic, parts, 300)
	settings := []string{"session.timeout.ms=6000", "heartbeat.interval.ms=500", "max.poll.interval.ms=20000",
		"auto.commit.interval.ms=500", "fetch.wait.max.ms=200"}
	var ms []*kc.KcatMember
	for i := range 3 {
		ms = append(ms, kc.StartKcatGroup(t, b, fmt.Sprintf("kcat-%d", i), group, topic, settings...))
	}
	logs := func() string {
		var s []string
		for _, m := range ms {
			s = append(s, m.Name+":\n"+m.Log())
		}
		return strings.Join(s, "\n")
	}
	start := time.Now()
	for time.Since(start) < 90*time.Second {
		if len(ms[0].Assigned()) == 2 && len(ms[1].Assigned()) == 2 && len(ms[2].Assigned()) == 2 && kcatCovered(ms, parts, prod, topic) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !(len(ms[0].Assigned()) == 2 && len(ms[1].Assigned()) == 2 && len(ms[2].Assigned()) == 2) || !kcatCovered(ms, parts, prod, topic) {
		t.Fatalf("three members with two partitions each, everything read: %v %v %v\n%s", ms[0].Assigned(), ms[1].Assigned(), ms[2].Assigned(), logs())
	}

	// The HTTP view of the Kafka group: silt group describe.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	waitFor(t, "lag 0 over HTTP", time.Minute, func() bool {
		offs, err := hc.GroupOffsets(ctx, group)
		if err != nil {
			t.Fatal(err)
		}
		total := int64(0)
		for _, o := range offs {
			total += o.Lag
		}
		return len(offs) == int(parts) && total == 0
	})
	out := siltCLI(t, c, "group", "describe", group)
	for _, want := range []string{"State:       stable", "Members:     3", topic + "/", "LAG"} {
		if !strings.Contains(out, want) {
			t.Fatalf("silt group describe: no %q in\n%s", want, out)
		}
	}
	var d struct {
		Group struct {
			Members []struct {
				Topics      []string `json:"topics"`
				Assignments []struct {
					Partition int32 `json:"partition"`
				} `json:"assignments"`
			} `json:"members"`
		} `json:"group"`
		Offsets []struct {
			Lag int64 `json:"lag"`
		} `json:"offsets"`
	}
	if err := json.Unmarshal([]byte(siltCLI(t, c, "group", "describe", group, "--output", "json")), &d); err != nil {
		t.Fatal(err)
	}
	assigned := 0
	for _, m := range d.Group.Members {
		assigned += len(m.Assignments)
		if len(m.Topics) != 1 || m.Topics[0] != topic {
			t.Fatalf("member topics %v", m.Topics)
		}
	}
	if len(d.Group.Members) != 3 || assigned != int(parts) || len(d.Offsets) != int(parts) {
		t.Fatalf("silt group describe --output json: %+v", d)
	}

	// SIGKILL one; the two others take its partitions.
	victim := ms[2]
	lost := victim.Assigned()
	victim.Kill()
	killed := time.Now()
	produceKeys(t, prod, topic, 300, 300)
	settled := waitFor(t, "the two members left to share the six partitions", time.Minute, func() bool {
		return len(ms[0].Assigned())+len(ms[1].Assigned()) == int(parts) && len(ms[0].Assigned()) == 3
	})
	var taken time.Duration
	for _, p := range lost {
		for _, m := range ms[:2] {
			if at := m.AssignedAt(p); at.After(killed) {
				taken = max(taken, at.Sub(killed))
			}
		}
	}
	t.Logf("kcat member killed with SIGKILL: its partitions %v were assigned to the others %v after the kill (session timeout 6 s); settled within %v",
		lost, taken.Round(time.Millisecond), settled.Round(time.Millisecond))
	waitFor(t, "all 600 records read with no gap", time.Minute, func() bool { return kcatCovered(ms, parts, prod, topic) })
	dups := 0
	seen := map[string]int{}
	for _, m := range ms {
		for _, r := range m.Records() {
			seen[r.Key]++
		}
	}
	for _, n := range seen {
		dups += n - 1
	}
	t.Logf("kcat -G: %d records read, %d of them twice (at least once after the kill)", len(seen)+dups, dups)
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	for _, m := range ms[:2] {
		if err := m.Stop(sctx); err != nil {
			t.Error(err)
		}
	}
}

// kcatCovered reports whether the members together read every offset of
// every partition up to its high watermark (no gap).
func kcatCovered(ms []*kc.KcatMember, parts int32, cl *kgo.Client, topic string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := kadmOf(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return false
	}
	read := map[int32]map[int64]bool{}
	for _, m := range ms {
		for _, r := range m.Records() {
			if read[r.Partition] == nil {
				read[r.Partition] = map[int64]bool{}
			}
			read[r.Partition][r.Offset] = true
		}
	}
	for p := range parts {
		end, ok := ends.Lookup(topic, p)
		if !ok || end.Err != nil {
			return false
		}
		for o := int64(0); o < end.Offset; o++ {
			if !read[p][o] {
				return false
			}
		}
	}
	return true
}

// siltCLI runs the silt CLI against the cluster with the admin key.
func siltCLI(t *testing.T, c *localstack.Cluster, args ...string) string {
	t.Helper()
	cmd := exec.Command(siltBinary(t), args...)
	cmd.Env = append(cmd.Environ(), "SILT_URL="+c.LBURL, "SILT_TOKEN="+c.AdminKey)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("silt %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// A confluent-kafka (librdkafka) member with auto-commit off commits by
// hand after each batch; a new process in the same group resumes exactly
// at the commits: nothing read twice, nothing skipped.
func confluentGroup(t *testing.T, b kc.Broker, prod *kgo.Client) {
	const topic, group, parts = "kg-confluent", "confluent-group", int32(3)
	createKafkaTopic(t, prod, topic, parts, 200)
	first := kc.ConfluentGroupConsume(t, b, topic, group, 120)
	// The committed offsets are right after the last record read.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	offs, err := kadmOf(prod).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	next := map[int32]int64{}
	for _, r := range first {
		next[r.Partition] = max(next[r.Partition], r.Offset+1)
	}
	for p, want := range next {
		if o, ok := offs.Lookup(topic, p); !ok || o.At != want {
			t.Fatalf("partition %d committed at %+v, want %d", p, o, want)
		}
	}
	second := kc.ConfluentGroupConsume(t, b, topic, group, 80)
	seen := map[[2]int64]bool{}
	for _, r := range append(first, second...) {
		k := [2]int64{int64(r.Partition), r.Offset}
		if seen[k] {
			t.Fatalf("record %v read twice", k)
		}
		seen[k] = true
	}
	for _, r := range second {
		if r.Offset < next[r.Partition] {
			t.Fatalf("the restarted member read %d/%d, before the commit at %d", r.Partition, r.Offset, next[r.Partition])
		}
	}
	if len(seen) != 200 {
		t.Fatalf("%d distinct records read, want 200", len(seen))
	}
}

// franzMember is a franz-go group member that counts its assignments and
// revocations.
type franzMember struct {
	cl       *kgo.Client
	mu       sync.Mutex
	owned    map[int32]bool
	assigns  int
	revokes  int
	read     map[string]bool
	firstAt  time.Time
	cancel   context.CancelFunc
	finished chan struct{}
}

func startFranz(t *testing.T, b kc.Broker, group, topic string, opts ...kgo.Opt) *franzMember {
	t.Helper()
	m := &franzMember{owned: map[int32]bool{}, read: map[string]bool{}, finished: make(chan struct{})}
	base := []kgo.Opt{kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(6 * time.Second), kgo.HeartbeatInterval(500 * time.Millisecond), kgo.RebalanceTimeout(20 * time.Second),
		kgo.FetchMaxWait(300 * time.Millisecond), kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, as map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			m.assigns++
			for _, p := range as[topic] {
				m.owned[p] = true
			}
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, rs map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			if len(rs[topic]) > 0 {
				m.revokes++
			}
			for _, p := range rs[topic] {
				delete(m.owned, p)
			}
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, ls map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, p := range ls[topic] {
				delete(m.owned, p)
			}
		}),
	}
	m.cl = kafkaClient(t, b, append(base, opts...)...)
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() {
		defer close(m.finished)
		for ctx.Err() == nil {
			fs := m.cl.PollFetches(ctx)
			fs.EachRecord(func(r *kgo.Record) {
				m.mu.Lock()
				if m.firstAt.IsZero() {
					m.firstAt = time.Now()
				}
				m.read[string(r.Key)] = true
				m.mu.Unlock()
			})
		}
	}()
	t.Cleanup(m.close)
	return m
}

func (m *franzMember) close() {
	m.cancel()
	<-m.finished
	m.cl.Close()
}

func (m *franzMember) partitions() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []int32
	for p := range m.owned {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

func (m *franzMember) counts() (assigns, revokes int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.assigns, m.revokes
}

// Two franz-go members under the cooperative-sticky balancer, one of them
// static (group.instance.id). The static member's process stops (a static
// member does not leave) and a new one with the same instance id takes
// its place: same partitions, same generation, and the other member sees
// no rebalance at all.
func franzGroup(t *testing.T, b kc.Broker, prod *kgo.Client, hc *client.Client) {
	const topic, group, parts = "kg-franz", "franz-group", int32(4)
	createKafkaTopic(t, prod, topic, parts, 100)
	dyn := startFranz(t, b, group, topic)
	static := startFranz(t, b, group, topic, kgo.InstanceID("static-1"))
	waitFor(t, "two members with two partitions each", time.Minute, func() bool {
		return len(dyn.partitions()) == 2 && len(static.partitions()) == 2
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dg, err := kadmOf(prod).DescribeGroups(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if g := dg[group]; g.Protocol != "cooperative-sticky" || g.State != "Stable" || len(g.Members) != 2 {
		t.Fatalf("describe: %+v", g)
	}
	before, err := hc.DescribeGroup(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	owned := static.partitions()
	assigns, revokes := dyn.counts()
	static.close()
	again := startFranz(t, b, group, topic, kgo.InstanceID("static-1"))
	waitFor(t, "the static member back with its partitions", time.Minute, func() bool { return slices.Equal(again.partitions(), owned) })
	after, err := hc.DescribeGroup(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if after.Generation != before.Generation || len(after.Members) != 2 {
		t.Fatalf("generation %d -> %d, members %d: the static member's return rebalanced", before.Generation, after.Generation, len(after.Members))
	}
	if a, r := dyn.counts(); a != assigns || r != revokes {
		t.Fatalf("the other member saw a rebalance: assigned %d -> %d times, revoked %d -> %d", assigns, a, revokes, r)
	}
	// A third member: cooperative, so the others keep what they keep.
	third := startFranz(t, b, group, topic)
	waitFor(t, "three members", time.Minute, func() bool {
		return len(third.partitions()) >= 1 && len(dyn.partitions())+len(again.partitions())+len(third.partitions()) == int(parts)
	})
}

// Ten franz-go members of one group, spread by the load balancer over the
// three agents: the time from starting them to the first record each
// reads, and from one member leaving to the nine left owning every
// partition again. Measured, not asserted (docs/kafka.md).
func tenMembers(t *testing.T, b kc.Broker, prod *kgo.Client) {
	const topic, group, parts = "kg-ten", "ten-group", int32(20)
	createKafkaTopic(t, prod, topic, parts, 400)
	start := time.Now()
	var ms []*franzMember
	for range 10 {
		ms = append(ms, startFranz(t, b, group, topic))
	}
	waitFor(t, "every member reading", 2*time.Minute, func() bool {
		for _, m := range ms {
			m.mu.Lock()
			first := m.firstAt
			m.mu.Unlock()
			if first.IsZero() {
				return false
			}
		}
		return true
	})
	var firsts []time.Duration
	for _, m := range ms {
		firsts = append(firsts, m.firstAt.Sub(start))
	}
	sort.Slice(firsts, func(i, j int) bool { return firsts[i] < firsts[j] })
	t.Logf("10 members: join to first record %v (first) %v (median) %v (last), with a 1 s initial rebalance delay",
		firsts[0].Round(time.Millisecond), firsts[4].Round(time.Millisecond), firsts[9].Round(time.Millisecond))
	// One leaves (LeaveGroup): the nine take its partitions.
	ms[9].close()
	settled := waitFor(t, "nine members owning every partition", time.Minute, func() bool {
		n := 0
		for _, m := range ms[:9] {
			n += len(m.partitions())
		}
		return n == int(parts)
	})
	t.Logf("10 members: one left; the nine own every partition again after %v", settled.Round(time.Millisecond))
}

// SASL over TLS: a wrong password fails, a key without a topic's ACL gets
// TOPIC_AUTHORIZATION_FAILED (and GROUP_AUTHORIZATION_FAILED for a group),
// a revoked key fails on its next request, and a connection that does
// not authenticate is closed at its first other request.
func saslChecks(t *testing.T, c *localstack.Cluster, admin kc.Broker, prod *kgo.Client, hc *client.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	createKafkaTopic(t, prod, "sasl-ok", 1, 1)
	createKafkaTopic(t, prod, "sasl-other", 1, 1)
	created, err := hc.CreateKey(ctx, client.NewKey{Name: "kafka-app",
		Allow: []string{"produce,consume:topic:sasl-ok", "consume:group:sasl-app"}})
	if err != nil {
		t.Fatal(err)
	}
	app := kc.Broker{Addr: admin.Addr, CAFile: admin.CAFile}.WithKey(created.Token)
	appCl := kafkaClient(t, app, kgo.RetryTimeout(5*time.Second))
	if err := appCl.ProduceSync(ctx, &kgo.Record{Topic: "sasl-ok", Value: []byte("mine")}).FirstErr(); err != nil {
		t.Fatalf("produce to its topic: %v", err)
	}
	err = appCl.ProduceSync(ctx, &kgo.Record{Topic: "sasl-other", Value: []byte("not mine")}).FirstErr()
	if !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("produce elsewhere: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	// librdkafka says the same.
	out, err := kc.TryRun(t, []byte("x\n"), "kcat", append(app.KcatArgs(), "-P", "-t", "sasl-other")...)
	if err == nil || !strings.Contains(err.Error(), "Topic authorization failed") {
		t.Fatalf("kcat produce elsewhere: %v %s", err, out)
	}
	if _, err := kadmOf(appCl).FetchOffsets(ctx, "not-its-group"); !errors.Is(err, kerr.GroupAuthorizationFailed) {
		t.Fatalf("another group: %v, want GROUP_AUTHORIZATION_FAILED", err)
	}
	// A wrong password.
	wrong := app
	wrong.Password = "silt_" + wrong.User + "_" + strings.Repeat("0", 64) // its id, another secret
	if _, err := kadmOf(kafkaClient(t, wrong, kgo.RetryTimeout(time.Second))).ListTopics(ctx); !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Fatalf("wrong password: %v, want SASL_AUTHENTICATION_FAILED", err)
	}
	if _, err := kc.TryRun(t, nil, "kcat", append(wrong.KcatArgs(), "-L")...); err == nil || !strings.Contains(err.Error(), "SASL authentication error") {
		t.Fatalf("kcat with a wrong password: %v", err)
	}
	// No SASL at all over TLS: only ApiVersions and SASL are answered.
	noAuth := kc.Broker{Addr: admin.Addr, CAFile: admin.CAFile}
	if _, err := kadmOf(kafkaClient(t, noAuth, kgo.RetryTimeout(time.Second))).ListTopics(ctx); err == nil {
		t.Fatal("a connection without SASL listed topics")
	}
	// Revoked: its next request fails.
	if _, err := hc.RevokeKey(ctx, created.Key.ID); err != nil {
		t.Fatal(err)
	}
	tries := 0
	var seen []string
	waitFor(t, "the revoked key refused", 30*time.Second, func() bool {
		tries++
		_, err := kadmOf(appCl).ListTopics(ctx)
		if len(seen) < 5 {
			seen = append(seen, fmt.Sprint(err))
		}
		return errors.Is(err, kerr.SaslAuthenticationFailed)
	})
	t.Logf("revoked key: refused at request %d after the revocation (answers: %q)", tries, seen)
	if _, err := kc.TryRun(t, []byte("x\n"), "kcat", append(app.KcatArgs(), "-P", "-t", "sasl-ok")...); err == nil ||
		!strings.Contains(err.Error(), "SASL authentication error") {
		t.Fatalf("kcat with a revoked key: %v", err)
	}
	_ = c
}

func kadmOf(cl *kgo.Client) *kadm.Client { return kadm.NewClient(cl) }

// groupRequests is the JoinGroup and SyncGroup requests an agent served,
// from its metrics.
func groupRequests(t *testing.T, c *localstack.Cluster, a *localstack.AgentProc) int {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: c.ClientTLS.Clone()}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(a.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, `silt_kafka_requests_total{api="JoinGroup"}`) || strings.HasPrefix(line, `silt_kafka_requests_total{api="SyncGroup"}`) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			n += int(v)
		}
	}
	return n
}
