package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrGroupNotFound: no consumer group has that name.
var ErrGroupNotFound = errors.New("metadata: group not found")

// ErrGroupChanged: a write in InGroupSnapshot met a change committed
// after its snapshot was taken; redo the work under InGroup.
var ErrGroupChanged = errors.New("metadata: group changed since the snapshot")

func init() { sentinels = append(sentinels, ErrGroupNotFound, ErrGroupChanged) }

// GroupTopic is a topic as a group's subscription sees it: its id (a
// deleted and re-created topic gets a new one) and partition count.
type GroupTopic struct {
	ID         int64
	Partitions int32
}

// GroupsChannel is the LISTEN/NOTIFY channel on which a transaction that
// changes a Kafka group's state (GroupTx.Notify) announces the group's id,
// so that JoinGroup and SyncGroup requests parked on any agent look again.
const GroupsChannel = "silt_groups"

// Group protocols: which door manages a group while it has members.
const (
	GroupProtocolHTTP  = "http"
	GroupProtocolKafka = "kafka"
)

// Kafka group states (Kafka's GroupCoordinator).
const (
	KafkaEmpty               = "empty"
	KafkaPreparingRebalance  = "preparing_rebalance"
	KafkaCompletingRebalance = "completing_rebalance"
	KafkaStable              = "stable"
)

// Kafka member phases in a rebalance.
const (
	PhaseNone    = ""
	PhaseJoining = "joining" // its JoinGroup counts for the next generation
	PhaseSyncing = "syncing" // in the generation, no SyncGroup yet
	PhaseSynced  = "synced"  // SyncGroup received
)

// Group is a consumer group's row.
type Group struct {
	ID         int64
	Name       string
	Generation int64
	// Topics is the subscription snapshot the current assignment was
	// computed from: the topics the members subscribed to that existed.
	Topics    map[string]GroupTopic
	CreatedAt time.Time
	UpdatedAt time.Time
	// Protocol is GroupProtocolHTTP or GroupProtocolKafka.
	Protocol string
	Kafka    KafkaGroupState
}

// KafkaGroupState is a Kafka group's protocol state.
type KafkaGroupState struct {
	State        string // KafkaEmpty, ...
	ProtocolType string // "consumer", "connect", ...
	ProtocolName string // the assignor of the current generation
	Leader       string // member id
	// RebalanceDeadline: see the migration 0006; nil when none.
	RebalanceDeadline *time.Time
	// JoinDelayUntil: the first rebalance of an empty group completes no
	// sooner; nil when none.
	JoinDelayUntil *time.Time
	// Pending are member ids handed out with MEMBER_ID_REQUIRED, with when
	// they expire.
	Pending map[string]time.Time
}

// GroupPartition is a partition assigned to a member.
type GroupPartition struct {
	Topic     string `json:"topic"`
	TopicID   int64  `json:"topic_id"`
	Partition int32  `json:"partition"`
}

// GroupPosition is where a member's server-side fetch continues in one
// partition.
type GroupPosition struct {
	TopicID   int64 `json:"topic_id"`
	Partition int32 `json:"partition"`
	Offset    int64 `json:"offset"`
}

// GroupMember is a member's row.
type GroupMember struct {
	ID              string
	Topics          []string
	SessionTimeout  time.Duration
	AutoOffsetReset string
	// Generation is the generation the member last joined at.
	Generation int64
	// Assignment was computed at AssignmentGeneration.
	Assignment           []GroupPartition
	AssignmentGeneration int64
	Positions            []GroupPosition
	JoinedAt             time.Time
	HeartbeatAt          time.Time

	// Kafka members only.
	InstanceID       string // group.instance.id; "" for dynamic members
	ClientID         string
	ClientHost       string
	RebalanceTimeout time.Duration
	// Protocols are the assignors the member offers, in its order of
	// preference, with their metadata.
	Protocols  []GroupProtocol
	KafkaPhase string // PhaseNone, PhaseJoining, ...
	// KafkaAssignment is the assignment the leader gave the member for
	// AssignmentGeneration, as sent (nil when none).
	KafkaAssignment []byte
}

// GroupProtocol is an assignor a Kafka member offers, with its metadata.
type GroupProtocol struct {
	Name     string
	Metadata []byte
}

// TopicPartition names a partition by topic id.
type TopicPartition struct {
	TopicID   int64
	Partition int32
}

// GroupPartitionOffsets are a partition's offsets as a group sees them.
type GroupPartitionOffsets struct {
	LogStartOffset int64
	HighWatermark  int64
	// Committed is nil when the group committed nothing there.
	Committed *int64
	Metadata  string
}

