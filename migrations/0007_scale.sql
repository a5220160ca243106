-- Scale: lease rounds that stay cheap when a hundred agents start or die
-- at once on 100,000 partitions.
--
-- silt_sync_leases as in 0003, but:
--   * one round moves at most 10,000 leases (claims or releases), so no
--     round is a transaction of 100,000 row updates that others queue
--     behind; a lone agent takes 100,000 partitions in ten rounds;
--   * claims start at a random place in (topic, partition) order and wrap
--     around, so agents claiming at the same moment take different rows
--     instead of all skipping over each other's at the head of the index
--     (and waiting on row versions being updated, which SKIP LOCKED does
--     not skip);
--   * claims and releases run in a subtransaction that waits at most 50 ms
--     for any lock (SKIP LOCKED does not skip a row version another
--     claimer is updating: it waits) and gives up, for this round, on a
--     lock timeout or a deadlock: the renewal still commits;
--   * while a live agent holds less than the floor of the fair share,
--     every agent aims at the floor (0003 kept the ceiling for claims, and
--     partitions given back went to whoever claimed first, so the last
--     agent short of its share waited many rounds);
--   * claiming a lapsed owner's partitions no longer updates that owner's
--     agent_leases row (every claimer of the same lapsed owner queued on
--     it); an agent whose own lease lapsed recounts what it still holds.
CREATE OR REPLACE FUNCTION silt_sync_leases(p_agent text, p_inc bigint, p_agent_ttl interval, p_lease_ttl interval, p_full boolean,
    OUT claimed_topics bigint[], OUT claimed_parts integer[], OUT claimed_epochs bigint[],
    OUT released_topics bigint[], OUT released_parts integer[],
    OUT held integer, OUT is_full boolean,
    OUT all_topics bigint[], OUT all_parts integer[], OUT all_epochs bigint[])
LANGUAGE plpgsql AS $fn$
DECLARE
    max_moves CONSTANT integer := 10000;
    prev record;
    live integer;
    total bigint;
    share integer;
    keep integer;
    starving integer;
    want integer;
    pos bigint;
    st_topic bigint;
    st_part integer;
    lo_topic bigint;
    lo_part integer;
    hi_topic bigint;
    hi_part integer;
    pass integer;
    saved_timeout text := current_setting('lock_timeout');
    t bigint[];
    p integer[];
    e bigint[];
