package groups

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"silt/metadata"
)

// Store is what the coordinator needs of the metadata store.
type Store interface {
	InGroup(ctx context.Context, name string, create bool, fn func(ctx context.Context, g *metadata.GroupTx) error) error
	InGroupShared(ctx context.Context, name string, fn func(ctx context.Context, g *metadata.GroupTx) error) error
	InGroupSnapshot(ctx context.Context, name string, fn func(ctx context.Context, g *metadata.GroupTx) error) error
	ViewGroup(ctx context.Context, name string, fn func(ctx context.Context, g *metadata.GroupTx) error) error
	ListGroups(ctx context.Context, after string, limit int) ([]metadata.GroupSummary, error)
	GroupOffsets(ctx context.Context, name string) ([]metadata.GroupOffset, error)
	CommittedOffsets(ctx context.Context, group string) ([]metadata.CommittedOffset, error)
}

// Waker wakes requests parked on a group (Kafka's JoinGroup and SyncGroup)
// when a transaction changes its state; Notifications implements it.
type Waker interface {
	// Watch returns a channel closed at the group's next change (or when
	// changes may have been missed). Watch before looking at the group.
	Watch(groupID int64) <-chan struct{}
}

// Auto offset reset policies: where a member starts in a partition the
// group has no committed offset for (and where the group fetch resumes
// when its position fell below the log start).
const (
	ResetEarliest = "earliest"
	ResetLatest   = "latest" // Kafka's default
)

// Group states.
const (
	StateEmpty       = "empty"       // no members
	StateStable      = "stable"      // every member joined at the current generation
	StateRebalancing = "rebalancing" // some member has yet to rejoin (or to be expired)
)

// Deps are the coordinator's collaborators.
type Deps struct {
	Store  Store
	Logger *slog.Logger
	// Waker wakes parked Kafka requests; without one they look at the
	// group again every Config.MaxParkedWait (tests).
	Waker Waker
}

// Coordinator runs the group protocol; it holds no state of its own.
type Coordinator struct {
	cfg    Config
	store  Store
	logger *slog.Logger
	waker  Waker
}

