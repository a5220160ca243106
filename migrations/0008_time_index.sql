-- A time index: the lookup by timestamp (Kafka's ListOffsets, fetch by
-- timestamp) in one B-tree descent, whatever a partition's rows.
--
-- The lookup wants a partition's first chunk, in offset order, whose max
-- timestamp is at least t. Timestamps are not monotonic in offset order,
-- so no index on max_timestamp answers it; until now it walked the
-- partition's rows from its first offset. Each row now carries
-- running_max_ts, the greatest max_timestamp of the partition's rows up to
-- and including it, as Kafka's time index keeps: it is non-decreasing in
-- offset order, and the first row whose running maximum is at least t is
-- the first row whose own max timestamp is at least t. The index
-- batches_time (topic_id, partition, running_max_ts, last_offset) finds it
-- with one descent.
--
-- How the writes keep it:
--   * A flush commit already locks and updates its partitions' rows: each
--     keeps max_timestamp, the greatest timestamp ever committed to it
--     (NULL before any), and a new chunk's running maximum is the greatest
--     of that and its own (and of the commit's earlier chunks of the
--     partition). No read of the last index row.
--   * A swap (merge, compaction) gives its new rows the greatest of the
--     running maximum of the row before the range and their cumulative
--     max timestamp. The rows after the range keep theirs: a merge keeps
--     the records, so they stay exact; compaction may have removed the
--     range's greatest timestamp, which leaves them higher than the true
--     running maximum, never lower. (A rewrite never raises a timestamp;
--     should one, the rows after it are raised to it.)
--   * Retention deletes a prefix: the rows left keep values that count
--     the deleted rows, higher than the true running maximum of what is
--     left, never lower.
-- A running maximum is never below the true one and the sequence stays
-- non-decreasing in offset order, so the first row of the index at or
-- above t is at or before the answer: the lookup takes it as a start and
-- returns the first row from there whose own max timestamp is at least t
-- (the same row while the values are exact).
--
-- The backfill rewrites every index row once (a window over each
-- partition's rows in offset order) and builds the index, inside the
-- migration's transaction: a large index makes this migration long, and
-- commits wait for it. A commit that called 0007's function before it
-- and waited on its locks may run that function's body after it, and
-- then fails on the new NOT NULL column: it writes nothing and
-- acknowledges nothing.
ALTER TABLE partitions ADD COLUMN max_timestamp bigint;
ALTER TABLE batches ADD COLUMN running_max_ts bigint;

UPDATE batches b SET running_max_ts = x.rm
FROM (SELECT topic_id, partition, last_offset,
             max(max_timestamp) OVER (PARTITION BY topic_id, partition ORDER BY last_offset
                                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS rm
      FROM batches) x
WHERE b.topic_id = x.topic_id AND b.partition = x.partition AND b.last_offset = x.last_offset;
ALTER TABLE batches ALTER COLUMN running_max_ts SET NOT NULL;

UPDATE partitions p SET max_timestamp = x.m
FROM (SELECT topic_id, partition, max(max_timestamp) AS m FROM batches GROUP BY topic_id, partition) x
WHERE p.topic_id = x.topic_id AND p.partition = x.partition;

CREATE INDEX batches_time ON batches (topic_id, partition, running_max_ts, last_offset);

-- silt_commit_flush as in 0007, keeping partitions.max_timestamp and
-- writing each new row's running_max_ts.
CREATE OR REPLACE FUNCTION silt_commit_flush(
    p_segment_id bigint, p_segment_size bigint,
    p_topics bigint[], p_parts integer[],
    q_producers bigint[], q_topics bigint[], q_parts integer[],
    c_pidx integer[], c_qidx integer[],
    c_byte_offset bigint[], c_byte_length integer[], c_records integer[], c_last_delta integer[], c_max_ts bigint[],
    c_epoch integer[], c_base_seq integer[], c_expected bigint[], p_notify boolean DEFAULT true,
    OUT base_offsets bigint[], OUT codes integer[], OUT details bigint[], OUT lock_wait_us bigint, OUT notes text[])
LANGUAGE plpgsql AS $fn$
DECLARE
    n integer := coalesce(cardinality(c_pidx), 0);
    np integer := coalesce(cardinality(p_topics), 0);
    nq integer := coalesce(cardinality(q_producers), 0);
    t0 timestamptz := clock_timestamp();
    nexts bigint[];
    ords bigint[];
    found bigint[];
    found_ts bigint[];
    maxes bigint[];
    rmax bigint[];
    k integer;
    starts bigint[];
    added bigint[];
    q_known boolean[];
    q_cur_epoch integer[];
    q_st_epoch integer[];
    q_last integer[];
    q_recent jsonb[];
    q_dirty boolean[];
    i integer;
    pi integer;
    qi integer;
    last_seq integer;
    want_seq integer;
    r jsonb;
    dup boolean;
    accepted integer := 0;
BEGIN
    notes := '{}';
    base_offsets := array_fill(0::bigint, ARRAY[n]);
    codes := array_fill(0, ARRAY[n]);
    details := array_fill(0::bigint, ARRAY[n]);
    rmax := array_fill(NULL::bigint, ARRAY[n]);

    -- Lock the partition rows in (topic, partition) order and read them in
    -- the same statement. The caller passes p_topics/p_parts sorted and
    -- distinct, so when every partition exists the rows come back in the
    -- arguments' order; otherwise they are placed by ordinal.
    SELECT array_agg(l.ord ORDER BY l.topic_id, l.partition), array_agg(l.next_offset ORDER BY l.topic_id, l.partition),
           array_agg(l.max_timestamp ORDER BY l.topic_id, l.partition)
    INTO ords, found, found_ts
    FROM (SELECT u.ord, p.topic_id, p.partition, p.next_offset, p.max_timestamp
          FROM partitions p
          JOIN unnest(p_topics, p_parts) WITH ORDINALITY AS u(topic_id, partition, ord)
            ON p.topic_id = u.topic_id AND p.partition = u.partition
          ORDER BY p.topic_id, p.partition
          FOR NO KEY UPDATE OF p) l;
    lock_wait_us := (extract(epoch FROM clock_timestamp() - t0) * 1000000)::bigint;
    IF coalesce(cardinality(ords), 0) = np AND ords = (SELECT array_agg(g::bigint ORDER BY g) FROM generate_series(1, np) g) THEN
        nexts := found;
        maxes := found_ts;
    ELSE
        nexts := array_fill(-1::bigint, ARRAY[np]);
        maxes := array_fill(NULL::bigint, ARRAY[np]);
        FOR k IN 1..coalesce(cardinality(ords), 0) LOOP
            nexts[ords[k]] := found[k];
            maxes[ords[k]] := found_ts[k];
        END LOOP;
    END IF;
    starts := nexts;
    added := array_fill(0::bigint, ARRAY[np]);

    IF nq > 0 THEN
        -- Key-share the producer rows so that expiry cannot remove them
        -- under this commit.
        PERFORM 1 FROM producers WHERE id = ANY (q_producers) ORDER BY id FOR KEY SHARE;
        SELECT array_agg(pr.id IS NOT NULL ORDER BY u.ord),
               array_agg(coalesce(pr.epoch, 0) ORDER BY u.ord),
               array_agg(coalesce(s.epoch, -1) ORDER BY u.ord),
               array_agg(coalesce(s.last_sequence, -1) ORDER BY u.ord),
               array_agg(coalesce(s.recent, '[]'::jsonb) ORDER BY u.ord)
        INTO q_known, q_cur_epoch, q_st_epoch, q_last, q_recent
        FROM unnest(q_producers, q_topics, q_parts) WITH ORDINALITY AS u(producer_id, topic_id, partition, ord)
        LEFT JOIN producers pr ON pr.id = u.producer_id
        LEFT JOIN producer_state s
          ON s.producer_id = u.producer_id AND s.topic_id = u.topic_id AND s.partition = u.partition;
        q_dirty := array_fill(false, ARRAY[nq]);
    END IF;

    FOR i IN 1..n LOOP
        pi := c_pidx[i];
        IF nexts[pi] < 0 THEN
            codes[i] := 1;
            CONTINUE;
        END IF;
        qi := c_qidx[i];
        IF qi > 0 THEN
            IF NOT q_known[qi] THEN
                codes[i] := 4;
                CONTINUE;
            END IF;
            IF c_epoch[i] <> q_cur_epoch[qi] THEN
                codes[i] := 5;
                details[i] := q_cur_epoch[qi];
                CONTINUE;
            END IF;
            -- Sequences wrap past the largest int32 to 0, as in Kafka.
            last_seq := ((c_base_seq[i]::bigint + c_records[i] - 1) % 2147483648)::integer;
            want_seq := 0;
            IF q_st_epoch[qi] = c_epoch[i] THEN
                dup := false;
                FOR r IN SELECT e FROM jsonb_array_elements(q_recent[qi]) AS e LOOP
                    IF (r->>0)::integer = c_base_seq[i] AND (r->>1)::integer = last_seq THEN
                        codes[i] := 2;
                        base_offsets[i] := (r->>2)::bigint;
                        dup := true;
                        EXIT;
                    END IF;
                END LOOP;
                IF dup THEN
                    CONTINUE;
                END IF;
                want_seq := ((q_last[qi]::bigint + 1) % 2147483648)::integer;
            END IF;
            IF c_base_seq[i] <> want_seq THEN
                codes[i] := 3;
                details[i] := want_seq;
                CONTINUE;
            END IF;
        END IF;
        IF c_expected[i] >= 0 AND c_expected[i] <> nexts[pi] THEN
            codes[i] := 6;
            details[i] := nexts[pi];
            CONTINUE;
        END IF;
        base_offsets[i] := nexts[pi];
        IF qi > 0 THEN
            IF q_st_epoch[qi] <> c_epoch[i] THEN
                q_recent[qi] := '[]'::jsonb;
            END IF;
            IF jsonb_array_length(q_recent[qi]) >= 5 THEN
                q_recent[qi] := q_recent[qi] - 0;
            END IF;
            q_recent[qi] := q_recent[qi] || jsonb_build_array(jsonb_build_array(c_base_seq[i], last_seq, nexts[pi]));
            q_last[qi] := last_seq;
            q_st_epoch[qi] := c_epoch[i];
            q_dirty[qi] := true;
        END IF;
        nexts[pi] := nexts[pi] + c_last_delta[i] + 1;
        -- The partition's greatest timestamp so far is the running
        -- maximum of this chunk, the last of the partition.
        maxes[pi] := greatest(maxes[pi], c_max_ts[i]);
        rmax[i] := maxes[pi];
        added[pi] := added[pi] + c_byte_length[i];
        accepted := accepted + 1;
    END LOOP;

    IF accepted > 0 THEN
        INSERT INTO batches (topic_id, partition, base_offset, last_offset, record_count, max_timestamp,
                             segment_id, byte_offset, byte_length, running_max_ts)
        SELECT p_topics[c.pi], p_parts[c.pi], c.base, c.base + c.last_delta, c.records, c.max_ts,
               p_segment_id, c.byte_offset, c.byte_length, c.rmax
        FROM unnest(c_pidx, codes, base_offsets, c_last_delta, c_records, c_max_ts, c_byte_offset, c_byte_length, rmax)
             AS c(pi, code, base, last_delta, records, max_ts, byte_offset, byte_length, rmax)
        WHERE c.code = 0;

        UPDATE partitions p SET next_offset = u.next_offset, total_bytes = p.total_bytes + u.added, max_timestamp = u.max_ts
        FROM unnest(p_topics, p_parts, nexts, starts, added, maxes) AS u(topic_id, partition, next_offset, start, added, max_ts)
        WHERE p.topic_id = u.topic_id AND p.partition = u.partition AND u.next_offset <> u.start;

        IF nq > 0 THEN
            INSERT INTO producer_state (producer_id, topic_id, partition, epoch, last_sequence, recent, updated_at)
            SELECT u.producer_id, u.topic_id, u.partition, u.epoch, u.last_sequence, u.recent, now()
            FROM unnest(q_producers, q_topics, q_parts, q_st_epoch, q_last, q_recent, q_dirty)
                 AS u(producer_id, topic_id, partition, epoch, last_sequence, recent, dirty)
            WHERE u.dirty
            ON CONFLICT (producer_id, topic_id, partition) DO UPDATE SET
                epoch = EXCLUDED.epoch, last_sequence = EXCLUDED.last_sequence,
                recent = EXCLUDED.recent, updated_at = now();
        END IF;

        -- The new high watermarks, 150 partitions to a payload (at most
        -- 7,649 bytes, under NOTIFY's limit of 8,000): announced here
        -- (p_notify), or returned for the caller to announce after the
        -- commit.
        SELECT coalesce(array_agg(g.note ORDER BY g.grp), '{}') INTO notes
        FROM (SELECT u.grp, string_agg(u.topic_id || ':' || u.partition || ':' || u.next_offset, ' ') AS note
              FROM (SELECT x.topic_id, x.partition, x.next_offset, (row_number() OVER () - 1) / 150 AS grp
                    FROM unnest(p_topics, p_parts, nexts, starts) AS x(topic_id, partition, next_offset, start)
                    WHERE x.next_offset <> x.start) u
              GROUP BY u.grp) g;
        IF p_notify THEN
            PERFORM pg_notify('silt_commits', x) FROM unnest(notes) AS x;
        END IF;
    END IF;

    PERFORM silt_finish_segment(p_segment_id, p_segment_size, accepted > 0);
END
$fn$;

-- silt_swap_batches as in 0003, writing the new rows' running_max_ts: the
-- running maximum of the partition's row before the range (NULL when the
-- range starts the partition's index) carried over the new rows' max
-- timestamps in offset order. It costs one probe of the row before the
-- range and one of the row after it.
CREATE OR REPLACE FUNCTION silt_swap_batches(
    p_agent text, p_topic bigint, p_part integer, p_epoch bigint,
    old_bases bigint[], old_segments bigint[],
    p_segment_id bigint, p_segment_size bigint,
    n_base bigint[], n_last bigint[], n_records integer[], n_max_ts bigint[],
    n_byte_offset bigint[], n_byte_length integer[], n_horizon bigint[], n_batches integer[]) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    deleted integer;
    old_bytes bigint;
    new_bytes bigint;
    segs bigint[];
    prev_max bigint;
    new_max bigint;
    hi bigint;
    next_max bigint;
BEGIN
    PERFORM silt_fence(p_agent, p_topic, p_part, p_epoch);
    WITH d AS (
        DELETE FROM batches b
        USING unnest(old_bases, old_segments) AS r(base_offset, segment_id)
        WHERE b.topic_id = p_topic AND b.partition = p_part
          AND b.base_offset = r.base_offset AND b.segment_id = r.segment_id
        RETURNING b.byte_length, b.segment_id
    )
    SELECT count(*), coalesce(sum(byte_length), 0), array_agg(DISTINCT segment_id)
    INTO deleted, old_bytes, segs FROM d;
    IF deleted <> coalesce(cardinality(old_bases), 0) THEN
        RAISE EXCEPTION 'topic % partition %: % of % rows changed under the rewrite',
            p_topic, p_part, coalesce(cardinality(old_bases), 0) - deleted, coalesce(cardinality(old_bases), 0)
            USING ERRCODE = 'SLT03';
    END IF;
    IF coalesce(cardinality(n_base), 0) > 0 THEN
        SELECT b.running_max_ts INTO prev_max FROM batches b
        WHERE b.topic_id = p_topic AND b.partition = p_part
          AND b.last_offset < (SELECT min(x) FROM unnest(n_base) AS x)
        ORDER BY b.last_offset DESC LIMIT 1;
    END IF;
    INSERT INTO batches (topic_id, partition, base_offset, last_offset, record_count, max_timestamp,
                         segment_id, byte_offset, byte_length, delete_horizon, batch_count, running_max_ts)
    SELECT p_topic, p_part, r.b, r.l, r.c, r.m, p_segment_id, r.o, r.n, nullif(r.h, 0), greatest(r.k, 1),
           greatest(prev_max, max(r.m) OVER (ORDER BY r.l ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))
    FROM unnest(n_base, n_last, n_records, n_max_ts, n_byte_offset, n_byte_length, n_horizon, n_batches) AS r(b, l, c, m, o, n, h, k);
    -- A rewrite keeps or drops records, so its rows' timestamps are not
    -- above those they replace and the rows after the range stay at or
    -- above them. Should a rewrite ever carry a greater one, the rows
    -- after it (and the partition's greatest) are raised to it, so that
    -- the running maxima never fall in offset order.
    SELECT max(x) INTO new_max FROM unnest(n_max_ts) AS x;
    SELECT max(x) INTO hi FROM unnest(n_last) AS x;
    IF new_max IS NOT NULL THEN
        SELECT b.running_max_ts INTO next_max FROM batches b
        WHERE b.topic_id = p_topic AND b.partition = p_part AND b.last_offset > hi
        ORDER BY b.last_offset LIMIT 1;
        IF next_max < new_max THEN
            UPDATE batches SET running_max_ts = new_max
            WHERE topic_id = p_topic AND partition = p_part AND last_offset > hi AND running_max_ts < new_max;
        END IF;
    END IF;
    SELECT coalesce(sum(x), 0) INTO new_bytes FROM unnest(n_byte_length) AS x;
    UPDATE partitions SET total_bytes = greatest(total_bytes - old_bytes + new_bytes, 0),
                          max_timestamp = greatest(max_timestamp, new_max)
    WHERE topic_id = p_topic AND partition = p_part;
    PERFORM silt_mark_unreferenced(segs);
    PERFORM silt_finish_segment(p_segment_id, p_segment_size, coalesce(cardinality(n_base), 0) > 0);
END
$fn$;