BEGIN
    claimed_topics := '{}'; claimed_parts := '{}'; claimed_epochs := '{}';
    released_topics := '{}'; released_parts := '{}';
    SELECT incarnation, expires_at, agent_leases.held AS h INTO prev FROM agent_leases WHERE agent_id = p_agent FOR UPDATE;
    is_full := p_full OR NOT FOUND OR prev.incarnation <> p_inc OR prev.expires_at <= now();
    IF NOT FOUND OR prev.incarnation <> p_inc THEN
        held := 0;
        UPDATE leases SET owner_agent = NULL, incarnation = NULL
        WHERE owner_agent = p_agent AND incarnation IS DISTINCT FROM p_inc;
    ELSIF prev.expires_at <= now() THEN
        -- Others may have claimed some of them meanwhile.
        SELECT count(*) INTO held FROM leases WHERE owner_agent = p_agent AND incarnation = p_inc;
    ELSE
        held := prev.h;
    END IF;
    INSERT INTO agent_leases (agent_id, incarnation, expires_at, held) VALUES (p_agent, p_inc, now() + p_lease_ttl, held)
    ON CONFLICT (agent_id) DO UPDATE SET incarnation = EXCLUDED.incarnation, expires_at = EXCLUDED.expires_at, held = EXCLUDED.held;

    SELECT count(*) INTO live FROM agents WHERE heartbeat_at > now() - p_agent_ttl OR id = p_agent;
    live := greatest(live, 1);
    SELECT coalesce(sum(partitions), 0) INTO total FROM topics;
    share := ((total + live - 1) / live)::integer;
    -- Shares are the ceiling; but while a live agent holds less than the
    -- floor (a new one, or one that lost partitions), everyone aims at the
    -- floor: owners above it give back, and only those below it claim, so
    -- the partitions given back go to the agents short of them rather
    -- than to whoever claims first.
    SELECT count(*) INTO starving FROM agents a
    LEFT JOIN agent_leases al ON al.agent_id = a.id AND al.expires_at > now()
    WHERE (a.heartbeat_at > now() - p_agent_ttl OR a.id = p_agent)
      AND CASE WHEN a.id = p_agent THEN silt_sync_leases.held ELSE coalesce(al.held, 0) END < total / live;
    IF starving > 0 THEN
        share := (total / live)::integer;
    END IF;
    keep := share;

    IF held < share THEN
        -- Start at a random partition: the pos-th in (topic, partition) order.
        pos := floor(random() * total)::bigint;
        SELECT x.id, (pos - (x.cum - x.partitions))::integer INTO st_topic, st_part
        FROM (SELECT id, partitions, sum(partitions) OVER (ORDER BY id) AS cum FROM topics) x
        WHERE x.cum > pos ORDER BY x.id LIMIT 1;
        BEGIN
            PERFORM set_config('lock_timeout', '50ms', true);
            -- Unowned partitions from the start on, then before it; then
            -- those of owners whose agent lease lapsed, the same way.
            FOR pass IN 1..4 LOOP
                want := least(share - held, max_moves) - cardinality(claimed_topics);
                EXIT WHEN want <= 0 OR st_topic IS NULL;
                IF pass % 2 = 1 THEN -- from the start to the end
                    lo_topic := st_topic; lo_part := st_part; hi_topic := 9223372036854775807; hi_part := 2147483647;
                ELSE -- from the beginning to the start
                    lo_topic := 0; lo_part := 0; hi_topic := st_topic; hi_part := st_part;
                END IF;
                IF pass <= 2 THEN
                    WITH c AS (
                        SELECT l.topic_id, l.partition FROM leases l
                        WHERE l.owner_agent IS NULL
                          AND (l.topic_id, l.partition) >= (lo_topic, lo_part) AND (l.topic_id, l.partition) < (hi_topic, hi_part)
                        ORDER BY l.topic_id, l.partition FOR UPDATE SKIP LOCKED LIMIT want
                    ), u AS (
                        UPDATE leases l SET owner_agent = p_agent, incarnation = p_inc, epoch = l.epoch + 1
                        FROM c WHERE l.topic_id = c.topic_id AND l.partition = c.partition
                        RETURNING l.topic_id, l.partition, l.epoch
                    )
                    SELECT coalesce(array_agg(u.topic_id), '{}'), coalesce(array_agg(u.partition), '{}'), coalesce(array_agg(u.epoch), '{}')
                    INTO t, p, e FROM u;
                ELSE
                    WITH c AS (
                        SELECT l.topic_id, l.partition FROM agent_leases a
                        JOIN leases l ON l.owner_agent = a.agent_id AND l.incarnation = a.incarnation
                        WHERE a.expires_at <= now()
                          AND (l.topic_id, l.partition) >= (lo_topic, lo_part) AND (l.topic_id, l.partition) < (hi_topic, hi_part)
                        ORDER BY l.topic_id, l.partition FOR UPDATE OF l SKIP LOCKED LIMIT want
                    ), u AS (
                        UPDATE leases l SET owner_agent = p_agent, incarnation = p_inc, epoch = l.epoch + 1
                        FROM c WHERE l.topic_id = c.topic_id AND l.partition = c.partition
                        RETURNING l.topic_id, l.partition, l.epoch
                    )
                    SELECT coalesce(array_agg(u.topic_id), '{}'), coalesce(array_agg(u.partition), '{}'), coalesce(array_agg(u.epoch), '{}')
                    INTO t, p, e FROM u;
                END IF;
                claimed_topics := claimed_topics || t;
                claimed_parts := claimed_parts || p;
                claimed_epochs := claimed_epochs || e;
            END LOOP;
            PERFORM set_config('lock_timeout', saved_timeout, true);
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            -- The claims are undone; the renewal stands. Next round.
            claimed_topics := '{}'; claimed_parts := '{}'; claimed_epochs := '{}';
        END;
        held := held + cardinality(claimed_topics);
    ELSIF held > keep THEN
        BEGIN
            PERFORM set_config('lock_timeout', '50ms', true);
            WITH r AS (
                SELECT topic_id, partition FROM leases WHERE owner_agent = p_agent AND incarnation = p_inc
                ORDER BY topic_id DESC, partition DESC FOR UPDATE SKIP LOCKED LIMIT least(held - keep, max_moves)
            ), u AS (
                UPDATE leases l SET owner_agent = NULL, incarnation = NULL
                FROM r WHERE l.topic_id = r.topic_id AND l.partition = r.partition
                RETURNING l.topic_id, l.partition
            )
            SELECT coalesce(array_agg(u.topic_id), '{}'), coalesce(array_agg(u.partition), '{}')
            INTO released_topics, released_parts FROM u;
            PERFORM set_config('lock_timeout', saved_timeout, true);
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            released_topics := '{}'; released_parts := '{}';
        END;
        held := held - cardinality(released_topics);
    END IF;
    UPDATE agent_leases SET held = silt_sync_leases.held WHERE agent_id = p_agent;

    IF is_full THEN
        SELECT coalesce(array_agg(topic_id ORDER BY topic_id, partition), '{}'),
               coalesce(array_agg(partition ORDER BY topic_id, partition), '{}'),
               coalesce(array_agg(epoch ORDER BY topic_id, partition), '{}'), count(*)
        INTO all_topics, all_parts, all_epochs, held
        FROM leases WHERE owner_agent = p_agent AND incarnation = p_inc;
        UPDATE agent_leases SET held = silt_sync_leases.held WHERE agent_id = p_agent;
    END IF;
END
$fn$;

-- silt_commit_flush as in 0005, with p_notify: false leaves the NOTIFY to
-- the caller, after the commit, and returns the payloads in notes. A
-- transaction that NOTIFYs holds a lock that every other NOTIFYing
-- transaction of the cluster waits on from its pre-commit until its
-- commit record is flushed (Postgres keeps notifications in commit
-- order): notifying in the commit serializes all flush commits behind one
-- WAL flush each. The caller's separate notification commits
-- asynchronously (synchronous_commit off: a notification lost in a crash
-- only makes long-polls wait their time out, and listeners wake everyone
-- after a reconnection), so the lock is held for microseconds. Called
-- without p_notify (agents of the previous version), it notifies as
-- before. A new output column changes the result type, so the function is
-- dropped (the signature of 0003 and 0005) and created again.
DROP FUNCTION IF EXISTS silt_commit_flush(bigint, bigint, bigint[], integer[], bigint[], bigint[], integer[], integer[], integer[],
    bigint[], integer[], integer[], integer[], bigint[], integer[], integer[], bigint[]);
CREATE FUNCTION silt_commit_flush(
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
