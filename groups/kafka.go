package groups

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"silt/metadata"
)

// The Kafka door's consumer groups (Kafka's classic protocol, with the
// assignment computed by the group's leader on the client side). Members
// reach the group through any agent: every decision is taken under the
// group's lock, as for HTTP groups, and a JoinGroup or SyncGroup that
// must wait for other members is parked in its agent without any lock and
// woken through the Waker (NOTIFY on metadata.GroupsChannel), or when a
// timer of the group is due.

// KafkaJoinRequest is a JoinGroup.
type KafkaJoinRequest struct {
	// MemberID is empty for a member joining for the first time.
	MemberID string
	// InstanceID is the static member's group.instance.id, or empty.
	InstanceID   string
	ClientID     string
	ClientHost   string
	ProtocolType string
	// Protocols are the assignors the member offers, in its order of
	// preference, with their metadata.
	Protocols        []metadata.GroupProtocol
	SessionTimeout   time.Duration
	RebalanceTimeout time.Duration
	// RequireKnownMemberID (JoinGroup version 4 and later, KIP-394): a new
	// dynamic member is first given its id (MemberIDRequiredError) and
	// joins with it.
	RequireKnownMemberID bool
	// SkipAssignment (JoinGroup version 9, KIP-814): a static leader
	// rejoining a stable group may be told it leads but must not assign.
	SkipAssignment bool
	// Subscription is the topics the member reads, when the caller could
	// read them from its metadata (Kafka's consumer protocol); describe
	// and the offsets view show them.
	Subscription []string
}

// KafkaMember is a member in the leader's JoinGroup answer.
type KafkaMember struct {
	ID         string
	InstanceID string
	Metadata   []byte
}

// KafkaJoinResult answers a JoinGroup.
type KafkaJoinResult struct {
	MemberID     string
	Generation   int64
	ProtocolType string
	ProtocolName string
	Leader       string
	// Members is the generation's members, for the leader only.
	Members []KafkaMember
	// SkipAssignment: the leader must not assign (KIP-814).
	SkipAssignment bool
}

// KafkaAssignment is the leader's assignment for one member, as it sent
// it.
type KafkaAssignment struct {
	MemberID   string
	Assignment []byte
}

// TopicPartitionName names a partition by topic name.
type TopicPartitionName struct {
	Topic     string
	Partition int32
}

// KafkaSyncRequest is a SyncGroup; only the leader's carries assignments.
type KafkaSyncRequest struct {
	MemberID   string
	InstanceID string
	Generation int64
	// ProtocolType and ProtocolName, when set (version 5), must be the
	// group's.
	ProtocolType string
	ProtocolName string
	Assignments  []KafkaAssignment
	// Decode, when set, reads the partitions an assignment names under
	// the group's protocol type (nil when it cannot): describe and the
	// offsets view show them.
	Decode func(protocolType string, assignment []byte) []TopicPartitionName
}

// KafkaSyncResult answers a SyncGroup.
type KafkaSyncResult struct {
	Assignment   []byte
	ProtocolType string
	ProtocolName string
}

// KafkaMemberRef names a member leaving: by member id, or by static
// instance id (then the member id, if given, must match).
type KafkaMemberRef struct {
	MemberID   string
	InstanceID string
}

// KafkaCommitRequest is an OffsetCommit. A Generation below 0 with no
// MemberID is a commit of a group without members (tools, and consumers
// that assign partitions themselves).
type KafkaCommitRequest struct {
	MemberID   string
	InstanceID string
	Generation int64
	Offsets    []OffsetCommit
}

// Standalone reports whether the commit is not a member's.
func (r KafkaCommitRequest) Standalone() bool { return r.MemberID == "" && r.Generation < 0 }

// KafkaDescription is a group as DescribeGroups shows it.
type KafkaDescription struct {
	// State is Kafka's name: Empty, PreparingRebalance,
	// CompletingRebalance or Stable.
	State        string
	ProtocolType string
	ProtocolName string
	Members      []KafkaMemberDescription
}

// KafkaMemberDescription is a member in a KafkaDescription.
type KafkaMemberDescription struct {
	ID         string
	InstanceID string
	ClientID   string
	ClientHost string
	Metadata   []byte // for the group's assignor
	Assignment []byte
}

// HTTPProtocolType is the protocol type Kafka's APIs report for groups
// whose members consume over HTTP.
const HTTPProtocolType = "silt-http"