// New returns a Coordinator.
func New(cfg Config, deps Deps) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Store == nil {
		return nil, errors.New("groups: store is required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	return &Coordinator{cfg: cfg, store: deps.Store, logger: deps.Logger, waker: deps.Waker}, nil
}

// JoinRequest asks to join (MemberID empty) or rejoin a group.
type JoinRequest struct {
	MemberID string
	// Topics to subscribe to; on a rejoin, empty keeps the member's.
	Topics []string
	// SessionTimeout of zero takes Config.DefaultSessionTimeout, or keeps
	// the member's on a rejoin.
	SessionTimeout time.Duration
	// AutoOffsetReset is ResetEarliest, ResetLatest or empty: latest, or
	// the member's on a rejoin.
	AutoOffsetReset string
}

// Assignment is one partition assigned to a member, with where it starts.
type Assignment struct {
	Topic     string
	TopicID   int64
	Partition int32
	// Committed is the group's committed offset, nil when none.
	Committed *int64
	// Offset is where the member starts: Committed, else the log start
	// (earliest) or the high watermark (latest).
	Offset int64
}

// JoinResult is a member's view after a join.
type JoinResult struct {
	MemberID          string
	Generation        int64
	Assignments       []Assignment
	HeartbeatInterval time.Duration
	SessionTimeout    time.Duration
}

// HeartbeatResult tells a member whether to rejoin.
type HeartbeatResult struct {
	Generation int64
	// Rejoin is true when the member's generation is not the group's.
	Rejoin bool
}

// OffsetCommit is one offset to commit.
type OffsetCommit struct {
	Topic string
	// TopicID, when not 0, must be the topic's id (TopicIDMismatchError).
	TopicID   int64
	Partition int32
	Offset    int64
	Metadata  string
}

// CommitRequest commits offsets; MemberID empty is a standalone commit,
// allowed only while the group has no members.
type CommitRequest struct {
	MemberID   string
	Generation int64
	Offsets    []OffsetCommit
}

// PartitionLag is a partition in a group's offsets view.
type PartitionLag struct {
	Topic          string
	Partition      int32
	Committed      *int64
	Metadata       string
	CommittedAt    *time.Time
	LogStartOffset int64
	HighWatermark  int64
	// Lag is HighWatermark - Committed, or HighWatermark - LogStartOffset
	// when nothing is committed; never negative.
	Lag int64
}

// Summary is a group in a listing.
type Summary struct {
	Name       string
	State      string
	Generation int64
	Members    int // live members
	// Protocol is which door manages the group (metadata.GroupProtocol*);
	// ProtocolType and KafkaState are what Kafka's ListGroups reports.
	Protocol     string
	ProtocolType string
	KafkaState   string
}

// MemberDescription is a member in a description.
type MemberDescription struct {
	ID              string
	Topics          []string
	SessionTimeout  time.Duration
	AutoOffsetReset string
	// Generation is the generation the member last joined at.
	Generation int64
	// Assignment is the member's assignment at the group's generation:
	// what it gets when it (re)joins.
	Assignment    []metadata.GroupPartition
	JoinedAt      time.Time
	LastHeartbeat time.Time
}

// Description is a group's state.
type Description struct {
	Name       string
	State      string
	Generation int64
	Members    []MemberDescription
}

// Position is where a member's group fetch continues in a partition.
type Position struct {
	Topic     string
	TopicID   int64
	Partition int32
	Offset    int64
}

// FetchStart is what a group fetch reads from.
type FetchStart struct {
	Generation      int64
	AutoOffsetReset string
	// Positions follow the member's assignment, in its order.
	Positions []Position
}

// AnyGeneration makes StartFetch accept the member at whatever
// generation it joined, as long as that is the group's.
const AnyGeneration int64 = -1

// Join adds a member (req.MemberID empty) or refreshes one, and returns
// its assignment. A new member, or a member whose topics changed, causes a
// rebalance. On a rejoin, empty Topics, SessionTimeout and AutoOffsetReset
// keep the member's. Rejoining resets the member's fetch positions to the
// assignment's offsets.
func (c *Coordinator) Join(ctx context.Context, group string, req JoinRequest) (JoinResult, error) {
	if err := ValidName(group); err != nil {
		return JoinResult{}, err
	}
	if req.MemberID != "" {
		if err := ValidMemberID(req.MemberID); err != nil {
			return JoinResult{}, err
		}
	}
	var topics []string
	if len(req.Topics) > 0 || req.MemberID == "" {
		var err error
		if topics, err = c.validTopics(req.Topics); err != nil {
			return JoinResult{}, err
		}
	}
	session := req.SessionTimeout
	if session != 0 && (session < c.cfg.MinSessionTimeout || session > c.cfg.MaxSessionTimeout) {
		return JoinResult{}, fmt.Errorf("%w: session_timeout_ms %d must be from %d to %d", ErrInvalidArgument, session.Milliseconds(), c.cfg.MinSessionTimeout.Milliseconds(), c.cfg.MaxSessionTimeout.Milliseconds())
	}
	reset := req.AutoOffsetReset
	switch reset {
	case "", ResetEarliest, ResetLatest:
	default:
		return JoinResult{}, fmt.Errorf("%w: auto_offset_reset %q must be earliest or latest", ErrInvalidArgument, reset)
	}
	var res JoinResult
	err := c.locked(ctx, group, req.MemberID == "", func(ctx context.Context, st *state) error {
		if err := st.takeOver(metadata.GroupProtocolHTTP); err != nil {
			return err
		}
		var m *metadata.GroupMember
		if req.MemberID == "" {
			if len(st.members) >= c.cfg.MaxMembers {
				return reject("%w", &GroupFullError{Group: group, Members: len(st.members), RetryAfter: st.firstExpiry()})
			}
			if err := st.requireTopics(ctx, topics); err != nil {
				return err
			}
			m = &metadata.GroupMember{ID: newMemberID(), Topics: topics, JoinedAt: st.now,
				SessionTimeout: c.cfg.DefaultSessionTimeout, AutoOffsetReset: ResetLatest}
			st.add(m)
			st.rebalance = true
		} else {
			m = st.byID[req.MemberID]
			if m == nil {
				return reject("group %q has no member %s (it left or expired): %w", group, RedactMemberIDs(req.MemberID), ErrMemberNotFound)
			}
			if topics != nil && !slices.Equal(m.Topics, topics) {
				if err := st.requireTopics(ctx, topics); err != nil {
					return err
				}
				m.Topics = topics
				st.rebalance = true
			}
		}
		if session != 0 {
			m.SessionTimeout = session
		}
		if reset != "" {
			m.AutoOffsetReset = reset
		}
		st.settle()
		m.Generation = st.group.Generation
		assigned, err := st.startOffsets(ctx, m)
		if err != nil {
			return err
		}
		m.Positions = make([]metadata.GroupPosition, len(assigned))
		for i, a := range assigned {
			m.Positions[i] = metadata.GroupPosition{TopicID: a.TopicID, Partition: a.Partition, Offset: a.Offset}
		}
		st.dirty[m.ID] = true
		res = JoinResult{MemberID: m.ID, Generation: m.Generation, Assignments: assigned,
			HeartbeatInterval: c.cfg.heartbeatInterval(m.SessionTimeout), SessionTimeout: m.SessionTimeout}
		return nil
	})
	if req.MemberID != "" {
		return res, memberError(err, group, req.MemberID)
	}
	return res, err
}

// Heartbeat keeps a member alive and tells it whether to rejoin.
func (c *Coordinator) Heartbeat(ctx context.Context, group, member string, generation int64) (HeartbeatResult, error) {
	if err := ValidName(group); err != nil {
		return HeartbeatResult{}, err
	}
	if err := ValidMemberID(member); err != nil {
		return HeartbeatResult{}, err
	}
	if generation < 0 {
		return HeartbeatResult{}, fmt.Errorf("%w: generation %d is negative", ErrInvalidArgument, generation)
	}
	if res, ok := c.heartbeatSnapshot(ctx, group, member, generation); ok {
		return res, nil
	}
	var res HeartbeatResult
	err := c.locked(ctx, group, false, func(ctx context.Context, st *state) error {
		if err := st.httpOnly(); err != nil {
			return err
		}
		// A heartbeat lost in a Postgres crash costs nothing but an older
		// heartbeat: it waits for no WAL flush, and so holds the group's
		// lock for less and lets a Postgres serve many more.
		if err := st.tx.AsyncCommit(ctx); err != nil {
			return err
		}
		m, err := st.alive(member)
		if err != nil {
			return err
		}
		gen := st.group.Generation
		if generation > gen {
			return reject("%w: generation %d is ahead of the group's generation %d; it was never the group's", ErrInvalidArgument, generation, gen)
		}
		res = HeartbeatResult{Generation: gen, Rejoin: m.Generation != gen || generation != gen}
		return nil
	})
	return res, memberError(err, group, member)
}

// errSlowPath makes heartbeatSnapshot hand the heartbeat to the locked path.
var errSlowPath = errors.New("heartbeat needs the group's lock")

// heartbeatSnapshot answers a heartbeat that changes nothing but the
// member's own heartbeat time (the member is current, no member expired,
// no rebalance is due), without the group's row lock, so that heartbeats
// do not queue behind the group's offset commits and each other. It
// decides on a snapshot and writes only the member's row, which every
// change of the group's state also writes: a change committed after the
// snapshot makes the write fail (metadata.ErrGroupChanged). ok is false
// when the heartbeat must take the locked path (anything else to do, a
// rejection, a Kafka group, a conflict or an error).
func (c *Coordinator) heartbeatSnapshot(ctx context.Context, group, member string, generation int64) (res HeartbeatResult, ok bool) {
	err := c.store.InGroupSnapshot(ctx, group, func(ctx context.Context, tx *metadata.GroupTx) error {
		st := newState(tx, &c.cfg)
		if st.kafkaManaged() {
			return errSlowPath
		}
		st.maintain()
		m, err := st.alive(member)
		if err != nil || generation > st.group.Generation || !st.touchOnly() {
			return errSlowPath
		}
		gen := st.group.Generation
		res = HeartbeatResult{Generation: gen, Rejoin: m.Generation != gen || generation != gen}
		if err := tx.AsyncCommit(ctx); err != nil {
			return err
		}
		return tx.Touch(ctx, member)
	})
	return res, err == nil
}

// touchOnly reports whether save would write nothing but heartbeats.
func (st *state) touchOnly() bool {
	return len(st.removed) == 0 && st.expired == 0 && !st.rebalance && !st.rebalanced && !st.groupDirty &&
		len(st.dirty) == 0 && !st.notify && !st.deleted && !st.tx.Created()
}

// Leave removes a member; the others rebalance.
func (c *Coordinator) Leave(ctx context.Context, group, member string) error {
	if err := ValidName(group); err != nil {
		return err
	}
	if err := ValidMemberID(member); err != nil {
		return err
	}
	err := c.locked(ctx, group, false, func(ctx context.Context, st *state) error {
		if err := st.httpOnly(); err != nil {
			return err
		}
		if _, err := st.member(member); err != nil {
			return err
		}
		st.remove(member)
		st.rebalance = true
		return nil
	})
	return memberError(err, group, member)
}

// Commit stores offsets; see CommitRequest.
func (c *Coordinator) Commit(ctx context.Context, group string, req CommitRequest) error {
	if err := ValidName(group); err != nil {
		return err
	}
	if req.MemberID != "" {
		if err := ValidMemberID(req.MemberID); err != nil {
			return err
		}
	}
	if len(req.Offsets) == 0 {
		return fmt.Errorf("%w: offsets must name at least one partition", ErrInvalidArgument)
	}
	type tp struct {
		topic string
		part  int32
	}
	seen := map[tp]bool{}
	for _, o := range req.Offsets {
		if o.Offset < 0 {
			return fmt.Errorf("%w: %s/%d: offset %d is negative", ErrInvalidOffset, o.Topic, o.Partition, o.Offset)
		}
		if o.Partition < 0 {
			return fmt.Errorf("%w: %s: partition %d is negative", ErrInvalidArgument, o.Topic, o.Partition)
		}
		if strings.IndexByte(o.Metadata, 0) >= 0 {
			return fmt.Errorf("%w: %s/%d: metadata must not contain NUL characters", ErrInvalidArgument, o.Topic, o.Partition)
		}
		if len(o.Metadata) > c.cfg.MaxMetadataBytes {
			return fmt.Errorf("%w: %s/%d: metadata is %d bytes; at most %d are kept with an offset", ErrInvalidArgument, o.Topic, o.Partition, len(o.Metadata), c.cfg.MaxMetadataBytes)
		}
		k := tp{o.Topic, o.Partition}
		if seen[k] {
			return fmt.Errorf("%w: %s/%d appears twice", ErrInvalidArgument, o.Topic, o.Partition)
		}
		seen[k] = true
	}
	op := func(ctx context.Context, st *state) error {
		commits := make([]metadata.GroupCommit, len(req.Offsets))
		if req.MemberID != "" {
			if err := st.httpOnly(); err != nil {
				return err
			}
			m, err := st.alive(req.MemberID)
			if err != nil {
				return err
			}
			if err := st.current(m, req.Generation); err != nil {
				return err
			}
			assigned := map[tp]int64{}
			for _, a := range m.Assignment {
				assigned[tp{a.Topic, a.Partition}] = a.TopicID
			}
			for i, o := range req.Offsets {
				id, ok := assigned[tp{o.Topic, o.Partition}]
				if !ok {
					return reject("partition %s/%d is not assigned to this member of group %q: %w", o.Topic, o.Partition, group, ErrNotAssigned)
				}
				if o.TopicID != 0 && o.TopicID != id {
					return reject("%w", &TopicIDMismatchError{Topic: o.Topic, Pinned: o.TopicID, Current: id})
				}
				commits[i] = metadata.GroupCommit{TopicID: id, Partition: o.Partition, Offset: o.Offset, Metadata: o.Metadata}
			}
		} else {
			st.settle()
			if len(st.members) > 0 {
				return reject("group %q has %d members; commit with a member id and generation: %w", group, len(st.members), ErrGroupNotEmpty)
			}
			names := make([]string, 0, len(req.Offsets))
			for _, o := range req.Offsets {
				names = append(names, o.Topic)
			}
			topics, err := st.tx.Topics(ctx, names)
			if err != nil {
				return err
			}
			for i, o := range req.Offsets {
				t, ok := topics[o.Topic]
				if !ok {
					return reject("topic %q does not exist: %w", o.Topic, ErrTopicNotFound)
				}
				if o.TopicID != 0 && o.TopicID != t.ID {
					return reject("%w", &TopicIDMismatchError{Topic: o.Topic, Pinned: o.TopicID, Current: t.ID})
				}
				if o.Partition >= t.Partitions {
					return reject("topic %q has %d partitions; there is no partition %d: %w", o.Topic, t.Partitions, o.Partition, ErrPartitionNotFound)
				}
				commits[i] = metadata.GroupCommit{TopicID: t.ID, Partition: o.Partition, Offset: o.Offset, Metadata: o.Metadata}
			}
		}
		parts := make([]metadata.TopicPartition, len(commits))
		for i, cm := range commits {
			parts[i] = metadata.TopicPartition{TopicID: cm.TopicID, Partition: cm.Partition}
		}
		offs, err := st.tx.Offsets(ctx, parts)
		if err != nil {
			return err
		}
		for i, cm := range commits {
			o, ok := offs[parts[i]]
			if !ok {
				return reject("partition %s/%d does not exist: %w", req.Offsets[i].Topic, cm.Partition, ErrPartitionNotFound)
			}
			if cm.Offset > o.HighWatermark {
				return reject("%s/%d: offset %d is past the high watermark %d: %w", req.Offsets[i].Topic, cm.Partition, cm.Offset, o.HighWatermark, ErrInvalidOffset)
			}
		}
		return st.tx.Commit(ctx, commits)
	}
	if req.MemberID == "" {
		// A standalone commit may create the group, and needs it empty.
		return c.locked(ctx, group, true, op)
	}
	return memberError(c.shared(ctx, group, op), group, req.MemberID)
}

// Offsets returns the group's offsets view: every partition of the topics
// it committed in or subscribes to.
func (c *Coordinator) Offsets(ctx context.Context, group string) ([]PartitionLag, error) {
	if err := ValidName(group); err != nil {
		return nil, err
	}
	rows, err := c.store.GroupOffsets(ctx, group)
	if err != nil {
		return nil, translate(err)
	}
	out := make([]PartitionLag, len(rows))
	for i, r := range rows {
		l := PartitionLag{Topic: r.Topic, Partition: r.Partition, Committed: r.Committed, Metadata: r.Metadata,
			CommittedAt: r.CommittedAt, LogStartOffset: r.LogStartOffset, HighWatermark: r.HighWatermark}
		from := r.LogStartOffset
		if r.Committed != nil {
			from = *r.Committed
		}
		l.Lag = max(r.HighWatermark-from, 0)
		out[i] = l
	}
	return out, nil
}

// List returns, by name, up to limit groups after after (limit <= 0:
// all). It takes no lock: members past their session
// timeout are not counted, though they are removed only by the next
// operation on their group.
func (c *Coordinator) List(ctx context.Context, after string, limit int) ([]Summary, error) {
	rows, err := c.store.ListGroups(ctx, after, limit)
	if err != nil {
		return nil, translate(err)
	}
	out := make([]Summary, len(rows))
	for i, r := range rows {
		s := Summary{Name: r.Name, Generation: r.Generation, Members: r.Live, Protocol: r.Protocol,
			ProtocolType: r.ProtocolType, KafkaState: KafkaStateName(r.KafkaState)}
		switch {
		case r.Members == 0:
			s.State = StateEmpty
		case r.Protocol == metadata.GroupProtocolKafka:
			// Kafka members that stopped heartbeating are removed by the
			// next request on the group, as HTTP ones.
			s.State = StateStable
			if r.KafkaState != metadata.KafkaStable || r.Live < r.Members {
				s.State = StateRebalancing
			}
		case r.Behind > 0 || r.Live < r.Members:
			s.State = StateRebalancing
		default:
			s.State = StateStable
		}
		if r.Protocol != metadata.GroupProtocolKafka {
			s.KafkaState, s.ProtocolType = "Empty", ""
			if r.Members > 0 {
				s.ProtocolType, s.KafkaState = HTTPProtocolType, "Stable"
				if s.State == StateRebalancing {
					s.KafkaState = "PreparingRebalance"
				}
			}
		}
		out[i] = s
	}
	return out, nil
}

// Describe returns a group's state, after removing expired members.
func (c *Coordinator) Describe(ctx context.Context, group string) (Description, error) {
	if err := ValidName(group); err != nil {
		return Description{}, err
	}
	var d Description
	err := c.locked(ctx, group, false, func(ctx context.Context, st *state) error {
		st.settle()
		d = Description{Name: st.group.Name, Generation: st.group.Generation, State: st.state(),
			Members: make([]MemberDescription, 0, len(st.members))}
		for _, m := range st.members {
			hb := m.HeartbeatAt
			if st.dirty[m.ID] || st.touched[m.ID] {
				hb = st.now
			}
			d.Members = append(d.Members, MemberDescription{ID: m.ID, Topics: m.Topics, SessionTimeout: m.SessionTimeout,
				AutoOffsetReset: m.AutoOffsetReset, Generation: m.Generation, Assignment: m.Assignment,
				JoinedAt: m.JoinedAt, LastHeartbeat: hb})
		}
		return nil
	})
	return d, err
}

// Delete removes a group and its committed offsets; it fails with
// ErrGroupNotEmpty while the group has live members.
func (c *Coordinator) Delete(ctx context.Context, group string) error {
	if err := ValidName(group); err != nil {
		return err
	}
	return c.locked(ctx, group, false, func(ctx context.Context, st *state) error {
		st.settle()
		if len(st.members) > 0 {
			return reject("group %q has %d members; delete it once they leave or expire: %w", group, len(st.members), ErrGroupNotEmpty)
		}
		st.deleted = true
		return st.tx.Delete(ctx)
	})
}

// StartFetch begins a group fetch: it checks that the member is at the
// group's generation (and at generation, unless AnyGeneration), counts as
// a heartbeat, commits the stored positions first when autoCommit is set,
// and returns the positions to read from.
func (c *Coordinator) StartFetch(ctx context.Context, group, member string, generation int64, autoCommit bool) (FetchStart, error) {
	if err := ValidName(group); err != nil {
		return FetchStart{}, err
	}
	if err := ValidMemberID(member); err != nil {
		return FetchStart{}, err
	}
	var fs FetchStart
	err := c.locked(ctx, group, false, func(ctx context.Context, st *state) error {
		if err := st.httpOnly(); err != nil {
			return err
		}
		m, err := st.alive(member)
		if err != nil {
			return err
		}
		if generation == AnyGeneration {
			generation = m.Generation
		}
		if err := st.current(m, generation); err != nil {
			return err
		}
		names := map[int64]string{}
		for _, a := range m.Assignment {
			names[a.TopicID] = a.Topic
		}
		fs = FetchStart{Generation: st.group.Generation, AutoOffsetReset: m.AutoOffsetReset, Positions: make([]Position, 0, len(m.Positions))}
		commits := make([]metadata.GroupCommit, 0, len(m.Positions))
		for _, p := range m.Positions {
			fs.Positions = append(fs.Positions, Position{Topic: names[p.TopicID], TopicID: p.TopicID, Partition: p.Partition, Offset: p.Offset})
			commits = append(commits, metadata.GroupCommit{TopicID: p.TopicID, Partition: p.Partition, Offset: p.Offset})
		}
		if autoCommit {
			return st.tx.Commit(ctx, commits)
		}
		return nil
	})
	return fs, memberError(err, group, member)
}

// FinishFetch stores the positions a group fetch reached, if the member
// is still at generation.
func (c *Coordinator) FinishFetch(ctx context.Context, group, member string, generation int64, positions []Position) error {
	if err := ValidName(group); err != nil {
		return err
	}
	if err := ValidMemberID(member); err != nil {
		return err
	}
	err := c.locked(ctx, group, false, func(ctx context.Context, st *state) error {
		if err := st.httpOnly(); err != nil {
			return err
		}
		m, err := st.member(member)
		if err != nil {
			return err
		}
		st.settle()
		if err := st.current(m, generation); err != nil {
			return err
		}
		reached := map[metadata.TopicPartition]int64{}
		for _, p := range positions {
			reached[metadata.TopicPartition{TopicID: p.TopicID, Partition: p.Partition}] = p.Offset
		}
		for i, p := range m.Positions {
			if off, ok := reached[metadata.TopicPartition{TopicID: p.TopicID, Partition: p.Partition}]; ok {
				m.Positions[i].Offset = off
			}
		}
		st.dirty[m.ID] = true
		return nil
	})
	return memberError(err, group, member)
}

// memberError reports a missing group to a member as a missing member:
// either way it joins again from scratch.
func memberError(err error, group, member string) error {
	if errors.Is(err, ErrGroupNotFound) {
		return fmt.Errorf("group %q does not exist, so it has no member %s: %w", group, RedactMemberIDs(member), ErrMemberNotFound)
	}
	return err
}

// validTopics checks, sorts and dedupes a subscription.
func (c *Coordinator) validTopics(topics []string) ([]string, error) {
	if len(topics) == 0 {
		return nil, fmt.Errorf("%w: topics must name at least one topic", ErrInvalidArgument)
	}
	out := slices.Clone(topics)
	sort.Strings(out)
	out = slices.Compact(out)
	if len(out) > c.cfg.MaxTopics {
		return nil, fmt.Errorf("%w: topics names %d topics, more than the %d allowed", ErrInvalidArgument, len(out), c.cfg.MaxTopics)
	}
	for _, t := range out {
		if t == "." || t == ".." || !nameRE.MatchString(t) {
			return nil, fmt.Errorf("%w: topic name %q must be 1 to 249 characters of [a-zA-Z0-9._-]", ErrInvalidArgument, t)
		}
	}
	return out, nil
}

func newMemberID() string { return "m-" + strings.ToLower(ulid.Make().String()) }

// locked runs op with the group locked, after maintenance: expired members
// are removed and topic changes noticed. Rejections (see reject) commit
// the maintenance and return their error, but for a group this operation
// created, which they roll back; other errors roll back.
func (c *Coordinator) locked(ctx context.Context, group string, create bool, op func(ctx context.Context, st *state) error) error {
	var rejected error
	err := c.store.InGroup(ctx, group, create, func(ctx context.Context, tx *metadata.GroupTx) error {
		rejected = nil
		st := newState(tx, &c.cfg)
		st.maintain()
		err := op(ctx, st)
		var r *rejection
		if errors.As(err, &r) {
			if tx.Created() {
				return r.err // leave no empty group behind
			}
			rejected, err = r.err, nil
		}
		if err != nil {
			return err
		}
		st.settle()
		if st.rebalanced {
			c.logger.Info("group rebalanced", "group", group, "generation", st.group.Generation,
				"members", len(st.members), "expired", st.expired)
		}
		if st.kafkaGeneration != st.group.Generation || st.expired > 0 {
			c.logger.Debug("kafka group changed", "group", group, "generation", st.group.Generation, "state", st.group.Kafka.State,
				"members", len(st.members), "removed", st.expired)
		}
		return st.save(ctx)
	})
	if err != nil {
		return translate(err)
	}
	return rejected
}

// shared runs op as locked does, but with the group's lock held shared
// (metadata.InGroupShared): operations under shared do not wait for each
// other, only for changes of the group's state, which hold it exclusive,
// and those wait for them (a change that waits is not overtaken by shared
// requests that arrive after it). It is for operations that check a
// member against the group's state and write rows of their own (offset
// commits): the state they check cannot change before they commit. When
// the group has maintenance to do (an expired member, a rebalance due,
// Kafka timers), or op would change the group's state, nothing is written
// and op runs again under locked. Rejections return their error after the
// member's heartbeat, if op refreshed it, is written, as under locked.
func (c *Coordinator) shared(ctx context.Context, group string, op func(ctx context.Context, st *state) error) error {
	if ok, err := c.tryShared(ctx, group, op); ok {
		return err
	}
	return c.locked(ctx, group, false, op)
}

// tryShared is shared without the fall back to locked: ok is false when
// op must run under locked.
func (c *Coordinator) tryShared(ctx context.Context, group string, op func(ctx context.Context, st *state) error) (ok bool, err error) {
	var rejected error
	err = c.store.InGroupShared(ctx, group, func(ctx context.Context, tx *metadata.GroupTx) error {
		rejected = nil
		st := newState(tx, &c.cfg)
		st.maintain()
		if !st.touchOnly() {
			return errSlowPath
		}
		err := op(ctx, st)
		var r *rejection
		if errors.As(err, &r) {
			rejected, err = r.err, nil
		}
		if err != nil {
			return err
		}
		st.settle()
		if !st.touchOnly() {
			return errSlowPath
		}
		return st.save(ctx)
	})
	switch {
	case errors.Is(err, errSlowPath):
		return false, nil
	case err != nil:
		return true, translate(err)
	}
	return true, rejected
}

// state is a locked group being changed in memory; save writes it.
type state struct {
	tx        *metadata.GroupTx
	group     metadata.Group
	now       time.Time
	members   []*metadata.GroupMember // by id
	byID      map[string]*metadata.GroupMember
	topics    map[string]metadata.GroupTopic // current state of the topics of interest
	removed   []string
	expired   int
	dirty     map[string]bool // rows to write whole
	touched   map[string]bool // heartbeats to refresh
	rebalance bool            // a rebalance is due
	// rebalanced: settle bumped the generation and reassigned.
	rebalanced bool
	// newMember is Config.NewMemberTimeout.
	newMember time.Duration
	deleted   bool

	cfg *Config
	// groupDirty: the group row changed (protocol, Kafka state, pending
	// members) and must be written; notify: a Kafka group changed in a way
	// parked requests must look at.
	groupDirty bool
	notify     bool
	// kafkaGeneration is the generation when the lock was taken.
	kafkaGeneration int64
}

func newState(tx *metadata.GroupTx, cfg *Config) *state {
	st := &state{tx: tx, group: tx.Group(), now: tx.Now(), byID: map[string]*metadata.GroupMember{},
		topics: maps.Clone(tx.SubscribedTopics()), dirty: map[string]bool{}, touched: map[string]bool{},
		cfg: cfg, newMember: cfg.NewMemberTimeout}
	st.kafkaGeneration = st.group.Generation
	if st.group.Kafka.Pending == nil {
		st.group.Kafka.Pending = map[string]time.Time{}
	}
	for _, m := range tx.Members() { // ordered by id
		st.members = append(st.members, &m)
		st.byID[m.ID] = &m
	}
	return st
}

// add adds a new member, keeping the id order.
func (st *state) add(m *metadata.GroupMember) {
	st.members = append(st.members, m)
	sort.Slice(st.members, func(i, j int) bool { return st.members[i].ID < st.members[j].ID })
	st.byID[m.ID] = m
}

func (st *state) remove(id string) {
	st.members = slices.DeleteFunc(st.members, func(m *metadata.GroupMember) bool { return m.ID == id })
	delete(st.byID, id)
	delete(st.dirty, id)
	delete(st.touched, id)
	st.removed = append(st.removed, id)
}

// expiresAt is when a member not heard from again expires: at the end of
// its session, or, while it was never heard from since it joined, after
// the new member timeout if that is shorter.
func (st *state) expiresAt(m *metadata.GroupMember) time.Time {
	timeout := m.SessionTimeout
	if m.HeartbeatAt.Equal(m.JoinedAt) {
		timeout = min(timeout, st.newMember)
	}
	return m.HeartbeatAt.Add(timeout)
}

// firstExpiry is how long until the first member could expire, in whole
// seconds, at least one: when a full group may have a place again.
func (st *state) firstExpiry() time.Duration {
	first := time.Duration(0)
	for i, m := range st.members {
		if d := st.expiresAt(m).Sub(st.now); i == 0 || d < first {
			first = d
		}
	}
	return max(first.Round(time.Second), time.Second)
}

// maintain removes expired members and notices topic changes (HTTP), or
// runs the Kafka state machine's timers (Kafka).
func (st *state) maintain() {
	if st.kafkaManaged() {
		st.maintainKafka()
		return
	}
	for _, m := range slices.Clone(st.members) {
		if st.expiresAt(m).Before(st.now) {
			st.remove(m.ID)
			st.expired++
			st.rebalance = true
		}
	}
	if !maps.Equal(st.snapshot(), st.group.Topics) {
		st.rebalance = true
	}
}

// snapshot is the subscription state an assignment is computed from.
func (st *state) snapshot() map[string]metadata.GroupTopic {
	out := map[string]metadata.GroupTopic{}
	for _, m := range st.members {
		for _, t := range m.Topics {
			if ti, ok := st.topics[t]; ok {
				out[t] = ti
			}
		}
	}
	return out
}

// requireTopics makes sure every topic exists, reading the unknown ones.
func (st *state) requireTopics(ctx context.Context, topics []string) error {
	var missing []string
	for _, t := range topics {
		if _, ok := st.topics[t]; !ok {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	found, err := st.tx.Topics(ctx, missing)
	if err != nil {
		return err
	}
	for _, t := range missing {
		ti, ok := found[t]
		if !ok {
			return reject("topic %q does not exist: %w", t, ErrTopicNotFound)
		}
		st.topics[t] = ti
	}
	return nil
}

// member returns a member or a rejection.
// alive looks up a member for a request that proves it is alive: the
// request counts as a heartbeat, then expired members are settled.
func (st *state) alive(id string) (*metadata.GroupMember, error) {
	m, err := st.member(id)
	if err != nil {
		return nil, err
	}
	st.touched[m.ID] = true
	st.settle()
	return m, nil
}

func (st *state) member(id string) (*metadata.GroupMember, error) {
	m := st.byID[id]
	if m == nil {
		return nil, reject("group %q has no member %s (it left or expired): %w", st.group.Name, RedactMemberIDs(id), ErrMemberNotFound)
	}
	return m, nil
}

// current rejects a member that is not at the group's generation, or that
// names another one. Call after settle.
func (st *state) current(m *metadata.GroupMember, generation int64) error {
	gen := st.group.Generation
	if generation > gen || generation < 0 {
		return reject("%w: generation %d was never the group's (it is at %d)", ErrInvalidArgument, generation, gen)
	}
	if m.Generation != gen || generation != gen {
		return reject("group %q is at generation %d, not %d (the member joined at %d); join again with the member id: %w",
			st.group.Name, gen, generation, m.Generation, ErrStaleGeneration)
	}
	return nil
}

// settle performs a due rebalance in memory: the next generation and every
// member's assignment. It is idempotent.
func (st *state) settle() {
	if !st.rebalance || st.kafkaManaged() {
		return
	}
	st.rebalance, st.rebalanced = false, true
	st.group.Generation++
	st.group.Topics = st.snapshot()
	subs := make(map[string][]string, len(st.members))
	for _, m := range st.members {
		subs[m.ID] = m.Topics
	}
	assigned := RangeAssign(subs, st.group.Topics)
	for _, m := range st.members {
		m.Assignment, m.AssignmentGeneration = assigned[m.ID], st.group.Generation
	}
}

func (st *state) state() string {
	if len(st.members) == 0 {
		return StateEmpty
	}
	if st.kafkaManaged() {
		if st.group.Kafka.State == metadata.KafkaStable {
			return StateStable
		}
		return StateRebalancing
	}
	for _, m := range st.members {
		if m.Generation != st.group.Generation {
			return StateRebalancing
		}
	}
	return StateStable
}

// startOffsets returns a member's assignment with where it starts in each
// partition.
func (st *state) startOffsets(ctx context.Context, m *metadata.GroupMember) ([]Assignment, error) {
	parts := make([]metadata.TopicPartition, len(m.Assignment))
	for i, a := range m.Assignment {
		parts[i] = metadata.TopicPartition{TopicID: a.TopicID, Partition: a.Partition}
	}
	offs, err := st.tx.Offsets(ctx, parts)
	if err != nil {
		return nil, err
	}
	out := make([]Assignment, 0, len(m.Assignment))
	for i, a := range m.Assignment {
		o, ok := offs[parts[i]]
		if !ok {
			continue // deleted under us; the next operation rebalances
		}
		as := Assignment{Topic: a.Topic, TopicID: a.TopicID, Partition: a.Partition, Committed: o.Committed}
		switch {
		case o.Committed != nil:
			as.Offset = *o.Committed
		case m.AutoOffsetReset == ResetEarliest:
			as.Offset = o.LogStartOffset
		default:
			as.Offset = o.HighWatermark
		}
		out = append(out, as)
	}
	return out, nil
}

// save writes the changes.
func (st *state) save(ctx context.Context) error {
	if st.deleted {
		return nil
	}
	if st.kafkaManaged() {
		return st.saveKafka(ctx)
	}
	tx := st.tx
	if err := tx.RemoveMembers(ctx, st.removed...); err != nil {
		return err
	}
	if st.rebalanced || st.groupDirty {
		if err := tx.UpdateGroup(ctx, st.group); err != nil {
			return err
		}
	}
	assignments := map[string][]metadata.GroupPartition{}
	var touch []string
	for _, m := range st.members {
		switch {
		case st.dirty[m.ID]:
			if err := tx.PutMember(ctx, *m); err != nil {
				return err
			}
		case st.rebalanced:
			assignments[m.ID] = m.Assignment
			if st.touched[m.ID] {
				touch = append(touch, m.ID)
			}
		case st.touched[m.ID]:
			touch = append(touch, m.ID)
		}
	}
	if err := tx.SetAssignments(ctx, st.group.Generation, assignments); err != nil {
		return err
	}
	return tx.Touch(ctx, touch...)
}
