package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"silt/client"
	"silt/problem"
)

// Workload is one kind of client activity. Each records its operations in
// the history; Run returns when ctx ends.
//
// The HTTP workloads are below; KafkaMember (kafkagroup.go) joins a
// Kafka consumer group with franz-go through the load balancer's Kafka
// port and records FGroupJoin/FGroupFetch/FGroupCommit events under its
// own group name, checked by the same group verdicts (contiguity, commits
// that skip, stuck consumers, reads the log contradicts).
type Workload interface {
	Name() string
	Run(ctx context.Context)
}

// workloadEnv is what workloads share.
type workloadEnv struct {
	rec        *Recorder
	lb         string   // the API through HAProxy
	agents     []string // each agent's own URL
	kafka      string   // the Kafka listener through HAProxy (host:port)
	token      string   // the admin API key
	topic      string
	partitions int32
	seed       uint64
	logf       func(format string, args ...any)
}

// classify turns a request's error into an outcome: OK without error; a
// certain failure when the agent refused the request (4xx, 429) and
// nothing was retried; otherwise unknown.
func classify(err error, retried bool) (Type, Event) {
	if err == nil {
		return OK, Event{}
	}
	ev := Event{Error: err.Error()}
	var ce *client.Error
	if errors.As(err, &ce) {
		ev.Status, ev.Code = ce.Status, string(ce.Code)
		if ce.Status >= 400 && ce.Status < 500 && !retried {
			return Fail, ev
		}
	}
	return Info, ev
}

func httpClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 30 * time.Second}}
}

// Producer sends unique values, one request at a time, through the load
// balancer, with no retries: each value is sent once.
type Producer struct {
	ID  int
	env *workloadEnv
}

func (p *Producer) Name() string { return "plain-" + strconv.Itoa(p.ID) }

func (p *Producer) Run(ctx context.Context) {
	cl, err := client.New(p.env.lb, client.WithToken(p.env.token), client.WithHTTPClient(httpClient(15*time.Second)))
	if err != nil {
		panic(err)
	}
	rng := rand.New(rand.NewPCG(p.env.seed, uint64(p.ID)))
	name := p.Name()
	for seq := 0; ctx.Err() == nil; {
		n := 1 + rng.IntN(4)
		msgs := make([]client.Message, n)
		recs := make([]Rec, n)
		for i := range msgs {
			seq++
			part := rng.Int32N(p.env.partitions)
			v := fmt.Sprintf("%s/%d", name, seq)
			msgs[i] = client.Message{Partition: client.Partition(part), Value: []byte(v)}
			recs[i] = Rec{P: part, O: -1, V: v}
		}
		op := p.env.rec.Invoke(Event{Process: name, F: FProduce, Records: recs})
		// Not bound to ctx: a request is never abandoned midway by the
		// end of the phase (its outcome would be unknown for no reason).
		res, err := cl.Produce(context.WithoutCancel(ctx), p.env.topic, msgs)
		t, ev := classify(err, false)
		if t == OK {
			ev.Records = offsetsOf(res, recs)
		}
		op.End(t, ev)
		pace(ctx, rng, t)
	}
}

func offsetsOf(res client.ProduceResult, recs []Rec) []Rec {
	out := make([]Rec, len(recs))
	for i := range recs {
		out[i] = recs[i]
		if i < len(res.Offsets) {
			out[i].P, out[i].O = res.Offsets[i].Partition, res.Offsets[i].Offset
		}
	}
	return out
}

// pace waits a little between requests, longer after a failure.
func pace(ctx context.Context, rng *rand.Rand, t Type) {
	d := time.Duration(20+rng.IntN(60)) * time.Millisecond
	if t != OK {
		d = time.Duration(200+rng.IntN(300)) * time.Millisecond
	}
	sleepCtx(ctx, d)
}

// rotating sends each request to the next agent in turn: an idempotent
// producer's retry goes to another agent than the try before.
type rotating struct {
	hosts []*url.URL
	next  atomic.Uint64
	base  http.RoundTripper
}

func (r *rotating) RoundTrip(req *http.Request) (*http.Response, error) {
	u := r.hosts[int(r.next.Add(1)%uint64(len(r.hosts)))]
	out := req.Clone(req.Context())
	out.URL.Scheme, out.URL.Host, out.Host = u.Scheme, u.Host, ""
	return r.base.RoundTrip(out)
}

// IdemProducer sends unique values with the Go client's
// IdempotentProducer, whose retries (after timeouts, dropped connections,
// 503s) go to a different agent each time.
type IdemProducer struct {
	ID  int
	env *workloadEnv
}

func (p *IdemProducer) Name() string { return "idem-" + strconv.Itoa(p.ID) }