// KafkaStateName is Kafka's name of a group state.
func KafkaStateName(state string) string {
	switch state {
	case metadata.KafkaPreparingRebalance:
		return "PreparingRebalance"
	case metadata.KafkaCompletingRebalance:
		return "CompletingRebalance"
	case metadata.KafkaStable:
		return "Stable"
	}
	return "Empty"
}

var instanceIDRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// maxKafkaMemberID bounds the member ids a request may name.
const maxKafkaMemberID = 512

// KafkaJoin runs a JoinGroup. It answers at once when it can (a follower
// rejoining a stable group, a static member coming back, a join that
// completes the rebalance); otherwise it waits, without holding any lock,
// until the generation it joined completes, ctx ends, or the member is
// removed (ErrMemberNotFound). A new member of version 4 and later gets a
// *MemberIDRequiredError.
func (c *Coordinator) KafkaJoin(ctx context.Context, group string, req KafkaJoinRequest) (KafkaJoinResult, error) {
	if err := ValidName(group); err != nil {
		return KafkaJoinResult{}, err
	}
	if req.SessionTimeout < c.cfg.MinSessionTimeout || req.SessionTimeout > c.cfg.MaxSessionTimeout {
		return KafkaJoinResult{}, fmt.Errorf("%w: session timeout %d ms must be from %d to %d ms", ErrInvalidSessionTimeout,
			req.SessionTimeout.Milliseconds(), c.cfg.MinSessionTimeout.Milliseconds(), c.cfg.MaxSessionTimeout.Milliseconds())
	}
	if req.RebalanceTimeout <= 0 {
		req.RebalanceTimeout = req.SessionTimeout // JoinGroup version 0 has none
	}
	req.RebalanceTimeout = min(req.RebalanceTimeout, maxRebalanceTimeout)
	if req.ProtocolType == "" || len(req.Protocols) == 0 {
		return KafkaJoinResult{}, fmt.Errorf("%w: a JoinGroup needs a protocol type and at least one protocol", ErrInconsistentProtocol)
	}
	size := 0
	for _, p := range req.Protocols {
		size += len(p.Name) + len(p.Metadata)
	}
	if size > c.cfg.MaxKafkaMetadataBytes {
		return KafkaJoinResult{}, fmt.Errorf("%w: the protocols' metadata is %d bytes; at most %d are kept", ErrInvalidArgument, size, c.cfg.MaxKafkaMetadataBytes)
	}
	if req.InstanceID != "" && !instanceIDRE.MatchString(req.InstanceID) {
		return KafkaJoinResult{}, fmt.Errorf("%w: group.instance.id %q must be 1 to 249 characters of [a-zA-Z0-9._-]", ErrInvalidArgument, req.InstanceID)
	}
	if len(req.MemberID) > maxKafkaMemberID {
		return KafkaJoinResult{}, fmt.Errorf("%w: member id of %d bytes", ErrMemberNotFound, len(req.MemberID))
	}
	req.Subscription = c.subscription(req.Subscription)

	var res *KafkaJoinResult
	var groupID, gen0 int64
	var waitFor, required string
	err := c.locked(ctx, group, true, func(ctx context.Context, st *state) error {
		if err := st.takeOver(metadata.GroupProtocolKafka); err != nil {
			return err
		}
		d, err := c.kafkaJoin(st, req)
		if err != nil {
			return err
		}
		// A member id handed out (required) is kept with the group: the
		// transaction commits, and the error is returned after.
		groupID, gen0, waitFor, res, required = st.group.ID, st.group.Generation, d.wait, d.res, d.required
		return nil
	})
	switch {
	case err != nil:
		return KafkaJoinResult{}, err
	case required != "":
		return KafkaJoinResult{}, &MemberIDRequiredError{MemberID: required}
	case res != nil:
		return *res, nil
	}
	return c.awaitJoin(ctx, group, groupID, waitFor, gen0)
}

// maxRebalanceTimeout caps a member's rebalance timeout (Kafka's
// max.poll.interval.ms is 5 minutes by default).
const maxRebalanceTimeout = time.Hour

// subscription sorts, dedupes and bounds a member's topics.
func (c *Coordinator) subscription(topics []string) []string {
	out := slices.Clone(topics)
	sort.Strings(out)
	out = slices.Compact(out)
	out = slices.DeleteFunc(out, func(t string) bool { return t == "" || len(t) > 249 })
	if len(out) > c.cfg.MaxTopics {
		out = out[:c.cfg.MaxTopics]
	}
	if out == nil {
		out = []string{}
	}
	return out
}

