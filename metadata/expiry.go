package metadata

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// ExpireProducers forgets idle idempotent producers, as Kafka expires
// producer ids (producer.id.expiration.ms): it deletes up to limit
// partitions' producer state untouched for longer than age, then up to
// limit producer ids issued longer than age ago that have no state left.
// A producer that writes again after its state expired starts over (its
// next write must be sequence 0 on that partition, or it takes a new id).
func (s *Store) ExpireProducers(ctx context.Context, age time.Duration, limit int) (states, producers int64, err error) {
	tag, err := s.pool.Exec(ctx, `
		DELETE FROM producer_state WHERE (producer_id, topic_id, partition) IN (
			SELECT producer_id, topic_id, partition FROM producer_state
			WHERE updated_at < now() - $1::interval LIMIT $2 FOR UPDATE SKIP LOCKED)`, age, limit)
	if err != nil {
		return 0, 0, s.classify("expire producer state", err)
	}
	states = tag.RowsAffected()
	tag, err = s.pool.Exec(ctx, `
		DELETE FROM producers WHERE id IN (
			SELECT p.id FROM producers p
			WHERE p.issued_at < now() - $1::interval
			  AND NOT EXISTS (SELECT 1 FROM producer_state st WHERE st.producer_id = p.id)
			LIMIT $2 FOR UPDATE SKIP LOCKED)`, age, limit)
	if err != nil {
		return states, 0, s.classify("expire producers", err)
	}
	return states, tag.RowsAffected(), nil
}

// ExpireGroups deletes up to limit consumer groups, with their committed
// offsets, that have been empty for longer than retention, as Kafka
// expires offsets (offsets.retention.minutes): no member heartbeated
// within its session timeout plus retention, no offset was committed and
// the group did not change within retention. It takes each group's lock
// (see GroupLockClass) without waiting, and skips a group whose lock is
// held; the conditions are checked again under the locks, so that an offset
// committed while the candidates were picked keeps its group.
func (s *Store) ExpireGroups(ctx context.Context, retention time.Duration, limit int) (int64, error) {
	var n int64
	err := s.inTx(ctx, "expire groups", func(tx pgx.Tx) error {
		// The CASE takes a lock only for a group that is expired.
		rows, err := tx.Query(ctx, `
			SELECT g.id FROM groups g
			WHERE g.updated_at < now() - $1::interval
			  AND CASE WHEN `+groupExpired+` THEN pg_try_advisory_xact_lock($3, hashtext(g.name)) ELSE false END
			LIMIT $2`, retention, limit, GroupLockClass)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil || len(ids) == 0 {
			return err
		}
		// A new statement, a new snapshot: it sees what was committed before
		// the locks were taken.
		tag, err := tx.Exec(ctx, `
			DELETE FROM groups g WHERE g.id = ANY($2) AND g.updated_at < now() - $1::interval AND `+groupExpired,
			retention, ids)
		n = tag.RowsAffected()
		return err
	})
	return n, err
}

// groupExpired is true for group g when no member of it heartbeated within
// its session timeout plus $1, and no offset was committed within $1.
const groupExpired = `NOT EXISTS (SELECT 1 FROM group_members m WHERE m.group_id = g.id
	AND m.heartbeat_at + m.session_timeout_ms * interval '1 millisecond' > now() - $1::interval)
	AND NOT EXISTS (SELECT 1 FROM group_offsets o WHERE o.group_id = g.id AND o.committed_at > now() - $1::interval)`
