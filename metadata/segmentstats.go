package metadata

import "context"

// SegmentsAwaitingDeletion counts the segment objects that nothing
// indexes any more and the janitor has yet to delete (unreferenced and
// waiting out the grace period, or claimed for deletion), with their
// bytes. Both states have partial indexes.
func (s *Store) SegmentsAwaitingDeletion(ctx context.Context) (count, bytes int64, err error) {
	err = s.pool.QueryRow(ctx, `
		SELECT count(*), coalesce(sum(size), 0)::bigint FROM segments
		WHERE state = 'unreferenced' OR state = 'deleting'`).Scan(&count, &bytes)
	return count, bytes, s.classify("count segments awaiting deletion", err)
}