// joinDecision is what a JoinGroup decided under the lock: an answer now
// (res), the member whose join waits for the next generation (wait), or a
// member id handed out (required).
type joinDecision struct {
	res      *KafkaJoinResult
	wait     string
	required string
}

func answer(r KafkaJoinResult) joinDecision { return joinDecision{res: &r} }

// kafkaJoin decides a JoinGroup under the lock.
func (c *Coordinator) kafkaJoin(st *state, req KafkaJoinRequest) (joinDecision, error) {
	k := st.kstate()
	if k.State != metadata.KafkaEmpty || len(st.members) > 0 {
		if k.ProtocolType != req.ProtocolType {
			return joinDecision{}, reject("group %q uses protocol type %q, not %q: %w", st.group.Name, k.ProtocolType, req.ProtocolType, ErrInconsistentProtocol)
		}
		if common := st.commonProtocols(req.Protocols); len(common) == 0 && len(st.members) > 0 {
			return joinDecision{}, reject("group %q: the member offers no assignor that every member offers: %w", st.group.Name, ErrInconsistentProtocol)
		}
	}
	if req.MemberID != "" && req.InstanceID != "" && st.fenced(req.InstanceID, req.MemberID) {
		return joinDecision{}, reject("group %q: instance id %q belongs to another member now: %w", st.group.Name, req.InstanceID, ErrFencedInstance)
	}

	var m *metadata.GroupMember
	switch {
	case req.MemberID == "" && req.InstanceID != "" && st.byInstance(req.InstanceID) != nil:
		return c.staticRejoin(st, req)
	case req.MemberID == "" && req.InstanceID == "" && req.RequireKnownMemberID:
		if err := st.roomForMember(c.cfg.MaxMembers); err != nil {
			return joinDecision{}, err
		}
		id := newKafkaMemberID(req.ClientID, "")
		k.Pending[id] = st.now.Add(req.SessionTimeout)
		st.groupDirty = true
		return joinDecision{required: id}, nil
	case req.MemberID == "" || (st.byID[req.MemberID] == nil && !k.Pending[req.MemberID].IsZero()):
		if err := st.roomForMember(c.cfg.MaxMembers); err != nil {
			return joinDecision{}, err
		}
		id := req.MemberID
		if id == "" {
			id = newKafkaMemberID(req.ClientID, req.InstanceID)
		}
		delete(k.Pending, id)
		m = &metadata.GroupMember{ID: id, JoinedAt: st.now, AutoOffsetReset: ""}
		c.updateKafkaMember(st, m, req)
		st.add(m)
		st.touch(m)
		if k.State == metadata.KafkaEmpty {
			st.startFirstRebalance(req.RebalanceTimeout)
		} else if k.State != metadata.KafkaPreparingRebalance {
			st.prepareRebalance()
		} else {
			st.newMemberJoined()
			st.groupDirty = true
		}
		m.KafkaPhase = metadata.PhaseJoining
	default:
		m = st.byID[req.MemberID]
		if m == nil {
			return joinDecision{}, reject("group %q has no member %s (it left or expired): %w", st.group.Name, req.MemberID, ErrMemberNotFound)
		}
		st.touch(m)
		switch k.State {
		case metadata.KafkaPreparingRebalance:
			c.updateKafkaMember(st, m, req)
			m.KafkaPhase = metadata.PhaseJoining
		case metadata.KafkaCompletingRebalance:
			if sameProtocols(m.Protocols, req.Protocols) {
				// It missed its JoinGroup answer: give it again.
				return answer(st.joinResult(m)), nil
			}
			c.updateKafkaMember(st, m, req)
			st.prepareRebalance()
			m.KafkaPhase = metadata.PhaseJoining
		case metadata.KafkaStable:
			if m.ID != k.Leader && sameProtocols(m.Protocols, req.Protocols) {
				// A follower with nothing new: the current generation.
				return answer(st.joinResult(m)), nil
			}
			// The leader rejoining, or changed metadata: rebalance.
			c.updateKafkaMember(st, m, req)
			st.prepareRebalance()
			m.KafkaPhase = metadata.PhaseJoining
		default:
			return joinDecision{}, reject("group %q is empty: %w", st.group.Name, ErrMemberNotFound)
		}
	}
	st.setDirty(m)
	return st.joinOrWait(m), nil
}

// joinOrWait completes the join if it is due, and answers m if that put
// it in a generation.
func (st *state) joinOrWait(m *metadata.GroupMember) joinDecision {
	if st.joinDue() {
		st.completeJoin()
	}
	if m.KafkaPhase != metadata.PhaseJoining {
		return answer(st.joinResult(m))
	}
	return joinDecision{wait: m.ID}
}

