package groups

import (
	"cmp"
	"context"
	"slices"
	"time"

	"silt/metadata"
)

// The Kafka classic group protocol's state machine, on a locked group
// (state). It follows Kafka's GroupCoordinator:
//
//	empty --JoinGroup--> preparing_rebalance --every member joined, or the
//	rebalance timeout--> completing_rebalance --the leader's SyncGroup-->
//	stable --a member joins, leaves, expires or changes its metadata, or the
//	leader rejoins--> preparing_rebalance
//
// Timers (the rebalance deadline, the initial join delay, session expiry)
// are checked by maintainKafka whenever a request takes the group's lock;
// requests parked on the group wake at the earliest of them
// (kafkaNextDeadline) and take the lock to run them.

// kafkaManaged reports whether the group is the Kafka door's.
func (st *state) kafkaManaged() bool { return st.group.Protocol == metadata.GroupProtocolKafka }

// takeOver makes the group proto's. A group with members of the other
// kind is refused (ErrProtocolMismatch); an empty group changes hands,
// keeping its committed offsets and generation.
func (st *state) takeOver(proto string) error {
	if st.group.Protocol == proto {
		return nil
	}
	if len(st.members) > 0 {
		other := "HTTP"
		if st.kafkaManaged() {
			other = "the Kafka protocol"
		}
		return reject("group %q has %d members consuming over %s; a group is consumed over one protocol at a time: %w",
			st.group.Name, len(st.members), other, ErrProtocolMismatch)
	}
	st.group.Protocol = proto
	st.group.Kafka = metadata.KafkaGroupState{State: metadata.KafkaEmpty, Pending: map[string]time.Time{}}
	st.groupDirty = true
	return nil
}

// httpOnly refuses HTTP member operations on a Kafka group.
func (st *state) httpOnly() error {
	if st.kafkaManaged() && len(st.members) > 0 {
		return reject("group %q is consumed over the Kafka protocol; its members are Kafka clients: %w", st.group.Name, ErrProtocolMismatch)
	}
	return nil
}

func (st *state) kstate() *metadata.KafkaGroupState { return &st.group.Kafka }

// changed marks the group row for writing and parked requests for waking.
func (st *state) changed() {
	st.groupDirty = true
	st.notify = true
}

// touch records a sign of life of a Kafka member.
func (st *state) touch(m *metadata.GroupMember) {
	m.HeartbeatAt = st.now
	st.touched[m.ID] = true
}

// sessionBound reports whether m's session timeout applies now: members
// whose JoinGroup waits for the rebalance, or whose SyncGroup waits for the
// leader, do not heartbeat (the rebalance deadline bounds them instead).
func (st *state) sessionBound(m *metadata.GroupMember) bool {
	switch k := st.kstate(); {
	case k.State == metadata.KafkaPreparingRebalance && m.KafkaPhase == metadata.PhaseJoining:
		return false
	case k.State == metadata.KafkaCompletingRebalance && m.KafkaPhase == metadata.PhaseSynced:
		return false
	}
	return true
}

func (st *state) sessionEnd(m *metadata.GroupMember) time.Time {
	return m.HeartbeatAt.Add(m.SessionTimeout)
}

// maintainKafka drops expired pending ids and members, then advances the
// state machine: a join that is due completes, members that did not sync
// in time are removed.
func (st *state) maintainKafka() {
	k := st.kstate()
	for id, exp := range k.Pending {
		if !exp.After(st.now) {
			delete(k.Pending, id)
			st.groupDirty = true
		}
	}
	removed := false
	for _, m := range slices.Clone(st.members) {
		if st.sessionBound(m) && st.sessionEnd(m).Before(st.now) {
			st.remove(m.ID)
			st.expired++
			removed = true
		}
	}
	if removed {
		st.membersLeft()
	}
	st.advanceKafka()
}

// membersLeft reacts to members removed (left, expired or replaced).
func (st *state) membersLeft() {
	switch st.kstate().State {
	case metadata.KafkaStable, metadata.KafkaCompletingRebalance:
		st.prepareRebalance()
	case metadata.KafkaPreparingRebalance:
		st.changed()
	}
}

// advanceKafka completes a due join, or removes the members that did not
// send SyncGroup by the deadline.
func (st *state) advanceKafka() {
	k := st.kstate()
	switch k.State {
	case metadata.KafkaPreparingRebalance:
		if st.joinDue() {
			st.completeJoin()
		}
	case metadata.KafkaCompletingRebalance:
		if k.RebalanceDeadline != nil && !st.now.Before(*k.RebalanceDeadline) {
			for _, m := range slices.Clone(st.members) {
				if m.KafkaPhase == metadata.PhaseSyncing {
					st.remove(m.ID)
					st.expired++
				}
			}
			st.prepareRebalance()
			if st.joinDue() {
				st.completeJoin()
			}
		}
	}
}