// GroupCommit is one offset to commit.
type GroupCommit struct {
	TopicID   int64
	Partition int32
	Offset    int64
	Metadata  string
}

// GroupTx is a consumer group locked for the length of one transaction
// (the group's lock, see GroupLockClass, exclusive or shared): every
// decision taken through it is serialized with those of other agents. The group, its members and the
// state of the topics they subscribe to are read when the lock is taken;
// the methods write through to the transaction but do not update that
// snapshot.
type GroupTx struct {
	tx      pgx.Tx
	group   Group
	now     time.Time
	members []GroupMember
	topics  map[string]GroupTopic
	created bool
}

// Group returns the locked group's row.
func (g *GroupTx) Group() Group { return g.group }

// Created reports whether this transaction created the group.
func (g *GroupTx) Created() bool { return g.created }

// Now is the database's clock, read once the lock was taken.
func (g *GroupTx) Now() time.Time { return g.now }

// Members returns the members, ordered by id, as read under the lock.
func (g *GroupTx) Members() []GroupMember { return g.members }

// SubscribedTopics returns the current state of every existing topic some
// member subscribes to, as read under the lock.
func (g *GroupTx) SubscribedTopics() map[string]GroupTopic { return g.topics }

// GroupLockClass is the first key of the transaction advisory locks that
// stand for consumer groups: group NAME's lock is
// pg_advisory_xact_lock(GroupLockClass, hashtext(NAME)), taken exclusive by
// every change of a group's row or members (InGroup, ExpireGroups) and
// shared by InGroupShared. Advisory locks go through the lock manager's
// queue, unlike row locks: a shared request waits behind an exclusive one
// that waits, so a stream of overlapping offset commits cannot keep a
// membership change out. The two-key form lives apart from the one-bigint
// keys used elsewhere (migrations, the partition quota). Two names whose
// hashes meet share a lock: their operations wait for each other, no more.
// The name, not the row's id, is the key so that the lock can be taken
// before the row is read (or created) and covers a group deleted and
// created again under the same name.
const GroupLockClass int32 = 0x67727073 // "grps"

// InGroup runs fn in one transaction with the group locked exclusively
// (its advisory lock, see GroupLockClass, and its row FOR UPDATE). With
// create, a missing group is created first (generation 0, no members);
// without, a missing group fails with ErrGroupNotFound. An error returned
// by fn rolls the transaction back and is returned as it is.
func (s *Store) InGroup(ctx context.Context, name string, create bool, fn func(ctx context.Context, g *GroupTx) error) error {
	for attempt := 0; ; attempt++ {
		err := s.groupTx(ctx, "group", name, create, lockUpdate, fn)
		if errors.Is(err, ErrGroupNotFound) && create && attempt < 3 {
			continue // deleted between the insert and the lock: create again
		}
		return err
	}
}

// groupTx runs fn in one transaction on the group read under lock; an
// error of fn rolls back and is returned as it is.
func (s *Store) groupTx(ctx context.Context, what, name string, create bool, lock groupLock, fn func(ctx context.Context, g *GroupTx) error) error {
	var fnErr error
	err := s.inTx(ctx, what, withGroup(ctx, name, create, lock, fn, &fnErr))
	if fnErr != nil {
		return fnErr
	}
	return err
}

// errGroupFn rolls back a group transaction whose fn failed; withGroup
// keeps fn's own error for the caller.
var errGroupFn = errors.New("group callback failed")

// withGroup is the body of a group transaction: it reads the group under
// lock and runs fn on it; fn's error is kept in *fnErr, as fn returned it.
func withGroup(ctx context.Context, name string, create bool, lock groupLock, fn func(ctx context.Context, g *GroupTx) error, fnErr *error) func(pgx.Tx) error {
	return func(tx pgx.Tx) error {
		g, err := readGroup(ctx, tx, name, create, lock)
		if err != nil {
			return err
		}
		if err := fn(ctx, g); err != nil {
			*fnErr = err
			return errGroupFn
		}
		return nil
	}
}

// InGroupShared runs fn in one transaction with the group's lock (see
// GroupLockClass) held shared: changes of the group's state (InGroup and
// deletions, which hold it exclusive) wait for it and it for them, but
// transactions under InGroupShared do not wait for each other. A shared
// request arriving while a change waits queues behind that change, so
// changes are not starved by a stream of overlapping shared holders. The
// row itself is read without a row lock: every writer of the group's row
// and members holds the exclusive lock. The group read is the
// current state, and stays so until the transaction ends; for work that
// must be decided on that state but writes only rows of its own (offset
// commits, a member's heartbeat time), never the group's state. A missing
// group fails with ErrGroupNotFound. An error returned by fn rolls the
// transaction back and is returned as it is.
func (s *Store) InGroupShared(ctx context.Context, name string, fn func(ctx context.Context, g *GroupTx) error) error {
	return s.groupTx(ctx, "group shared", name, false, lockShare, fn)
}