// staticRejoin is a static member coming back under a new member id (its
// process restarted): it takes the old member's place, assignment
// included, and a stable group does not rebalance unless the assignor
// would change (KIP-345).
func (c *Coordinator) staticRejoin(st *state, req KafkaJoinRequest) (joinDecision, error) {
	k := st.kstate()
	old := st.byInstance(req.InstanceID)
	oldLeader := k.Leader
	m := *old
	m.ID = newKafkaMemberID(req.ClientID, req.InstanceID)
	st.remove(old.ID)
	c.updateKafkaMember(st, &m, req)
	st.add(&m)
	st.touch(&m)
	st.setDirty(&m)
	if k.Leader == old.ID {
		k.Leader = m.ID
	}
	st.changed()
	switch k.State {
	case metadata.KafkaStable:
		leader := st.byID[k.Leader]
		if leader == nil {
			leader = &m
		}
		if st.selectProtocol(leader) == k.ProtocolName {
			// A stable group hands out no new assignment: a rejoining
			// leader is told it leads but must not assign (KIP-814), or,
			// before JoinGroup version 9, is named by its old id, so that
			// it does not take itself for the leader (as Kafka does).
			r := st.joinResult(&m)
			switch {
			case m.ID == k.Leader && req.SkipAssignment:
				r.SkipAssignment = true
			default:
				r.Leader, r.Members = oldLeader, nil
			}
			return answer(r), nil
		}
		st.prepareRebalance()
	case metadata.KafkaCompletingRebalance:
		// The leader may be assigning to the old member id: start over.
		st.prepareRebalance()
	}
	m.KafkaPhase = metadata.PhaseJoining
	return st.joinOrWait(&m), nil
}

// updateKafkaMember takes a JoinGroup's fields into a member.
func (c *Coordinator) updateKafkaMember(st *state, m *metadata.GroupMember, req KafkaJoinRequest) {
	m.InstanceID = req.InstanceID
	m.ClientID, m.ClientHost = req.ClientID, req.ClientHost
	m.SessionTimeout, m.RebalanceTimeout = req.SessionTimeout, req.RebalanceTimeout
	m.Protocols = slices.Clone(req.Protocols)
	m.Topics = req.Subscription
	st.kstate().ProtocolType = req.ProtocolType
	st.setDirty(m)
}

// roomForMember refuses a new member of a full group.
func (st *state) roomForMember(maxMembers int) error {
	if n := len(st.members) + len(st.kstate().Pending); n >= maxMembers {
		return reject("%w", &GroupFullError{Group: st.group.Name, Members: n, RetryAfter: st.firstExpiry()})
	}
	return nil
}

var clientIDChars = regexp.MustCompile(`[^a-zA-Z0-9._-]`)

// newKafkaMemberID makes a member id as Kafka does: the static instance id,
// or else the client id, a dash and a unique suffix (clients recognize
// their own instance by the prefix).
func newKafkaMemberID(clientID, instanceID string) string {
	if instanceID != "" {
		return instanceID + "-" + strings.ToLower(ulid.Make().String())
	}
	prefix := clientIDChars.ReplaceAllString(clientID, "")
	if len(prefix) > 100 {
		prefix = prefix[:100]
	}
	if prefix == "" {
		prefix = "member"
	}
	return prefix + "-" + strings.ToLower(ulid.Make().String())
}

// awaitJoin waits until member's join is answered: it is in a generation
// after gen0.
func (c *Coordinator) awaitJoin(ctx context.Context, group string, groupID int64, member string, gen0 int64) (KafkaJoinResult, error) {
	var res KafkaJoinResult
	err := c.park(ctx, group, groupID, func(st *state) (bool, error) {
		m := st.byID[member]
		switch {
		case m == nil:
			return false, fmt.Errorf("group %q has no member %s any more (it was removed while it waited): %w", group, member, ErrMemberNotFound)
		case m.Generation > gen0:
			res = st.joinResult(m)
			return true, nil
		}
		return false, nil
	})
	return res, err
}