func (p *IdemProducer) Run(ctx context.Context) {
	rt := &rotating{base: &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}}
	for _, a := range p.env.agents {
		u, err := url.Parse(a)
		if err != nil {
			panic(err)
		}
		rt.hosts = append(rt.hosts, u)
	}
	rt.next.Store(uint64(p.ID))
	cl, err := client.New(p.env.agents[0], client.WithToken(p.env.token), client.WithHTTPClient(&http.Client{Transport: rt, Timeout: 20 * time.Second}),
		client.WithRetry(client.RetryPolicy{MaxAttempts: 5, Backoff: 100 * time.Millisecond, MaxBackoff: time.Second, MaxElapsed: 20 * time.Second}))
	if err != nil {
		panic(err)
	}
	rng := rand.New(rand.NewPCG(p.env.seed, 1000+uint64(p.ID)))
	name := p.Name()
	var prod *client.IdempotentProducer
	for seq := 0; ctx.Err() == nil; {
		if prod == nil {
			// A short try timeout: a try that is slow (a stalled agent,
			// latency to Postgres) is resent to the next agent while the
			// first may still commit, which is what the producer ids and
			// sequences must make harmless.
			prod, err = cl.NewIdempotentProducer(ctx, p.env.topic, client.IdempotentOptions{Retry: client.RetryPolicy{
				MaxAttempts: 30, Backoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second, MaxElapsed: time.Minute, AttemptTimeout: 1500 * time.Millisecond,
			}})
			if err != nil {
				sleepCtx(ctx, 500*time.Millisecond)
				continue
			}
		}
		n := 1 + rng.IntN(4)
		msgs := make([]client.Message, n)
		recs := make([]Rec, n)
		for i := range msgs {
			seq++
			part := rng.Int32N(p.env.partitions)
			v := fmt.Sprintf("%s/%d", name, seq)
			msgs[i] = client.Message{Partition: client.Partition(part), Value: []byte(v)}
			recs[i] = Rec{P: part, O: -1, V: v}
		}
		op := p.env.rec.Invoke(Event{Process: name, F: FIdemProduce, Records: recs})
		res, err := prod.Send(context.WithoutCancel(ctx), msgs)
		t, ev := classify(err, true)
		if t == OK {
			ev.Records, ev.Duplicate = offsetsOf(res, recs), res.Duplicate
		}
		op.End(t, ev)
		pace(ctx, rng, t)
	}
}

// GroupMember consumes the topic as a member of an HTTP consumer group
// with manual commits: fetch (the group fetch), process, commit the
// positions. It rejoins after a rebalance or a fetch without an answer,
// joins afresh when its membership is gone, and now and then leaves and
// joins again to cause rebalances.
type GroupMember struct {
	ID    int
	Group string
	env   *workloadEnv
	// progress: the highest offset handed to any member, per partition
	// (shared by the members of the group).
	progress *progress
}

func (m *GroupMember) Name() string { return "group-" + strconv.Itoa(m.ID) }

// progress tracks how far consumers got, for the drain at the end.
type progress struct {
	mu   sync.Mutex
	next map[string]map[int32]int64 // consumer -> partition -> next offset
}

func newProgress() *progress { return &progress{next: map[string]map[int32]int64{}} }

func (p *progress) advance(who string, part int32, next int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next[who] == nil {
		p.next[who] = map[int32]int64{}
	}
	if next > p.next[who][part] {
		p.next[who][part] = next
	}
}

// caughtUp reports whether who reached hwm in every partition it covers
// (parts nil: every partition in hwm).
func (p *progress) caughtUp(who string, hwm map[int32]int64, parts []int32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if parts == nil {
		for part := range hwm {
			parts = append(parts, part)
		}
	}
	for _, part := range parts {
		if p.next[who][part] < hwm[part] {
			return false
		}
	}
	return true
}