// InGroupSnapshot runs fn in one repeatable-read transaction on a snapshot
// of the group, without its row lock: for a change to rows that every
// change of the group's state also writes (a member's heartbeat, when the
// snapshot shows nothing else to do), so that fn's write fails with
// ErrGroupChanged rather than land on a state other than the one it was
// decided on. A missing group fails with ErrGroupNotFound. Group
// operations under InGroup do not wait for it, nor it for them, but on the
// rows both write.
func (s *Store) InGroupSnapshot(ctx context.Context, name string, fn func(ctx context.Context, g *GroupTx) error) error {
	fnErr, err := s.inSnapshot(ctx, name, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, fn)
	if fnErr != nil {
		return fnErr
	}
	if pgCode(err) == sqlSerializationFailure {
		return fmt.Errorf("group %s: %w", name, ErrGroupChanged)
	}
	return s.classify("group snapshot", err)
}

// ViewGroup runs fn on a consistent snapshot of the group, without locking
// it, in a read-only transaction: for requests that wait on a group's
// state and only look. A missing group fails with ErrGroupNotFound.
func (s *Store) ViewGroup(ctx context.Context, name string, fn func(ctx context.Context, g *GroupTx) error) error {
	fnErr, err := s.inSnapshot(ctx, name, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, fn)
	if fnErr != nil {
		return fnErr
	}
	return s.classify("view group", err)
}

// inSnapshot runs fn on the group read, unlocked, in a transaction of
// opts. It returns fn's own error as fn returned it, or else the
// transaction's, for the caller to classify.
func (s *Store) inSnapshot(ctx context.Context, name string, opts pgx.TxOptions, fn func(ctx context.Context, g *GroupTx) error) (fnErr, err error) {
	err = pgx.BeginTxFunc(ctx, s.pool, s.txOptions(opts), withGroup(ctx, name, false, lockNone, fn, &fnErr))
	return fnErr, err
}

const groupColumns = `id, name, generation, topics, created_at, updated_at, protocol, kafka_state, protocol_type,
	protocol_name, leader, rebalance_deadline, join_delay_until, pending_members`

// How readGroup locks the group's row.
type groupLock int

const (
	lockNone   groupLock = iota // a snapshot (InGroupSnapshot, ViewGroup)
	lockShare                   // the group's lock shared (InGroupShared)
	lockUpdate                  // the group's lock exclusive, and the row FOR UPDATE (InGroup)
)