// park waits on a group until done reports true or an error: it looks at
// a snapshot of the group (no lock) whenever the group changes (Waker) and
// when a timer of the group is due, when it first runs the timer under the
// lock. done sees the snapshot; it must not change it.
func (c *Coordinator) park(ctx context.Context, group string, groupID int64, done func(st *state) (bool, error)) error {
	ran := false // a due timer was just run: never loop without waiting
	for {
		var wake <-chan struct{}
		if c.waker != nil {
			wake = c.waker.Watch(groupID)
		}
		var finished bool
		var doneErr error
		wait := c.cfg.MaxParkedWait
		due := false
		err := c.store.ViewGroup(ctx, group, func(ctx context.Context, tx *metadata.GroupTx) error {
			st := newState(tx, &c.cfg)
			if st.group.ID != groupID {
				return fmt.Errorf("group %q was deleted: %w", group, ErrMemberNotFound)
			}
			finished, doneErr = done(st)
			if d, ok := st.kafkaNextDeadline(); ok {
				if d <= 0 {
					due = true
				}
				wait = min(wait, d)
			}
			return nil
		})
		switch {
		case errors.Is(err, metadata.ErrGroupNotFound):
			return fmt.Errorf("group %q was deleted: %w", group, ErrMemberNotFound)
		case err != nil:
			return translate(err)
		case doneErr != nil || finished:
			return doneErr
		}
		if due && !ran {
			ran = true
			if err := c.locked(ctx, group, false, func(context.Context, *state) error { return nil }); err != nil {
				if errors.Is(err, ErrGroupNotFound) {
					return fmt.Errorf("group %q was deleted: %w", group, ErrMemberNotFound)
				}
				return err
			}
			continue
		}
		ran = false
		wait = max(wait, minParkedWait)
		t := time.NewTimer(wait)
		select {
		case <-wake:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		t.Stop()
	}
}

// minParkedWait is the least a parked request waits between two looks
// that found a timer due: time for the clocks to agree.
const minParkedWait = 20 * time.Millisecond

// KafkaSync runs a SyncGroup: the leader's stores the assignment of every
// member and answers at once; a follower's answers with its assignment
// once the leader's has arrived.
func (c *Coordinator) KafkaSync(ctx context.Context, group string, req KafkaSyncRequest) (KafkaSyncResult, error) {
	if err := ValidName(group); err != nil {
		return KafkaSyncResult{}, err
	}
	for _, a := range req.Assignments {
		if len(a.Assignment) > c.cfg.MaxKafkaMetadataBytes {
			return KafkaSyncResult{}, fmt.Errorf("%w: an assignment of %d bytes; at most %d are kept", ErrInvalidArgument, len(a.Assignment), c.cfg.MaxKafkaMetadataBytes)
		}
	}
	var out KafkaSyncResult
	var groupID int64
	wait := false
	err := c.locked(ctx, group, false, func(ctx context.Context, st *state) error {
		m, err := st.kafkaMember(req.MemberID, req.InstanceID, req.Generation)
		if err != nil {
			return err
		}
		k := st.kstate()
		out.ProtocolType, out.ProtocolName = k.ProtocolType, k.ProtocolName
		if (req.ProtocolType != "" && req.ProtocolType != k.ProtocolType) || (req.ProtocolName != "" && req.ProtocolName != k.ProtocolName) {
			return reject("group %q uses %s/%s: %w", st.group.Name, k.ProtocolType, k.ProtocolName, ErrInconsistentProtocol)
		}
		st.touch(m)
		switch k.State {
		case metadata.KafkaPreparingRebalance:
			return reject("group %q is rebalancing: %w", st.group.Name, ErrRebalanceInProgress)
		case metadata.KafkaStable:
			out.Assignment = assignmentAt(m, st.group.Generation)
			return nil
		}
		// Completing the rebalance.
		m.KafkaPhase = metadata.PhaseSynced
		st.setDirty(m)
		if m.ID != k.Leader {
			wait, groupID = true, st.group.ID
			return nil
		}
		given := map[string]KafkaAssignment{}
		for _, a := range req.Assignments {
			given[a.MemberID] = a
		}
		for _, o := range st.members {
			a := given[o.ID]
			o.KafkaAssignment = a.Assignment
			if o.KafkaAssignment == nil {
				o.KafkaAssignment = []byte{}
			}
			o.AssignmentGeneration = st.group.Generation
			o.Assignment = nil
			if req.Decode != nil {
				o.Assignment = st.resolve(req.Decode(k.ProtocolType, o.KafkaAssignment))
			}
			st.setDirty(o)
		}
		k.State = metadata.KafkaStable
		k.RebalanceDeadline = nil
		st.changed()
		out.Assignment = m.KafkaAssignment
		return nil
	})
	if err != nil || !wait {
		return out, kafkaMemberError(err)
	}
	err = c.park(ctx, group, groupID, func(st *state) (bool, error) {
		m := st.byID[req.MemberID]
		switch {
		case m == nil:
			return false, fmt.Errorf("group %q has no member %s any more: %w", group, req.MemberID, ErrMemberNotFound)
		case m.AssignmentGeneration == req.Generation:
			out.Assignment = assignmentAt(m, req.Generation)
			return true, nil
		case st.group.Generation != req.Generation || st.kstate().State == metadata.KafkaPreparingRebalance:
			return false, fmt.Errorf("group %q began another rebalance: %w", group, ErrRebalanceInProgress)
		}
		return false, nil
	})
	return out, err
}

// assignmentAt is a member's assignment for generation (empty when none).
func assignmentAt(m *metadata.GroupMember, generation int64) []byte {
	if m.AssignmentGeneration != generation || m.KafkaAssignment == nil {
		return []byte{}
	}
	return m.KafkaAssignment
}

// resolve names assigned partitions with their topic ids, where known.
func (st *state) resolve(parts []TopicPartitionName) []metadata.GroupPartition {
	out := make([]metadata.GroupPartition, 0, len(parts))
	for _, p := range parts {
		gp := metadata.GroupPartition{Topic: p.Topic, Partition: p.Partition}
		if t, ok := st.topics[p.Topic]; ok {
			gp.TopicID = t.ID
		}
		out = append(out, gp)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Partition < out[j].Partition
	})
	return out
}

