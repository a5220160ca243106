package scale

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"silt/groups"
	"silt/metadata"
	"silt/migrations"
)

// CreateDatabase creates a fresh database named prefix plus random hex on
// the server of adminURL and returns its URL and a function that drops it.
func CreateDatabase(ctx context.Context, adminURL, prefix string) (string, func(context.Context) error, error) {
	var b [5]byte
	_, _ = rand.Read(b[:])
	name := prefix + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", nil, fmt.Errorf("scale: connect: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("scale: create database: %w", err)
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", nil, fmt.Errorf("scale: database URL: %w", err)
	}
	u.Path = "/" + name
	drop := func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			return fmt.Errorf("scale: connect to drop %s: %w", name, err)
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
		return err
	}
	return u.String(), drop, nil
}

// openStore opens a store for one simulated agent, with an agent's session
// bounds, or, named "setup", for creating topics and groups, whose
// statements may take longer than an agent's.
func openStore(ctx context.Context, dbURL, name string, poolSize int, logger *slog.Logger) (*metadata.Store, error) {
	cfg := metadata.DefaultConfig()
	if name == "setup" {
		cfg.Session.StatementTimeout = 10 * time.Minute
	}
	cfg.URL = dbURL
	cfg.MaxConns = int32(poolSize)
	cfg.MaxClusterPartitions = 0
	cfg.ApplicationName = "silt scale " + name
	cfg.Logger = logger
	return metadata.Open(ctx, cfg)
}

// cluster is the topics and groups a run works on.
type cluster struct {
	topicIDs []int64 // load topics, by index
	parts    int     // partitions per load topic
	// hwm is every load partition's high watermark as the simulation
	// knows it (by global index topic*parts + partition).
	hwm []atomic.Int64

	groupTopics map[string]metadata.GroupTopic
	groups      []simGroup
}

type simGroup struct {
	name    string
	topic   string
	members []string
	assign  map[string][]metadata.GroupPartition
}

// setup migrates the database and creates the run's topics and groups.
func setup(ctx context.Context, store *metadata.Store, cfg Config, pr logf) (*cluster, error) {
	if _, err := migrations.Apply(ctx, store.Pool()); err != nil {
		return nil, fmt.Errorf("scale: migrate: %w", err)
	}
	c := &cluster{parts: cfg.Partitions, groupTopics: map[string]metadata.GroupTopic{}}
	tcfg := metadata.DefaultTopicConfig()
	for i := 0; i < cfg.Topics; i++ {
		start := time.Now()
		t, err := store.CreateTopic(ctx, fmt.Sprintf("load-%d", i), int32(cfg.Partitions), tcfg)
		if err != nil {
			return nil, fmt.Errorf("scale: create topic: %w", err)
		}
		if cfg.Partitions >= 10_000 {
			pr("created a topic of %d partitions in %v", cfg.Partitions, time.Since(start).Round(time.Millisecond))
		}
		c.topicIDs = append(c.topicIDs, t.ID)
	}
	c.hwm = make([]atomic.Int64, cfg.Topics*cfg.Partitions)
	if cfg.Groups > 0 {
		for i := 0; i < cfg.GroupTopics; i++ {
			name := fmt.Sprintf("group-topic-%d", i)
			t, err := store.CreateTopic(ctx, name, int32(cfg.GroupTopicPartitions), tcfg)
			if err != nil {
				return nil, fmt.Errorf("scale: create topic: %w", err)
			}
			c.groupTopics[name] = metadata.GroupTopic{ID: t.ID, Partitions: t.Partitions}
		}
		start := time.Now()
		if err := c.makeGroups(ctx, store, cfg); err != nil {
			return nil, err
		}
		pr("created %d groups of %d members in %v", cfg.Groups, cfg.GroupMembers, time.Since(start).Round(time.Millisecond))
	}
	return c, nil
}