// readGroup reads a group, its members and their topics, after taking the
// group's lock of the kind asked.
func readGroup(ctx context.Context, tx pgx.Tx, name string, create bool, lock groupLock) (*GroupTx, error) {
	g := &GroupTx{tx: tx, topics: map[string]GroupTopic{}}
	batch := &pgx.Batch{}
	// The lock comes first, in a statement of its own: the statements after
	// it read what was committed before it was granted.
	switch lock {
	case lockShare:
		batch.Queue(`SELECT pg_advisory_xact_lock_shared($1, hashtext($2))`, GroupLockClass, name)
	case lockUpdate:
		batch.Queue(`SELECT pg_advisory_xact_lock($1, hashtext($2))`, GroupLockClass, name)
	}
	if create {
		batch.Queue(`INSERT INTO groups (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id`, name).
			Query(func(rows pgx.Rows) error {
				for rows.Next() {
					g.created = true
				}
				return rows.Err()
			})
	}
	found := false
	query := `SELECT ` + groupColumns + ` FROM groups WHERE name = $1`
	if lock == lockUpdate {
		// Redundant with the advisory lock for this package's writers; it
		// keeps out whoever locks the row alone.
		query += ` FOR UPDATE`
	}
	batch.Queue(query, name).
		Query(func(rows pgx.Rows) error {
			for rows.Next() {
				found = true
				var raw, pending []byte
				k := &g.group.Kafka
				if err := rows.Scan(&g.group.ID, &g.group.Name, &g.group.Generation, &raw, &g.group.CreatedAt, &g.group.UpdatedAt,
					&g.group.Protocol, &k.State, &k.ProtocolType, &k.ProtocolName, &k.Leader, &k.RebalanceDeadline, &k.JoinDelayUntil, &pending); err != nil {
					return err
				}
				topics, err := decodeGroupTopics(raw)
				if err != nil {
					return err
				}
				g.group.Topics = topics
				if k.Pending, err = decodePending(pending); err != nil {
					return err
				}
			}
			return rows.Err()
		})
	// Statements after the lock see everything committed before it was granted.
	batch.Queue(`SELECT clock_timestamp()`).QueryRow(func(r pgx.Row) error { return r.Scan(&g.now) })
	batch.Queue(`
		SELECT m.member_id, m.topics, m.session_timeout_ms, m.auto_offset_reset, m.generation,
		       m.assignment, m.assignment_generation, m.positions, m.joined_at, m.heartbeat_at,
		       coalesce(m.instance_id, ''), m.client_id, m.client_host, m.rebalance_timeout_ms,
		       m.protocol_names, m.protocol_metadata, m.kafka_phase, m.kafka_assignment
		FROM group_members m JOIN groups gr ON gr.id = m.group_id
		WHERE gr.name = $1 ORDER BY m.member_id`, name).
		Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var m GroupMember
				var timeoutMs, rebalanceMs int32
				var names []string
				var metas [][]byte
				if err := rows.Scan(&m.ID, &m.Topics, &timeoutMs, &m.AutoOffsetReset, &m.Generation,
					&m.Assignment, &m.AssignmentGeneration, &m.Positions, &m.JoinedAt, &m.HeartbeatAt,
					&m.InstanceID, &m.ClientID, &m.ClientHost, &rebalanceMs, &names, &metas, &m.KafkaPhase, &m.KafkaAssignment); err != nil {
					return err
				}
				m.SessionTimeout = time.Duration(timeoutMs) * time.Millisecond
				m.RebalanceTimeout = time.Duration(rebalanceMs) * time.Millisecond
				if len(names) != len(metas) {
					return fmt.Errorf("group member %s: %d protocol names and %d metadata", m.ID, len(names), len(metas))
				}
				for i, n := range names {
					m.Protocols = append(m.Protocols, GroupProtocol{Name: n, Metadata: metas[i]})
				}
				g.members = append(g.members, m)
			}
			return rows.Err()
		})
	batch.Queue(`
		SELECT t.name, t.id, t.partitions FROM topics t
		WHERE t.name IN (SELECT unnest(m.topics) FROM group_members m JOIN groups gr ON gr.id = m.group_id WHERE gr.name = $1)`, name).
		Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var n string
				var t GroupTopic
				if err := rows.Scan(&n, &t.ID, &t.Partitions); err != nil {
					return err
				}
				g.topics[n] = t
			}
			return rows.Err()
		})
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("group %q does not exist: %w", name, ErrGroupNotFound)
	}
	return g, nil
}

// groupTopicsJSON is the stored form of a subscription snapshot:
// {"name": [topic_id, partitions]}.
type groupTopicsJSON map[string][2]int64

func decodeGroupTopics(raw []byte) (map[string]GroupTopic, error) {
	var j groupTopicsJSON
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &j); err != nil {
			return nil, fmt.Errorf("group topics: %w", err)
		}
	}
	out := make(map[string]GroupTopic, len(j))
	for n, v := range j {
		out[n] = GroupTopic{ID: v[0], Partitions: int32(v[1])}
	}
	return out, nil
}

func decodePending(raw []byte) (map[string]time.Time, error) {
	var j map[string]int64
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &j); err != nil {
			return nil, fmt.Errorf("group pending members: %w", err)
		}
	}
	out := make(map[string]time.Time, len(j))
	for id, ms := range j {
		out[id] = time.UnixMilli(ms)
	}
	return out, nil
}

func encodePending(m map[string]time.Time) ([]byte, error) {
	j := make(map[string]int64, len(m))
	for id, t := range m {
		j[id] = t.UnixMilli()
	}
	return json.Marshal(j)
}

func encodeGroupTopics(m map[string]GroupTopic) ([]byte, error) {
	j := make(groupTopicsJSON, len(m))
	for n, t := range m {
		j[n] = [2]int64{t.ID, int64(t.Partitions)}
	}
	return json.Marshal(j)
}

// Topics returns the existing topics among names.
func (g *GroupTx) Topics(ctx context.Context, names []string) (map[string]GroupTopic, error) {
	out := map[string]GroupTopic{}
	if len(names) == 0 {
		return out, nil
	}
	rows, err := g.tx.Query(ctx, `SELECT name, id, partitions FROM topics WHERE name = ANY($1)`, names)
	if err != nil {
		return nil, classify("group topics", err)
	}
	defer rows.Close()
	for rows.Next() {
		var n string
		var t GroupTopic
		if err := rows.Scan(&n, &t.ID, &t.Partitions); err != nil {
			return nil, classify("group topics", err)
		}
		out[n] = t
	}
	return out, classify("group topics", rows.Err())
}