// kafkaMember checks a member's request as Kafka does, in Kafka's order:
// a fenced static instance, an unknown member, another generation, an
// empty group.
func (st *state) kafkaMember(memberID, instanceID string, generation int64) (*metadata.GroupMember, error) {
	if !st.kafkaManaged() {
		return nil, reject("group %q is consumed over HTTP: %w", st.group.Name, ErrMemberNotFound)
	}
	if instanceID != "" && st.fenced(instanceID, memberID) {
		return nil, reject("group %q: instance id %q belongs to another member now: %w", st.group.Name, instanceID, ErrFencedInstance)
	}
	m := st.byID[memberID]
	if m == nil {
		return nil, reject("group %q has no member %s (it left or expired): %w", st.group.Name, memberID, ErrMemberNotFound)
	}
	if generation != st.group.Generation {
		return nil, reject("group %q is at generation %d, not %d: %w", st.group.Name, st.group.Generation, generation, ErrStaleGeneration)
	}
	if st.kstate().State == metadata.KafkaEmpty {
		return nil, reject("group %q is empty: %w", st.group.Name, ErrMemberNotFound)
	}
	return m, nil
}

// kafkaMemberError reports a missing group as a missing member.
func kafkaMemberError(err error) error {
	if errors.Is(err, ErrGroupNotFound) {
		return fmt.Errorf("%v: %w", err, ErrMemberNotFound)
	}
	return err
}

// KafkaHeartbeat keeps a member alive; ErrRebalanceInProgress tells it to
// rejoin.
func (c *Coordinator) KafkaHeartbeat(ctx context.Context, group, member, instanceID string, generation int64) error {
	if err := ValidName(group); err != nil {
		return err
	}
	var inRebalance bool
	err := c.locked(ctx, group, false, func(ctx context.Context, st *state) error {
		m, err := st.kafkaMember(member, instanceID, generation)
		if err != nil {
			return err
		}
		st.touch(m)
		inRebalance = st.kstate().State == metadata.KafkaPreparingRebalance
		return nil
	})
	if err == nil && inRebalance {
		return fmt.Errorf("group %q is rebalancing; join again: %w", group, ErrRebalanceInProgress)
	}
	return kafkaMemberError(err)
}

// KafkaLeave removes members; it returns one error (or nil) per member.
func (c *Coordinator) KafkaLeave(ctx context.Context, group string, members []KafkaMemberRef) ([]error, error) {
	if err := ValidName(group); err != nil {
		return nil, err
	}
	errs := make([]error, len(members))
	err := c.locked(ctx, group, false, func(ctx context.Context, st *state) error {
		if !st.kafkaManaged() {
			for i := range errs {
				errs[i] = fmt.Errorf("group %q is consumed over HTTP: %w", group, ErrMemberNotFound)
			}
			return nil
		}
		left := false
		for i, ref := range members {
			var m *metadata.GroupMember
			if ref.InstanceID != "" {
				m = st.byInstance(ref.InstanceID)
				switch {
				case m == nil:
					errs[i] = fmt.Errorf("group %q has no member with instance id %q: %w", group, ref.InstanceID, ErrMemberNotFound)
					continue
				case ref.MemberID != "" && ref.MemberID != m.ID:
					errs[i] = fmt.Errorf("group %q: instance id %q belongs to another member now: %w", group, ref.InstanceID, ErrFencedInstance)
					continue
				}
			} else if m = st.byID[ref.MemberID]; m == nil {
				if _, ok := st.kstate().Pending[ref.MemberID]; ok {
					delete(st.kstate().Pending, ref.MemberID)
					st.changed()
					continue
				}
				errs[i] = fmt.Errorf("group %q has no member %s: %w", group, ref.MemberID, ErrMemberNotFound)
				continue
			}
			st.remove(m.ID)
			left = true
		}
		if left {
			st.membersLeft()
			st.advanceKafka()
		}
		return nil
	})
	return errs, translate(err)
}