// makeGroups writes the groups as a stable group would be after every
// member joined: generation 1, every member at it with its range
// assignment. Joining 100,000 members one by one through the coordinator
// would take longer than the runs; the simulation then heartbeats and
// commits through the real coordinator, which rejoins when told to.
func (c *cluster) makeGroups(ctx context.Context, store *metadata.Store, cfg Config) error {
	const chunk = 2000
	var (
		names, gtopics []string
		mGroup         []string
		mID            []string
		mTopic         []string
		mAssign        []string
	)
	flush := func() error {
		if len(names) == 0 {
			return nil
		}
		_, err := store.Pool().Exec(ctx, `
			WITH g AS (
				INSERT INTO groups (name, generation, topics)
				SELECT n, 1, jsonb_build_object(t, jsonb_build_array((SELECT id FROM topics WHERE name = t), (SELECT partitions FROM topics WHERE name = t)))
				FROM unnest($1::text[], $2::text[]) AS u(n, t)
				RETURNING id, name
			)
			INSERT INTO group_members (group_id, member_id, topics, session_timeout_ms, auto_offset_reset, generation,
			                           assignment, assignment_generation, positions, joined_at, heartbeat_at)
			SELECT g.id, m.id, ARRAY[m.topic], 45000, 'latest', 1, m.assignment::jsonb, 1, '[]', now() - interval '1 second', now()
			FROM unnest($3::text[], $4::text[], $5::text[], $6::text[]) AS m(grp, id, topic, assignment)
			JOIN g ON g.name = m.grp`, names, gtopics, mGroup, mID, mTopic, mAssign)
		names, gtopics, mGroup, mID, mTopic, mAssign = nil, nil, nil, nil, nil, nil
		if err != nil {
			return fmt.Errorf("scale: create groups: %w", err)
		}
		return nil
	}
	for g := 0; g < cfg.Groups; g++ {
		topic := fmt.Sprintf("group-topic-%d", g%cfg.GroupTopics)
		sg := simGroup{name: fmt.Sprintf("group-%d", g), topic: topic}
		subs := map[string][]string{}
		for m := 0; m < cfg.GroupMembers; m++ {
			id := fmt.Sprintf("m-sim%06d%016d", g, m)
			sg.members = append(sg.members, id)
			subs[id] = []string{topic}
		}
		sg.assign = groups.RangeAssign(subs, map[string]metadata.GroupTopic{topic: c.groupTopics[topic]})
		names = append(names, sg.name)
		gtopics = append(gtopics, topic)
		for _, id := range sg.members {
			raw, err := json.Marshal(sg.assign[id])
			if err != nil {
				return err
			}
			mGroup, mID, mTopic, mAssign = append(mGroup, sg.name), append(mID, id), append(mTopic, topic), append(mAssign, string(raw))
		}
		c.groups = append(c.groups, sg)
		if len(names) >= chunk {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// partition maps a global load partition index to its topic id and number.
func (c *cluster) partition(i int) (int64, int32) {
	return c.topicIDs[i/c.parts], int32(i % c.parts)
}

type logf func(format string, args ...any)

func quiet(string, ...any) {}

// orQuiet stands in for a nil logger and a nil progress printer: a
// logger that discards, and quiet.
func orQuiet(logger *slog.Logger, pr logf) (*slog.Logger, logf) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if pr == nil {
		pr = quiet
	}
	return logger, pr
}

// Env runs experiments on one Postgres server, each in a database of its
// own that is dropped afterwards unless Keep is set.
type Env struct {
	AdminURL string
	Keep     bool
	Logger   *slog.Logger
	// Log receives progress lines.
	Log func(format string, args ...any)
}

func (e Env) logf() logf {
	if e.Log == nil {
		return quiet
	}
	return e.Log
}

// database creates a fresh database and returns its URL and a cleanup.
func (e Env) database(ctx context.Context) (string, func(), error) {
	u, drop, err := CreateDatabase(ctx, e.AdminURL, "silt_scale_")
	if err != nil {
		return "", nil, err
	}
	return u, func() {
		if e.Keep {
			e.logf()("kept database %s", u)
			return
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		if err := drop(dctx); err != nil {
			e.logf()("%v", err)
		}
	}, nil
}

// Load runs RunLoad in a fresh database.
func (e Env) Load(ctx context.Context, cfg Config) (*LoadResult, error) {
	u, cleanup, err := e.database(ctx)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	cfg.DatabaseURL = u
	return RunLoad(ctx, cfg, e.Logger, e.logf())
}

// Converge runs RunConverge in a fresh database.
func (e Env) Converge(ctx context.Context, cfg Config, killFraction float64, timeout time.Duration) (*ConvergeResult, error) {
	u, cleanup, err := e.database(ctx)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	cfg.DatabaseURL = u
	return RunConverge(ctx, cfg, killFraction, timeout, e.Logger, e.logf())
}

// Index runs RunIndex in a fresh database.
func (e Env) Index(ctx context.Context, cfg IndexConfig) (*IndexResult, error) {
	u, cleanup, err := e.database(ctx)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	cfg.DatabaseURL = u
	return RunIndex(ctx, cfg, e.Logger, e.logf())
}

// Week runs RunWeek in a fresh database.
func (e Env) Week(ctx context.Context, cfg WeekConfig) (*WeekResult, error) {
	u, cleanup, err := e.database(ctx)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	cfg.DatabaseURL = u
	return RunWeek(ctx, cfg, e.Logger, e.logf())
}