// AsyncCommit makes the transaction commit without waiting for its WAL
// flush (synchronous_commit off, for this transaction only), for changes
// whose loss in a Postgres crash is harmless: a member's heartbeat (the
// member then looks as old as its previous one) and the membership
// maintenance done with it. Offsets are never committed this way.
func (g *GroupTx) AsyncCommit(ctx context.Context) error {
	_, err := g.tx.Exec(ctx, `SELECT set_config('synchronous_commit', 'off', true)`)
	return classify("group async commit", err)
}

// SetGeneration records a rebalance: the new generation and the
// subscription snapshot its assignment was computed from.
func (g *GroupTx) SetGeneration(ctx context.Context, generation int64, topics map[string]GroupTopic) error {
	raw, err := encodeGroupTopics(topics)
	if err != nil {
		return err
	}
	_, err = g.tx.Exec(ctx, `UPDATE groups SET generation = $2, topics = $3, updated_at = $4 WHERE id = $1`,
		g.group.ID, generation, raw, g.now)
	return classify("set group generation", err)
}

// UpdateGroup writes the group row's mutable fields (generation,
// subscription snapshot, protocol and Kafka state) from gr.
func (g *GroupTx) UpdateGroup(ctx context.Context, gr Group) error {
	raw, err := encodeGroupTopics(gr.Topics)
	if err != nil {
		return err
	}
	pending, err := encodePending(gr.Kafka.Pending)
	if err != nil {
		return err
	}
	protocol, state := gr.Protocol, gr.Kafka.State
	if protocol == "" {
		protocol = GroupProtocolHTTP
	}
	if state == "" {
		state = KafkaEmpty
	}
	k := gr.Kafka
	_, err = g.tx.Exec(ctx, `
		UPDATE groups SET generation = $2, topics = $3, protocol = $4, kafka_state = $5, protocol_type = $6,
		  protocol_name = $7, leader = $8, rebalance_deadline = $9, join_delay_until = $10, pending_members = $11,
		  updated_at = $12
		WHERE id = $1`,
		g.group.ID, gr.Generation, raw, protocol, state, k.ProtocolType, k.ProtocolName, k.Leader,
		k.RebalanceDeadline, k.JoinDelayUntil, pending, g.now)
	return classify("update group", err)
}

// Notify announces, at commit, that the group's Kafka state changed.
func (g *GroupTx) Notify(ctx context.Context) error {
	_, err := g.tx.Exec(ctx, `SELECT pg_notify($1, $2)`, GroupsChannel, strconv.FormatInt(g.group.ID, 10))
	return classify("notify group", err)
}

const putMemberSQL = `
	INSERT INTO group_members (group_id, member_id, topics, session_timeout_ms, auto_offset_reset, generation,
	                           assignment, assignment_generation, positions, joined_at, heartbeat_at,
	                           instance_id, client_id, client_host, rebalance_timeout_ms, protocol_names,
	                           protocol_metadata, kafka_phase, kafka_assignment)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, coalesce($10::timestamptz, $11::timestamptz), $11::timestamptz, nullif($12::text, ''), $13, $14, $15, $16, $17, $18, $19)
	ON CONFLICT (group_id, member_id) DO UPDATE SET
	  topics = EXCLUDED.topics, session_timeout_ms = EXCLUDED.session_timeout_ms,
	  auto_offset_reset = EXCLUDED.auto_offset_reset, generation = EXCLUDED.generation,
	  assignment = EXCLUDED.assignment, assignment_generation = EXCLUDED.assignment_generation,
	  positions = EXCLUDED.positions, heartbeat_at = EXCLUDED.heartbeat_at,
	  instance_id = EXCLUDED.instance_id, client_id = EXCLUDED.client_id, client_host = EXCLUDED.client_host,
	  rebalance_timeout_ms = EXCLUDED.rebalance_timeout_ms, protocol_names = EXCLUDED.protocol_names,
	  protocol_metadata = EXCLUDED.protocol_metadata, kafka_phase = EXCLUDED.kafka_phase,
	  kafka_assignment = EXCLUDED.kafka_assignment`