// KafkaCommit stores offsets committed over Kafka: a member's at the
// group's generation (refused while the group completes a rebalance,
// allowed while it prepares one, as Kafka does), or a standalone commit on
// a group without members. The error is the whole request's; the slice
// holds each offset's own (nil when committed).
func (c *Coordinator) KafkaCommit(ctx context.Context, group string, req KafkaCommitRequest) ([]error, error) {
	if err := ValidName(group); err != nil {
		return nil, err
	}
	errs := make([]error, len(req.Offsets))
	op := func(ctx context.Context, st *state) error {
		clear(errs) // from a try that handed over to the locked path
		if req.Standalone() {
			if len(st.members) > 0 {
				return reject("group %q has %d members; commit as a member, with its id and generation: %w", group, len(st.members), ErrMemberNotFound)
			}
		} else {
			m, err := st.kafkaMember(req.MemberID, req.InstanceID, req.Generation)
			if err != nil {
				return err
			}
			if st.kstate().State == metadata.KafkaCompletingRebalance {
				return reject("group %q is completing a rebalance: %w", group, ErrRebalanceInProgress)
			}
			st.touch(m)
		}
		names := make([]string, 0, len(req.Offsets))
		for _, o := range req.Offsets {
			names = append(names, o.Topic)
		}
		topics, err := st.tx.Topics(ctx, names)
		if err != nil {
			return err
		}
		var commits []metadata.GroupCommit
		var idx []int
		for i, o := range req.Offsets {
			t, ok := topics[o.Topic]
			switch {
			case len(o.Metadata) > c.cfg.MaxMetadataBytes:
				errs[i] = fmt.Errorf("%s/%d: metadata is %d bytes; at most %d are kept: %w", o.Topic, o.Partition, len(o.Metadata), c.cfg.MaxMetadataBytes, ErrMetadataTooLarge)
			case strings.IndexByte(o.Metadata, 0) >= 0:
				errs[i] = fmt.Errorf("%s/%d: metadata must not contain NUL characters: %w", o.Topic, o.Partition, ErrInvalidArgument)
			case !ok:
				errs[i] = fmt.Errorf("topic %q does not exist: %w", o.Topic, ErrTopicNotFound)
			case o.Partition < 0 || o.Partition >= t.Partitions:
				errs[i] = fmt.Errorf("topic %q has no partition %d: %w", o.Topic, o.Partition, ErrPartitionNotFound)
			case o.Offset < 0:
				errs[i] = fmt.Errorf("%s/%d: offset %d is negative: %w", o.Topic, o.Partition, o.Offset, ErrInvalidOffset)
			default:
				commits = append(commits, metadata.GroupCommit{TopicID: t.ID, Partition: o.Partition, Offset: o.Offset, Metadata: o.Metadata})
				idx = append(idx, i)
			}
		}
		// Duplicates keep the last, as Kafka does.
		last := map[metadata.TopicPartition]int{}
		for j, cm := range commits {
			last[metadata.TopicPartition{TopicID: cm.TopicID, Partition: cm.Partition}] = j
		}
		parts := make([]metadata.TopicPartition, 0, len(last))
		for tp := range last {
			parts = append(parts, tp)
		}
		offs, err := st.tx.Offsets(ctx, parts)
		if err != nil {
			return err
		}
		var keep []metadata.GroupCommit
		for j, cm := range commits {
			tp := metadata.TopicPartition{TopicID: cm.TopicID, Partition: cm.Partition}
			if last[tp] != j {
				continue
			}
			o, ok := offs[tp]
			switch {
			case !ok:
				errs[idx[j]] = fmt.Errorf("partition %d does not exist: %w", cm.Partition, ErrPartitionNotFound)
			case cm.Offset > o.HighWatermark:
				errs[idx[j]] = fmt.Errorf("%s/%d: offset %d is past the high watermark %d: %w", req.Offsets[idx[j]].Topic, cm.Partition, cm.Offset, o.HighWatermark, ErrInvalidOffset)
			default:
				keep = append(keep, cm)
			}
		}
		return st.tx.Commit(ctx, keep)
	}
	if req.Standalone() {
		// A standalone commit may create the group, and needs it empty.
		err := c.locked(ctx, group, true, op)
		return errs, translate(err)
	}
	return errs, kafkaCommitError(c.shared(ctx, group, op))
}