// joinDue: the rebalance deadline passed, or every member (and every
// pending id) joined and no initial delay holds the join.
func (st *state) joinDue() bool {
	k := st.kstate()
	if k.RebalanceDeadline != nil && !st.now.Before(*k.RebalanceDeadline) {
		return true
	}
	if k.JoinDelayUntil != nil && st.now.Before(*k.JoinDelayUntil) {
		return false
	}
	if len(k.Pending) > 0 {
		return false
	}
	for _, m := range st.members {
		if m.KafkaPhase != metadata.PhaseJoining {
			return false
		}
	}
	return true
}

func (st *state) maxRebalanceTimeout() time.Duration {
	var d time.Duration
	for _, m := range st.members {
		d = max(d, m.RebalanceTimeout)
	}
	return d
}

func (st *state) setDirty(m *metadata.GroupMember) { st.dirty[m.ID] = true }

// prepareRebalance starts a rebalance: members must join again within the
// rebalance timeout (the largest of the members').
func (st *state) prepareRebalance() {
	k := st.kstate()
	k.State = metadata.KafkaPreparingRebalance
	d := st.now.Add(st.maxRebalanceTimeout())
	k.RebalanceDeadline = &d
	k.JoinDelayUntil = nil
	for _, m := range st.members {
		if m.KafkaPhase != metadata.PhaseJoining && m.KafkaPhase != metadata.PhaseNone {
			m.KafkaPhase = metadata.PhaseNone
			st.setDirty(m)
		}
	}
	st.changed()
}

// startFirstRebalance starts the rebalance of an empty group, held for the
// initial delay so that members starting together join one generation.
func (st *state) startFirstRebalance(rebalanceTimeout time.Duration) {
	st.prepareRebalance()
	k := st.kstate()
	d := st.now.Add(rebalanceTimeout)
	k.RebalanceDeadline = &d
	if st.cfg.InitialRebalanceDelay > 0 {
		until := st.now.Add(min(st.cfg.InitialRebalanceDelay, rebalanceTimeout))
		k.JoinDelayUntil = &until
	}
}

// newMemberJoined extends the initial delay, as Kafka's delayed initial
// join does, up to the rebalance deadline.
func (st *state) newMemberJoined() {
	k := st.kstate()
	if k.JoinDelayUntil == nil || k.RebalanceDeadline == nil {
		return
	}
	until := st.now.Add(st.cfg.InitialRebalanceDelay)
	if until.After(*k.RebalanceDeadline) {
		until = *k.RebalanceDeadline
	}
	k.JoinDelayUntil = &until
}

// completeJoin ends the join phase: dynamic members that did not rejoin
// are removed, the generation grows by one, the leader and the assignor
// are chosen, and every member is asked for SyncGroup.
func (st *state) completeJoin() {
	k := st.kstate()
	for _, m := range slices.Clone(st.members) {
		if m.KafkaPhase != metadata.PhaseJoining && m.InstanceID == "" {
			st.remove(m.ID)
			st.expired++
		}
	}
	if len(st.members) == 0 {
		st.group.Generation++
		*k = metadata.KafkaGroupState{State: metadata.KafkaEmpty, Pending: k.Pending}
		st.changed()
		return
	}
	leader := st.byID[k.Leader]
	if leader == nil || leader.KafkaPhase != metadata.PhaseJoining {
		leader = nil
		for _, m := range st.members {
			if m.KafkaPhase == metadata.PhaseJoining && (leader == nil || m.JoinedAt.Before(leader.JoinedAt)) {
				leader = m
			}
		}
	}
	if leader == nil {
		// Only static members that did not rejoin are left: wait for
		// them once more (their sessions end meanwhile), as Kafka does.
		d := st.now.Add(max(st.maxRebalanceTimeout(), time.Second))
		k.RebalanceDeadline = &d
		st.changed()
		return
	}
	st.group.Generation++
	k.State = metadata.KafkaCompletingRebalance
	k.Leader = leader.ID
	k.ProtocolName = st.selectProtocol(leader)
	d := st.now.Add(st.maxRebalanceTimeout())
	k.RebalanceDeadline = &d
	k.JoinDelayUntil = nil
	for _, m := range st.members {
		m.Generation = st.group.Generation
		m.KafkaPhase = metadata.PhaseSyncing
		m.HeartbeatAt = st.now // a fresh session to send SyncGroup in
		st.setDirty(m)
	}
	st.changed()
}