func (g *GroupTx) putMemberArgs(m GroupMember, keepHeartbeat bool) []any {
	if m.Assignment == nil {
		m.Assignment = []GroupPartition{}
	}
	if m.Positions == nil {
		m.Positions = []GroupPosition{}
	}
	names := make([]string, len(m.Protocols))
	metas := make([][]byte, len(m.Protocols))
	for i, p := range m.Protocols {
		names[i], metas[i] = p.Name, p.Metadata
		if metas[i] == nil {
			metas[i] = []byte{}
		}
	}
	var joined *time.Time
	if !m.JoinedAt.IsZero() {
		joined = &m.JoinedAt
	}
	heartbeat := g.now
	if keepHeartbeat && !m.HeartbeatAt.IsZero() {
		heartbeat = m.HeartbeatAt
	}
	return []any{g.group.ID, m.ID, m.Topics, m.SessionTimeout.Milliseconds(), m.AutoOffsetReset, m.Generation,
		m.Assignment, m.AssignmentGeneration, m.Positions, joined, heartbeat,
		m.InstanceID, m.ClientID, m.ClientHost, m.RebalanceTimeout.Milliseconds(), names, metas, m.KafkaPhase, m.KafkaAssignment}
}

// PutMember inserts or replaces a member; its heartbeat is now (its join
// time, when new, is JoinedAt, or now when zero).
func (g *GroupTx) PutMember(ctx context.Context, m GroupMember) error {
	if m.Topics == nil {
		m.Topics = []string{}
	}
	_, err := g.tx.Exec(ctx, putMemberSQL, g.putMemberArgs(m, false)...)
	return classify("put group member", err)
}

// PutMembers writes many members as they are, in one round trip: unlike
// PutMember, each keeps its HeartbeatAt (now when zero).
func (g *GroupTx) PutMembers(ctx context.Context, ms []GroupMember) error {
	if len(ms) == 0 {
		return nil
	}
	batch := &pgx.Batch{}
	for _, m := range ms {
		if m.Topics == nil {
			m.Topics = []string{}
		}
		batch.Queue(putMemberSQL, g.putMemberArgs(m, true)...)
	}
	return classify("put group members", g.tx.SendBatch(ctx, batch).Close())
}

// SetAssignments stores the assignments of a rebalance to generation, one
// per member id; members not named keep theirs.
func (g *GroupTx) SetAssignments(ctx context.Context, generation int64, assignments map[string][]GroupPartition) error {
	if len(assignments) == 0 {
		return nil
	}
	ids := make([]string, 0, len(assignments))
	raws := make([][]byte, 0, len(assignments))
	for id, a := range assignments {
		if a == nil {
			a = []GroupPartition{}
		}
		raw, err := json.Marshal(a)
		if err != nil {
			return err
		}
		ids = append(ids, id)
		raws = append(raws, raw)
	}
	_, err := g.tx.Exec(ctx, `
		UPDATE group_members m SET assignment = r.assignment, assignment_generation = $2
		FROM unnest($3::text[], $4::jsonb[]) AS r(member_id, assignment)
		WHERE m.group_id = $1 AND m.member_id = r.member_id`, g.group.ID, generation, ids, raws)
	return classify("set group assignments", err)
}

// Touch sets the members' heartbeat to now.
func (g *GroupTx) Touch(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := g.tx.Exec(ctx, `UPDATE group_members SET heartbeat_at = $3 WHERE group_id = $1 AND member_id = ANY($2)`,
		g.group.ID, ids, g.now)
	if pgCode(err) == sqlSerializationFailure { // only in InGroupSnapshot
		return fmt.Errorf("touch group members: %w", ErrGroupChanged)
	}
	return classify("touch group members", err)
}

// RemoveMembers deletes members.
func (g *GroupTx) RemoveMembers(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := g.tx.Exec(ctx, `DELETE FROM group_members WHERE group_id = $1 AND member_id = ANY($2)`, g.group.ID, ids)
	return classify("remove group members", err)
}