// kafkaCommitError: a member committing to a group that does not exist
// has an old generation (Kafka answers ILLEGAL_GENERATION).
func kafkaCommitError(err error) error {
	if errors.Is(err, ErrGroupNotFound) {
		return fmt.Errorf("%v: %w", err, ErrStaleGeneration)
	}
	return err
}

// KafkaOffsets returns the group's committed offsets, without locking it
// (none when the group does not exist).
func (c *Coordinator) KafkaOffsets(ctx context.Context, group string) ([]metadata.CommittedOffset, error) {
	if err := ValidName(group); err != nil {
		return nil, err
	}
	offs, err := c.store.CommittedOffsets(ctx, group)
	return offs, translate(err)
}

// KafkaDescribe describes a group as DescribeGroups does, after the
// group's timers ran.
func (c *Coordinator) KafkaDescribe(ctx context.Context, group string) (KafkaDescription, error) {
	if err := ValidName(group); err != nil {
		return KafkaDescription{}, err
	}
	var d KafkaDescription
	err := c.locked(ctx, group, false, func(ctx context.Context, st *state) error {
		st.settle()
		if !st.kafkaManaged() {
			d.State = "Empty"
			if len(st.members) > 0 {
				d.ProtocolType = HTTPProtocolType
				d.State = "Stable"
				if st.state() == StateRebalancing {
					d.State = "PreparingRebalance"
				}
			}
			for _, m := range st.members {
				d.Members = append(d.Members, KafkaMemberDescription{ID: m.ID})
			}
			return nil
		}
		k := st.kstate()
		d = KafkaDescription{State: KafkaStateName(k.State), ProtocolType: k.ProtocolType, ProtocolName: k.ProtocolName}
		for _, m := range st.members {
			md := KafkaMemberDescription{ID: m.ID, InstanceID: m.InstanceID, ClientID: m.ClientID, ClientHost: m.ClientHost}
			for _, p := range m.Protocols {
				if p.Name == k.ProtocolName {
					md.Metadata = p.Metadata
				}
			}
			if k.State == metadata.KafkaStable {
				md.Assignment = assignmentAt(m, st.group.Generation)
			}
			d.Members = append(d.Members, md)
		}
		return nil
	})
	return d, err
}

// KafkaDeleteOffsets deletes committed offsets (OffsetDelete); it returns
// one error per partition: a group with members keeps the offsets of the
// topics they read (ErrGroupSubscribed).
func (c *Coordinator) KafkaDeleteOffsets(ctx context.Context, group string, parts []TopicPartitionName) ([]error, error) {
	if err := ValidName(group); err != nil {
		return nil, err
	}
	errs := make([]error, len(parts))
	err := c.locked(ctx, group, false, func(ctx context.Context, st *state) error {
		st.settle()
		subscribed := map[string]bool{}
		unknown := false // a member whose topics are not known
		for _, m := range st.members {
			if len(m.Topics) == 0 {
				unknown = true
			}
			for _, t := range m.Topics {
				subscribed[t] = true
			}
		}
		names := make([]string, 0, len(parts))
		for _, p := range parts {
			names = append(names, p.Topic)
		}
		topics, err := st.tx.Topics(ctx, names)
		if err != nil {
			return err
		}
		var del []metadata.TopicPartition
		for i, p := range parts {
			t, ok := topics[p.Topic]
			switch {
			case !ok:
				errs[i] = fmt.Errorf("topic %q does not exist: %w", p.Topic, ErrTopicNotFound)
			case p.Partition < 0 || p.Partition >= t.Partitions:
				errs[i] = fmt.Errorf("topic %q has no partition %d: %w", p.Topic, p.Partition, ErrPartitionNotFound)
			case len(st.members) > 0 && (subscribed[p.Topic] || unknown):
				errs[i] = fmt.Errorf("members of group %q read topic %q: %w", group, p.Topic, ErrGroupSubscribed)
			default:
				del = append(del, metadata.TopicPartition{TopicID: t.ID, Partition: p.Partition})
			}
		}
		return st.tx.DeleteOffsets(ctx, del)
	})
	return errs, err
}