func (m *GroupMember) Run(ctx context.Context) {
	cl, err := client.New(m.env.lb, client.WithToken(m.env.token), client.WithHTTPClient(httpClient(20*time.Second)))
	if err != nil {
		panic(err)
	}
	rng := rand.New(rand.NewPCG(m.env.seed, 2000+uint64(m.ID)))
	name := m.Name()
	var member string
	var gen int64
	join := func() bool {
		op := m.env.rec.Invoke(Event{Process: name, F: FGroupJoin, Group: m.Group, Member: member})
		res, err := cl.JoinGroup(context.WithoutCancel(ctx), m.Group, client.JoinGroupRequest{
			MemberID: member, Topics: []string{m.env.topic}, SessionTimeout: 10 * time.Second, AutoOffsetReset: client.ResetEarliest,
		})
		t, ev := classify(err, false)
		if t == OK {
			member, gen = res.MemberID, res.Generation
			ev.Member, ev.Generation = member, gen
			for _, a := range res.Assignments {
				ev.Offsets = append(ev.Offsets, Offset{P: a.Partition, O: a.Offset})
			}
		} else if client.IsCode(err, problem.CodeMemberNotFound) {
			member = ""
		}
		op.End(t, ev)
		return t == OK
	}
	for ctx.Err() == nil {
		if member == "" || gen == 0 {
			if !join() {
				sleepCtx(ctx, 300*time.Millisecond)
			}
			continue
		}
		if rng.IntN(200) == 0 {
			op := m.env.rec.Invoke(Event{Process: name, F: FGroupLeave, Group: m.Group, Member: member, Generation: gen})
			err := cl.LeaveGroup(context.WithoutCancel(ctx), m.Group, member)
			t, ev := classify(err, false)
			op.End(t, ev)
			member, gen = "", 0
			continue
		}
		op := m.env.rec.Invoke(Event{Process: name, F: FGroupFetch, Group: m.Group, Member: member, Generation: gen})
		res, err := cl.GroupFetch(context.WithoutCancel(ctx), m.Group, member, client.GroupFetchOptions{MaxRecords: 500, Wait: time.Second})
		t, ev := classify(err, false)
		if t != OK {
			op.End(t, ev)
			if client.IsCode(err, problem.CodeMemberNotFound) {
				member = ""
			}
			gen = 0 // rejoin (with the member id) before fetching again
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		handed := map[int32]int64{}
		for _, r := range res.Records {
			ev.Records = append(ev.Records, Rec{P: r.Partition, O: r.Offset, V: string(r.Value)})
			handed[r.Partition] = r.Offset + 1
		}
		for _, p := range res.Positions {
			ev.Offsets = append(ev.Offsets, Offset{P: p.Partition, O: p.Offset})
		}
		op.End(OK, ev)
		for part, next := range handed {
			m.progress.advance("group "+m.Group, part, next)
		}
		if len(res.Records) == 0 {
			continue
		}
		// "Process", then commit what was handed.
		var commits []client.OffsetCommit
		var offs []Offset
		for _, p := range res.Positions {
			if _, ok := handed[p.Partition]; !ok {
				continue
			}
			commits = append(commits, client.OffsetCommit{Topic: p.Topic, TopicID: p.TopicID, Partition: p.Partition, Offset: p.Offset})
			offs = append(offs, Offset{P: p.Partition, O: p.Offset})
		}
		if len(commits) == 0 {
			continue
		}
		cop := m.env.rec.Invoke(Event{Process: name, F: FGroupCommit, Group: m.Group, Member: member, Generation: gen, Offsets: offs})
		err = cl.CommitOffsets(context.WithoutCancel(ctx), m.Group, member, gen, commits)
		t, ev = classify(err, false)
		cop.End(t, ev)
		switch {
		case client.IsCode(err, problem.CodeMemberNotFound):
			member, gen = "", 0
		case err != nil:
			gen = 0
		}
	}
	if member != "" {
		op := m.env.rec.Invoke(Event{Process: name, F: FGroupLeave, Group: m.Group, Member: member, Generation: gen})
		err := cl.LeaveGroup(context.Background(), m.Group, member)
		t, ev := classify(err, false)
		op.End(t, ev)
	}
}

// Tail follows one partition over Server-Sent Events from offset 0 with
// the Go client's Stream, which reconnects (through the load balancer,
// to any agent) with Last-Event-ID.
type Tail struct {
	Partition int32
	env       *workloadEnv
	progress  *progress
}

func (t *Tail) Name() string { return "sse-" + strconv.Itoa(int(t.Partition)) }

func (t *Tail) Run(ctx context.Context) {
	cl, err := client.New(t.env.lb, client.WithToken(t.env.token), client.WithHTTPClient(&http.Client{Transport: &http.Transport{IdleConnTimeout: 30 * time.Second}}))
	if err != nil {
		panic(err)
	}
	name := t.Name()
	next := int64(0)
	for ctx.Err() == nil {
		for r, err := range cl.Stream(ctx, t.env.topic, t.Partition, next, client.StreamOptions{IdleTimeout: 20 * time.Second, MaxBackoff: time.Second}) {
			if err != nil {
				// Permanent for the client; start over after the last
				// record received.
				t.env.rec.Single(Info, Event{Process: name, F: FSSERead, Error: err.Error()})
				sleepCtx(ctx, time.Second)
				break
			}
			t.env.rec.Single(OK, Event{Process: name, F: FSSERead, Records: []Rec{{P: t.Partition, O: r.Offset, V: string(r.Value)}}})
			next = r.Offset + 1
			t.progress.advance(name, t.Partition, next)
		}
	}
}

// Monitor asks the cluster who owns which partition every second.
type Monitor struct {
	env *workloadEnv
}

func (m *Monitor) Name() string { return "monitor" }

func (m *Monitor) Run(ctx context.Context) {
	hc := httpClient(5 * time.Second)
	for sleepCtx(ctx, time.Second) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.env.lb+"/v1/cluster?limit=1000", nil)
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer "+m.env.token)
		resp, err := hc.Do(req)
		if err != nil {
			continue
		}
		var body struct {
			Agents []struct {
				ID         string `json:"id"`
				Partitions []struct {
					Topic     string `json:"topic"`
					Partition int32  `json:"partition"`
					Epoch     int64  `json:"epoch"`
				} `json:"partitions"`
			} `json:"agents"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			continue
		}
		var owners []Owner
		for _, a := range body.Agents {
			for _, p := range a.Partitions {
				owners = append(owners, Owner{Topic: p.Topic, P: p.Partition, Epoch: p.Epoch, Agent: a.ID})
			}
		}
		m.env.rec.Single(OK, Event{Process: "monitor", F: FOwners, Owners: owners})
	}
}