// Offsets returns, for each of parts that exists, its log start offset,
// high watermark and the group's committed offset.
func (g *GroupTx) Offsets(ctx context.Context, parts []TopicPartition) (map[TopicPartition]GroupPartitionOffsets, error) {
	out := make(map[TopicPartition]GroupPartitionOffsets, len(parts))
	if len(parts) == 0 {
		return out, nil
	}
	topics := make([]int64, len(parts))
	nums := make([]int32, len(parts))
	for i, p := range parts {
		topics[i], nums[i] = p.TopicID, p.Partition
	}
	rows, err := g.tx.Query(ctx, `
		SELECT p.topic_id, p.partition, p.log_start_offset, p.next_offset, o.committed_offset, coalesce(o.metadata, '')
		FROM unnest($2::bigint[], $3::int[]) AS r(topic_id, partition)
		JOIN partitions p ON p.topic_id = r.topic_id AND p.partition = r.partition
		LEFT JOIN group_offsets o ON o.group_id = $1 AND o.topic_id = p.topic_id AND o.partition = p.partition`,
		g.group.ID, topics, nums)
	if err != nil {
		return nil, classify("group offsets", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k TopicPartition
		var o GroupPartitionOffsets
		if err := rows.Scan(&k.TopicID, &k.Partition, &o.LogStartOffset, &o.HighWatermark, &o.Committed, &o.Metadata); err != nil {
			return nil, classify("group offsets", err)
		}
		out[k] = o
	}
	return out, classify("group offsets", rows.Err())
}

// Commit stores committed offsets. Each partition may appear once.
func (g *GroupTx) Commit(ctx context.Context, commits []GroupCommit) error {
	if len(commits) == 0 {
		return nil
	}
	topics := make([]int64, len(commits))
	parts := make([]int32, len(commits))
	offs := make([]int64, len(commits))
	metas := make([]string, len(commits))
	for i, c := range commits {
		if c.Offset < 0 {
			return fmt.Errorf("%w: offset %d is negative", ErrInvalidArgument, c.Offset)
		}
		topics[i], parts[i], offs[i], metas[i] = c.TopicID, c.Partition, c.Offset, c.Metadata
	}
	_, err := g.tx.Exec(ctx, `
		INSERT INTO group_offsets (group_id, topic_id, partition, committed_offset, metadata, committed_at)
		SELECT $1, r.topic_id, r.partition, r.committed_offset, r.metadata, $6
		FROM unnest($2::bigint[], $3::int[], $4::bigint[], $5::text[]) AS r(topic_id, partition, committed_offset, metadata)
		ORDER BY r.topic_id, r.partition -- commits side by side (InGroupShared) take the rows in one order
		ON CONFLICT (group_id, topic_id, partition) DO UPDATE SET
		  committed_offset = EXCLUDED.committed_offset, metadata = EXCLUDED.metadata, committed_at = EXCLUDED.committed_at`,
		g.group.ID, topics, parts, offs, metas, g.now)
	if pgCode(err) == sqlForeignKeyViolation {
		return fmt.Errorf("a partition committed to no longer exists (its topic was deleted): %w", ErrPartitionNotFound)
	}
	return classify("commit group offsets", err)
}

// DeleteOffsets removes the group's committed offsets of parts.
func (g *GroupTx) DeleteOffsets(ctx context.Context, parts []TopicPartition) error {
	if len(parts) == 0 {
		return nil
	}
	topics := make([]int64, len(parts))
	nums := make([]int32, len(parts))
	for i, p := range parts {
		topics[i], nums[i] = p.TopicID, p.Partition
	}
	_, err := g.tx.Exec(ctx, `
		DELETE FROM group_offsets o USING unnest($2::bigint[], $3::int[]) AS r(topic_id, partition)
		WHERE o.group_id = $1 AND o.topic_id = r.topic_id AND o.partition = r.partition`, g.group.ID, topics, nums)
	return classify("delete group offsets", err)
}

// Delete removes the group, its members and its committed offsets.
func (g *GroupTx) Delete(ctx context.Context) error {
	_, err := g.tx.Exec(ctx, `DELETE FROM groups WHERE id = $1`, g.group.ID)
	return classify("delete group", err)
}

// GroupSummary is a group in a listing. Members whose session expired
// still count in Members until an operation on the group removes them.
type GroupSummary struct {
	Name       string
	Generation int64
	// Protocol, KafkaState and ProtocolType are the group row's.
	Protocol     string
	KafkaState   string
	ProtocolType string
	// Members is every member row; Live those within their session
	// timeout; Behind the live ones that joined at an older generation.
	Members int
	Live    int
	Behind  int
}

// ListGroups returns, by name, up to limit groups whose names sort after
// after (limit <= 0: all).
func (s *Store) ListGroups(ctx context.Context, after string, limit int) ([]GroupSummary, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT g.name, g.generation, g.protocol, g.kafka_state, g.protocol_type,
		       count(m.member_id),
		       count(m.member_id) FILTER (WHERE m.heartbeat_at + m.session_timeout_ms * interval '1 millisecond' >= clock_timestamp()),
		       count(m.member_id) FILTER (WHERE m.heartbeat_at + m.session_timeout_ms * interval '1 millisecond' >= clock_timestamp()
		                                    AND m.generation < g.generation)
		FROM groups g LEFT JOIN group_members m ON m.group_id = g.id
		WHERE g.name > $1
		GROUP BY g.id ORDER BY g.name LIMIT $2`, after, sqlLimit(limit))
	if err != nil {
		return nil, s.classify("list groups", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (GroupSummary, error) {
		var g GroupSummary
		err := r.Scan(&g.Name, &g.Generation, &g.Protocol, &g.KafkaState, &g.ProtocolType, &g.Members, &g.Live, &g.Behind)
		return g, err
	})
	return out, s.classify("list groups", err)
}

// GroupOffset is one partition in a group's offsets view.
type GroupOffset struct {
	Topic          string
	TopicID        int64
	Partition      int32
	LogStartOffset int64
	HighWatermark  int64
	// Committed is nil when the group committed nothing there.
	Committed   *int64
	Metadata    string
	CommittedAt *time.Time
}

// GroupOffsets returns, ordered by topic and partition, every partition
// of the topics the group committed offsets in or its members subscribe
// to, with the committed offset where there is one.
func (s *Store) GroupOffsets(ctx context.Context, name string) ([]GroupOffset, error) {
	var id int64
	err := s.pool.QueryRow(ctx, `SELECT id FROM groups WHERE name = $1`, name).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("group %q does not exist: %w", name, ErrGroupNotFound)
	}
	if err != nil {
		return nil, s.classify("group offsets", err)
	}
	rows, err := s.pool.Query(ctx, `
		WITH t AS (
			SELECT topic_id FROM group_offsets WHERE group_id = $1
			UNION
			SELECT tp.id FROM group_members m CROSS JOIN unnest(m.topics) AS s(name) JOIN topics tp ON tp.name = s.name
			WHERE m.group_id = $1
		)
		SELECT tp.name, p.topic_id, p.partition, p.log_start_offset, p.next_offset,
		       o.committed_offset, coalesce(o.metadata, ''), o.committed_at
		FROM t JOIN topics tp ON tp.id = t.topic_id
		JOIN partitions p ON p.topic_id = t.topic_id
		LEFT JOIN group_offsets o ON o.group_id = $1 AND o.topic_id = p.topic_id AND o.partition = p.partition
		ORDER BY tp.name, p.partition`, id)
	if err != nil {
		return nil, s.classify("group offsets", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (GroupOffset, error) {
		var o GroupOffset
		err := r.Scan(&o.Topic, &o.TopicID, &o.Partition, &o.LogStartOffset, &o.HighWatermark, &o.Committed, &o.Metadata, &o.CommittedAt)
		return o, err
	})
	return out, s.classify("group offsets", err)
}

// GroupLag is one committed partition's lag.
type GroupLag struct {
	Group     string
	Topic     string
	Partition int32
	// Lag is the high watermark minus the committed offset, at least 0.
	Lag int64
}

// GroupLags returns the lag of every partition in which some group
// committed an offset, ordered by group, topic and partition, at most
// limit of them; truncated reports that there were more.
func (s *Store) GroupLags(ctx context.Context, limit int) (lags []GroupLag, truncated bool, err error) {
	if limit < 1 {
		return nil, false, fmt.Errorf("%w: limit must be positive", ErrInvalidArgument)
	}
	rows, err := s.pool.Query(ctx, `
		SELECT g.name, t.name, o.partition, greatest(p.next_offset - o.committed_offset, 0)
		FROM group_offsets o
		JOIN groups g ON g.id = o.group_id
		JOIN partitions p ON p.topic_id = o.topic_id AND p.partition = o.partition
		JOIN topics t ON t.id = o.topic_id
		ORDER BY g.name, t.name, o.partition
		LIMIT $1`, limit+1)
	if err != nil {
		return nil, false, s.classify("group lags", err)
	}
	lags, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (GroupLag, error) {
		var l GroupLag
		err := r.Scan(&l.Group, &l.Topic, &l.Partition, &l.Lag)
		return l, err
	})
	if err != nil {
		return nil, false, s.classify("group lags", err)
	}
	if len(lags) > limit {
		return lags[:limit], true, nil
	}
	return lags, false, nil
}

// CommittedOffset is one committed offset of a group.
type CommittedOffset struct {
	Topic     string
	TopicID   int64
	Partition int32
	Offset    int64
	Metadata  string
}

// CommittedOffsets returns, ordered by topic and partition, every offset
// the group committed (nothing when the group does not exist), without
// locking it.
func (s *Store) CommittedOffsets(ctx context.Context, group string) ([]CommittedOffset, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT t.name, o.topic_id, o.partition, o.committed_offset, o.metadata
		FROM groups g JOIN group_offsets o ON o.group_id = g.id JOIN topics t ON t.id = o.topic_id
		WHERE g.name = $1 ORDER BY t.name, o.partition`, group)
	if err != nil {
		return nil, s.classify("committed offsets", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (CommittedOffset, error) {
		var o CommittedOffset
		err := r.Scan(&o.Topic, &o.TopicID, &o.Partition, &o.Offset, &o.Metadata)
		return o, err
	})
	return out, s.classify("committed offsets", err)
}
