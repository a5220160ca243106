-- Commit cost that grows slowly with the partitions in a flush.
--
-- A flush of N partitions wrote N index rows, and each row ran two foreign
-- key checks (a locking lookup of its partition and of its segment): at
-- 5,000 partitions those checks were most of the commit. The checks
-- guarded nothing the commit does not already hold: the commit locks every
-- partition row it writes to (a topic's deletion takes the same locks and
-- deletes its batches itself), and it finishes its own pending segment row
-- last, raising SLT01 if that row is gone. A segment row is deleted only
-- from state 'deleting', which follows 'unreferenced' (set only when no
-- batch names it) or a pending row past its deadline (which no commit can
-- finish any more). So the index rows drop both constraints.
--
-- The commit also builds its rows from unnest rather than per-row array
-- subscripts, and its notifications with string_agg, 150 partitions to a
-- payload, rather than by growing a string one entry at a time.
ALTER TABLE batches DROP CONSTRAINT IF EXISTS batches_segment_id_fkey;
ALTER TABLE batches DROP CONSTRAINT IF EXISTS batches_topic_id_partition_fkey;

CREATE OR REPLACE FUNCTION silt_commit_flush(
    p_segment_id bigint, p_segment_size bigint,
    p_topics bigint[], p_parts integer[],
    q_producers bigint[], q_topics bigint[], q_parts integer[],
    c_pidx integer[], c_qidx integer[],
    c_byte_offset bigint[], c_byte_length integer[], c_records integer[], c_last_delta integer[], c_max_ts bigint[],
    c_epoch integer[], c_base_seq integer[], c_expected bigint[],
    OUT base_offsets bigint[], OUT codes integer[], OUT details bigint[], OUT lock_wait_us bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    n integer := coalesce(cardinality(c_pidx), 0);
    np integer := coalesce(cardinality(p_topics), 0);
    nq integer := coalesce(cardinality(q_producers), 0);
    t0 timestamptz := clock_timestamp();
    nexts bigint[];
    ords bigint[];
    found bigint[];
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
    note text;
BEGIN
    base_offsets := array_fill(0::bigint, ARRAY[n]);
    codes := array_fill(0, ARRAY[n]);
    details := array_fill(0::bigint, ARRAY[n]);

    -- Lock the partition rows in (topic, partition) order and read them in
    -- the same statement. The caller passes p_topics/p_parts sorted and
    -- distinct, so when every partition exists the rows come back in the
    -- arguments' order; otherwise they are placed by ordinal.
    SELECT array_agg(l.ord ORDER BY l.topic_id, l.partition), array_agg(l.next_offset ORDER BY l.topic_id, l.partition)
    INTO ords, found
    FROM (SELECT u.ord, p.topic_id, p.partition, p.next_offset
          FROM partitions p
          JOIN unnest(p_topics, p_parts) WITH ORDINALITY AS u(topic_id, partition, ord)
            ON p.topic_id = u.topic_id AND p.partition = u.partition
          ORDER BY p.topic_id, p.partition
          FOR NO KEY UPDATE OF p) l;
    lock_wait_us := (extract(epoch FROM clock_timestamp() - t0) * 1000000)::bigint;
    IF coalesce(cardinality(ords), 0) = np AND ords = (SELECT array_agg(g::bigint ORDER BY g) FROM generate_series(1, np) g) THEN
        nexts := found;
    ELSE
        nexts := array_fill(-1::bigint, ARRAY[np]);
        FOR k IN 1..coalesce(cardinality(ords), 0) LOOP
            nexts[ords[k]] := found[k];
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
        added[pi] := added[pi] + c_byte_length[i];
        accepted := accepted + 1;
    END LOOP;

    IF accepted > 0 THEN
        INSERT INTO batches (topic_id, partition, base_offset, last_offset, record_count, max_timestamp,
                             segment_id, byte_offset, byte_length)
        SELECT p_topics[c.pi], p_parts[c.pi], c.base, c.base + c.last_delta, c.records, c.max_ts,
               p_segment_id, c.byte_offset, c.byte_length
        FROM unnest(c_pidx, codes, base_offsets, c_last_delta, c_records, c_max_ts, c_byte_offset, c_byte_length)
             AS c(pi, code, base, last_delta, records, max_ts, byte_offset, byte_length)
        WHERE c.code = 0;

        UPDATE partitions p SET next_offset = u.next_offset, total_bytes = p.total_bytes + u.added
        FROM unnest(p_topics, p_parts, nexts, starts, added) AS u(topic_id, partition, next_offset, start, added)
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

        -- Announce the new high watermarks, 150 partitions to a payload
        -- (at most 7,649 bytes, under NOTIFY's limit of 8,000).
        FOR note IN
            SELECT string_agg(u.topic_id || ':' || u.partition || ':' || u.next_offset, ' ')
            FROM (SELECT x.topic_id, x.partition, x.next_offset, (row_number() OVER () - 1) / 150 AS grp
                  FROM unnest(p_topics, p_parts, nexts, starts) AS x(topic_id, partition, next_offset, start)
                  WHERE x.next_offset <> x.start) u
            GROUP BY u.grp
        LOOP
            PERFORM pg_notify('silt_commits', note);
        END LOOP;
    END IF;

    PERFORM silt_finish_segment(p_segment_id, p_segment_size, accepted > 0);
END
$fn$;