// selectProtocol picks the assignor of the next generation as Kafka does:
// among those every member offers, the one most members prefer (ties go
// to the leader's preference).
func (st *state) selectProtocol(leader *metadata.GroupMember) string {
	candidates := st.commonProtocols(nil)
	if len(candidates) == 0 {
		if len(leader.Protocols) > 0 {
			return leader.Protocols[0].Name
		}
		return ""
	}
	votes := map[string]int{}
	for _, m := range st.members {
		for _, p := range m.Protocols {
			if candidates[p.Name] {
				votes[p.Name]++
				break
			}
		}
	}
	best, bestVotes := "", -1
	for _, p := range leader.Protocols {
		if candidates[p.Name] && votes[p.Name] > bestVotes {
			best, bestVotes = p.Name, votes[p.Name]
		}
	}
	return best
}

// commonProtocols returns the assignors every member offers, with extra
// (a joining member's) counted too when not nil.
func (st *state) commonProtocols(extra []metadata.GroupProtocol) map[string]bool {
	var common map[string]bool
	add := func(ps []metadata.GroupProtocol) {
		names := map[string]bool{}
		for _, p := range ps {
			names[p.Name] = true
		}
		if common == nil {
			common = names
			return
		}
		for n := range common {
			if !names[n] {
				delete(common, n)
			}
		}
	}
	for _, m := range st.members {
		add(m.Protocols)
	}
	if extra != nil {
		add(extra)
	}
	return common
}

// kafkaNextDeadline is how long until a timer of the group is due (the
// rebalance deadline, the initial delay, a session or a pending id's
// end): when a parked request must take the lock to run it. ok is false
// when no timer is set.
func (st *state) kafkaNextDeadline() (d time.Duration, ok bool) {
	var next time.Time
	consider := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	k := st.kstate()
	if k.RebalanceDeadline != nil && k.State != metadata.KafkaStable {
		consider(*k.RebalanceDeadline)
	}
	if k.JoinDelayUntil != nil && k.State == metadata.KafkaPreparingRebalance {
		consider(*k.JoinDelayUntil)
	}
	for _, exp := range k.Pending {
		consider(exp)
	}
	for _, m := range st.members {
		if st.sessionBound(m) {
			consider(st.sessionEnd(m))
		}
	}
	if next.IsZero() {
		return 0, false
	}
	return next.Sub(st.now), true
}

// saveKafka writes a Kafka group's changes, and notifies at commit when
// parked requests must look again.
func (st *state) saveKafka(ctx context.Context) error {
	tx := st.tx
	if err := tx.RemoveMembers(ctx, st.removed...); err != nil {
		return err
	}
	if st.groupDirty || st.group.Generation != st.kafkaGeneration {
		if err := tx.UpdateGroup(ctx, st.group); err != nil {
			return err
		}
	}
	var put []metadata.GroupMember
	var touch []string
	for _, m := range st.members {
		switch {
		case st.dirty[m.ID]:
			put = append(put, *m)
		case st.touched[m.ID]:
			touch = append(touch, m.ID)
		}
	}
	if err := tx.PutMembers(ctx, put); err != nil {
		return err
	}
	if err := tx.Touch(ctx, touch...); err != nil {
		return err
	}
	if st.notify || len(st.removed) > 0 {
		return tx.Notify(ctx)
	}
	return nil
}

// byInstance returns the member holding a static instance id.
func (st *state) byInstance(id string) *metadata.GroupMember {
	if id == "" {
		return nil
	}
	for _, m := range st.members {
		if m.InstanceID == id {
			return m
		}
	}
	return nil
}

// fenced reports a request naming a static instance id whose member is
// another one (Kafka's FENCED_INSTANCE_ID).
func (st *state) fenced(instanceID, memberID string) bool {
	m := st.byInstance(instanceID)
	return m != nil && m.ID != memberID
}

// joinResult is what a member's JoinGroup answers at its generation: the
// leader gets every member of the generation with its metadata for the
// chosen assignor.
func (st *state) joinResult(m *metadata.GroupMember) KafkaJoinResult {
	k := st.kstate()
	res := KafkaJoinResult{MemberID: m.ID, Generation: m.Generation, ProtocolType: k.ProtocolType,
		ProtocolName: k.ProtocolName, Leader: k.Leader}
	if m.ID == k.Leader {
		for _, o := range st.members {
			if o.Generation != m.Generation {
				continue
			}
			km := KafkaMember{ID: o.ID, InstanceID: o.InstanceID}
			for _, p := range o.Protocols {
				if p.Name == k.ProtocolName {
					km.Metadata = p.Metadata
					break
				}
			}
			res.Members = append(res.Members, km)
		}
		slices.SortFunc(res.Members, func(a, b KafkaMember) int { return cmp.Compare(a.ID, b.ID) })
	}
	return res
}

// sameProtocols reports whether a rejoin offers exactly what the member
// offered.
func sameProtocols(a, b []metadata.GroupProtocol) bool {
	return slices.EqualFunc(a, b, func(x, y metadata.GroupProtocol) bool {
		return x.Name == y.Name && string(x.Metadata) == string(y.Metadata)
	})
}
