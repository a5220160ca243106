-- Object lifecycle on Postgres's clock, issued producer ids, and the
-- write paths as single server-side calls.
--
-- Every object has a segments row before it is written: 'pending' with a
-- deadline on Postgres's clock. A commit or swap turns its own pending row
-- 'live' as its last step, and fails, writing nothing, when the row is no
-- longer pending or its deadline has passed. Objects whose rows are past
-- their deadline, or unreferenced past the grace period, are claimed
-- ('deleting'), deleted from the bucket, and only then lose their row.
--
--   pending --commit--> live --last index row removed--> unreferenced
--      |                                                     |
--      +--deadline passed--> deleting <--grace passed---------+
--                               |
--                               +--object deleted--> (row removed)

ALTER TABLE segments
    ADD COLUMN state text NOT NULL DEFAULT 'live'
        CHECK (state IN ('pending', 'live', 'unreferenced', 'deleting')),
    -- pending: the commit must finish before it; deleting: the claim
    -- lapses then and another sweeper may take the object over.
    ADD COLUMN deadline timestamptz;

UPDATE segments SET state = 'unreferenced' WHERE unreferenced_at IS NOT NULL;
UPDATE segments s SET state = 'unreferenced', unreferenced_at = now()
WHERE s.state = 'live' AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.segment_id = s.id);

DROP INDEX segments_unreferenced;
CREATE INDEX segments_unreferenced ON segments (unreferenced_at) WHERE state = 'unreferenced';
CREATE INDEX segments_deadline ON segments (deadline) WHERE state IN ('pending', 'deleting');

-- Compaction's tombstone horizon, per chunk, as Kafka's delete horizon: set
-- (Postgres's clock, ms) when the cleaner first sees a chunk with
-- tombstones, to then + delete.retention.ms; its tombstones go after it.
ALTER TABLE batches ADD COLUMN delete_horizon bigint;

-- How many RecordBatches the row's byte range holds: 1 for a flush chunk
-- (stored with base offset 0, given its offset from the row); several for
-- a merged run, whose batches carry their own base offsets, so that index
-- rows per byte stay bounded however small the flushes were.
ALTER TABLE batches ADD COLUMN batch_count integer NOT NULL DEFAULT 1 CHECK (batch_count >= 1);

-- Issued producer ids: random, so that they cannot be guessed, and only
-- issued ids are accepted. epoch grows when a producer id is re-initialised
-- (Kafka's InitProducerId); writes with an older epoch are fenced.
CREATE TABLE producers (
    id         bigint      PRIMARY KEY CHECK (id > 0),
    epoch      integer     NOT NULL DEFAULT 0,
    issued_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO producers (id) SELECT DISTINCT producer_id FROM producer_state;
ALTER TABLE producer_state
    ADD COLUMN epoch integer NOT NULL DEFAULT 0,
    ADD FOREIGN KEY (producer_id) REFERENCES producers (id) ON DELETE CASCADE;
CREATE INDEX producer_state_updated ON producer_state (updated_at);
CREATE INDEX producers_issued ON producers (issued_at);
DROP SEQUENCE producer_ids;

-- Leases are renewed per agent, not per partition: a partition's lease is
-- valid while its owner's agent lease is unexpired and of the incarnation
-- that claimed it (a restarted agent has a new one). A renewal writes one
-- row, whatever the partitions held. held counts each agent's partitions,
-- for the fair-share decisions of the others.
CREATE TABLE agent_leases (
    agent_id    text        PRIMARY KEY,
    incarnation bigint      NOT NULL,
    expires_at  timestamptz NOT NULL,
    held        integer     NOT NULL DEFAULT 0
);
-- Every lease is re-elected once, under the new rules.
UPDATE leases SET owner_agent = NULL;
ALTER TABLE leases DROP COLUMN expires_at, ADD COLUMN incarnation bigint;
CREATE INDEX leases_owner ON leases (owner_agent, incarnation, topic_id, partition);
CREATE INDEX leases_unowned ON leases (topic_id, partition) WHERE owner_agent IS NULL;

-- Named janitor duties that one agent at a time runs (the orphan sweep),
-- held as leases on Postgres's clock rather than as session locks, so that
-- a stalled agent's claim lapses.
CREATE TABLE janitor_locks (
    name        text        PRIMARY KEY,
    owner_agent text        NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- silt_mark_unreferenced marks the live segments among p_segments that no
-- index row references any more. It locks them first, in id order: two
-- transactions that remove the last rows of one object concurrently are
-- serialized here, and the later one sees the earlier one's deletions.
CREATE FUNCTION silt_mark_unreferenced(p_segments bigint[]) RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    n integer;
BEGIN
    IF coalesce(cardinality(p_segments), 0) = 0 THEN
        RETURN 0;
    END IF;
    PERFORM 1 FROM segments WHERE id = ANY (p_segments) AND state = 'live' ORDER BY id FOR NO KEY UPDATE;
    UPDATE segments s SET state = 'unreferenced', unreferenced_at = now()
    WHERE s.id = ANY (p_segments) AND s.state = 'live'
      AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.segment_id = s.id);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;

-- silt_finish_segment turns a pending segment row live (or unreferenced
-- when nothing indexes it). It is the last statement of every commit and
-- swap: when the row is gone, claimed for deletion, or past its deadline
-- by Postgres's clock at this instant, it raises SLT01 and the whole
-- statement rolls back.
CREATE FUNCTION silt_finish_segment(p_segment_id bigint, p_size bigint, p_referenced boolean) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE segments
    SET state = CASE WHEN p_referenced THEN 'live' ELSE 'unreferenced' END,
        size = p_size,
        deadline = NULL,
        unreferenced_at = CASE WHEN p_referenced THEN NULL ELSE now() END
    WHERE id = p_segment_id AND state = 'pending' AND deadline > clock_timestamp();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'segment % is no longer pending: its deadline passed or it was swept', p_segment_id
            USING ERRCODE = 'SLT01';
    END IF;
END
$fn$;

-- silt_fence checks that p_agent holds the partition's lease at p_epoch,
-- share-locking the lease row (no claim can change it until commit) and
-- then locking the partition row. It raises SLT02 when the lease is lost.
CREATE FUNCTION silt_fence(p_agent text, p_topic bigint, p_part integer, p_epoch bigint,
                           OUT log_start bigint, OUT next_offset bigint)
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM 1 FROM leases l
    JOIN agent_leases a ON a.agent_id = l.owner_agent AND a.incarnation = l.incarnation
    WHERE l.topic_id = p_topic AND l.partition = p_part AND l.owner_agent = p_agent AND l.epoch = p_epoch
      AND a.expires_at > now()
    FOR SHARE OF l;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'topic % partition % epoch %: lease lost or epoch changed', p_topic, p_part, p_epoch
            USING ERRCODE = 'SLT02';
    END IF;
    SELECT p.log_start_offset, p.next_offset INTO log_start, next_offset
    FROM partitions p WHERE p.topic_id = p_topic AND p.partition = p_part
    FOR NO KEY UPDATE;
END
$fn$;

-- silt_commit_flush indexes one flushed segment object. Partitions come
-- sorted (the lock order) in p_topics/p_parts, idempotent producer keys in
-- q_*, and chunks in flush order referring to both by 1-based index (0: not
-- idempotent). Each chunk gets a code: 0 committed, 1 partition not found,
-- 2 duplicate (base_offsets holds the original), 3 out-of-order sequence
-- (details: the expected sequence), 4 unknown producer id, 5 stale producer
-- epoch (details: the current epoch), 6 offset mismatch (details: the
-- partition's next offset). lock_wait_us is the time spent taking the
-- partition locks.
CREATE FUNCTION silt_commit_flush(
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
    starts bigint[];
    added bigint[];
    q_known boolean[];
    q_cur_epoch integer[];
    q_st_epoch integer[];
    q_last integer[];
    q_recent jsonb[];
    q_dirty boolean[];
    i integer;
    k integer;
    pi integer;
    qi integer;
    last_seq integer;
    want_seq integer;
    r jsonb;
    dup boolean;
    accepted integer := 0;
    note text := '';
    entry text;
BEGIN
    base_offsets := array_fill(0::bigint, ARRAY[n]);
    codes := array_fill(0, ARRAY[n]);
    details := array_fill(0::bigint, ARRAY[n]);

    -- Lock the partition rows in (topic, partition) order, then read them.
    PERFORM 1 FROM partitions p
    JOIN unnest(p_topics, p_parts) AS u(topic_id, partition)
      ON p.topic_id = u.topic_id AND p.partition = u.partition
    ORDER BY p.topic_id, p.partition
    FOR NO KEY UPDATE OF p;
    lock_wait_us := (extract(epoch FROM clock_timestamp() - t0) * 1000000)::bigint;
    SELECT array_agg(coalesce(p.next_offset, -1) ORDER BY u.ord) INTO nexts
    FROM unnest(p_topics, p_parts) WITH ORDINALITY AS u(topic_id, partition, ord)
    LEFT JOIN partitions p ON p.topic_id = u.topic_id AND p.partition = u.partition;
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
        SELECT p_topics[c_pidx[g.j]], p_parts[c_pidx[g.j]], base_offsets[g.j], base_offsets[g.j] + c_last_delta[g.j],
               c_records[g.j], c_max_ts[g.j], p_segment_id, c_byte_offset[g.j], c_byte_length[g.j]
        FROM generate_subscripts(c_pidx, 1) AS g(j)
        WHERE codes[g.j] = 0;

        UPDATE partitions p SET next_offset = nexts[g.j], total_bytes = p.total_bytes + added[g.j]
        FROM generate_subscripts(p_topics, 1) AS g(j)
        WHERE p.topic_id = p_topics[g.j] AND p.partition = p_parts[g.j] AND nexts[g.j] <> starts[g.j];

        IF nq > 0 THEN
            INSERT INTO producer_state (producer_id, topic_id, partition, epoch, last_sequence, recent, updated_at)
            SELECT q_producers[g.j], q_topics[g.j], q_parts[g.j], q_st_epoch[g.j], q_last[g.j], q_recent[g.j], now()
            FROM generate_subscripts(q_producers, 1) AS g(j)
            WHERE q_dirty[g.j]
            ON CONFLICT (producer_id, topic_id, partition) DO UPDATE SET
                epoch = EXCLUDED.epoch, last_sequence = EXCLUDED.last_sequence,
                recent = EXCLUDED.recent, updated_at = now();
        END IF;

        -- Announce the new high watermarks, in payloads under NOTIFY's limit.
        FOR k IN 1..np LOOP
            IF nexts[k] <> starts[k] THEN
                entry := p_topics[k] || ':' || p_parts[k] || ':' || nexts[k];
                IF note <> '' AND length(note) + 1 + length(entry) > 7900 THEN
                    PERFORM pg_notify('silt_commits', note);
                    note := '';
                END IF;
                note := CASE WHEN note = '' THEN entry ELSE note || ' ' || entry END;
            END IF;
        END LOOP;
        IF note <> '' THEN
            PERFORM pg_notify('silt_commits', note);
        END IF;
    END IF;

    PERFORM silt_finish_segment(p_segment_id, p_segment_size, accepted > 0);
END
$fn$;

-- silt_swap_batches replaces a partition's index rows with the chunks of
-- one rewritten (merged or compacted) segment, as the lease holder. The
-- old rows are named by base offset and segment id; if any changed
-- meanwhile it raises SLT03 and writes nothing.
CREATE FUNCTION silt_swap_batches(
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
    INSERT INTO batches (topic_id, partition, base_offset, last_offset, record_count, max_timestamp,
                         segment_id, byte_offset, byte_length, delete_horizon, batch_count)
    SELECT p_topic, p_part, r.b, r.l, r.c, r.m, p_segment_id, r.o, r.n, nullif(r.h, 0), greatest(r.k, 1)
    FROM unnest(n_base, n_last, n_records, n_max_ts, n_byte_offset, n_byte_length, n_horizon, n_batches) AS r(b, l, c, m, o, n, h, k);
    SELECT coalesce(sum(x), 0) INTO new_bytes FROM unnest(n_byte_length) AS x;
    UPDATE partitions SET total_bytes = greatest(total_bytes - old_bytes + new_bytes, 0)
    WHERE topic_id = p_topic AND partition = p_part;
    PERFORM silt_mark_unreferenced(segs);
    PERFORM silt_finish_segment(p_segment_id, p_segment_size, coalesce(cardinality(n_base), 0) > 0);
END
$fn$;

-- silt_advance_log_start deletes a partition's index rows below p_start
-- and moves its log start there, as the lease holder. It returns the bytes
-- the deleted rows referenced. A start past the high watermark raises
-- 22023 (invalid_parameter_value).
CREATE FUNCTION silt_advance_log_start(p_agent text, p_topic bigint, p_part integer, p_epoch bigint,
                                       p_start bigint, OUT freed bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    st record;
    segs bigint[];
BEGIN
    freed := 0;
    SELECT * INTO st FROM silt_fence(p_agent, p_topic, p_part, p_epoch);
    IF p_start <= st.log_start THEN
        RETURN;
    END IF;
    IF p_start > st.next_offset THEN
        RAISE EXCEPTION 'log start % beyond high watermark %', p_start, st.next_offset
            USING ERRCODE = '22023';
    END IF;
    WITH d AS (
        DELETE FROM batches WHERE topic_id = p_topic AND partition = p_part AND last_offset < p_start
        RETURNING byte_length, segment_id
    )
    SELECT coalesce(sum(byte_length), 0), array_agg(DISTINCT segment_id) INTO freed, segs FROM d;
    UPDATE partitions SET log_start_offset = p_start, total_bytes = greatest(total_bytes - freed, 0)
    WHERE topic_id = p_topic AND partition = p_part;
    PERFORM silt_mark_unreferenced(segs);
END
$fn$;

-- silt_delete_topic removes a topic, its partitions, leases and index
-- rows, and marks the objects left without index rows unreferenced. Locks
-- are taken in the order everyone else takes them: leases, then
-- partitions, each in key order, then segments. It returns false when the
-- topic does not exist.
CREATE FUNCTION silt_delete_topic(p_name text) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    tid bigint;
    segs bigint[];
BEGIN
    SELECT id INTO tid FROM topics WHERE name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM 1 FROM leases WHERE topic_id = tid ORDER BY partition FOR UPDATE;
    PERFORM 1 FROM partitions WHERE topic_id = tid ORDER BY partition FOR UPDATE;
    UPDATE agent_leases a SET held = greatest(a.held - x.n, 0)
    FROM (SELECT owner_agent, incarnation, count(*) AS n FROM leases
          WHERE topic_id = tid AND owner_agent IS NOT NULL GROUP BY owner_agent, incarnation) x
    WHERE a.agent_id = x.owner_agent AND a.incarnation = x.incarnation;
    WITH d AS (DELETE FROM batches WHERE topic_id = tid RETURNING segment_id)
    SELECT array_agg(DISTINCT segment_id) INTO segs FROM d;
    DELETE FROM topics WHERE id = tid;
    PERFORM silt_mark_unreferenced(segs);
    -- Long-polls and streams on the topic wake and end (TopicDeletedNotice).
    PERFORM pg_notify('silt_commits', tid || ':*:deleted');
    RETURN true;
END
$fn$;

-- silt_sync_leases runs one round of leader election for p_agent (of
-- incarnation p_inc): it renews the agent's lease (one row), computes its
-- fair share (ceil(partitions / live agents)), claims unowned partitions
-- and those of lapsed or restarted owners up to that share with
-- SKIP LOCKED (each claim bumps the partition's epoch), and releases what
-- it holds above the share, or above floor(partitions / live agents) while
-- another live agent holds less than that. It returns what it claimed and
-- released, how many it holds, and, when p_full is set or its lease had
-- lapsed or its incarnation changed, every lease it holds (is_full).
-- A new incarnation first gives up what the old one held, so that they are
-- claimed again under new epochs. Its cost is one row write plus the rows
-- that change owner.
CREATE FUNCTION silt_sync_leases(p_agent text, p_inc bigint, p_agent_ttl interval, p_lease_ttl interval, p_full boolean,
    OUT claimed_topics bigint[], OUT claimed_parts integer[], OUT claimed_epochs bigint[],
    OUT released_topics bigint[], OUT released_parts integer[],
    OUT held integer, OUT is_full boolean,
    OUT all_topics bigint[], OUT all_parts integer[], OUT all_epochs bigint[])
LANGUAGE plpgsql AS $fn$
DECLARE
    prev record;
    live integer;
    total bigint;
    share integer;
    keep integer;
    starving integer;
    want integer;
    prev_owners text[];
    prev_incs bigint[];
BEGIN
    claimed_topics := '{}'; claimed_parts := '{}'; claimed_epochs := '{}';
    released_topics := '{}'; released_parts := '{}';
    SELECT incarnation, expires_at, agent_leases.held AS h INTO prev FROM agent_leases WHERE agent_id = p_agent FOR UPDATE;
    is_full := p_full OR NOT FOUND OR prev.incarnation <> p_inc OR prev.expires_at <= now();
    IF NOT FOUND OR prev.incarnation <> p_inc THEN
        held := 0;
        UPDATE leases SET owner_agent = NULL, incarnation = NULL
        WHERE owner_agent = p_agent AND incarnation IS DISTINCT FROM p_inc;
    ELSE
        held := prev.h;
    END IF;
    INSERT INTO agent_leases (agent_id, incarnation, expires_at, held) VALUES (p_agent, p_inc, now() + p_lease_ttl, held)
    ON CONFLICT (agent_id) DO UPDATE SET incarnation = EXCLUDED.incarnation, expires_at = EXCLUDED.expires_at, held = EXCLUDED.held;

    SELECT count(*) INTO live FROM agents WHERE heartbeat_at > now() - p_agent_ttl OR id = p_agent;
    live := greatest(live, 1);
    SELECT coalesce(sum(partitions), 0) INTO total FROM topics;
    share := ((total + live - 1) / live)::integer;
    -- Kept above the floor, ceil shares can leave a new agent with nothing
    -- (4 partitions, 2 + 2 held, a third agent): while a live agent holds
    -- less than the floor, owners above it give back down to the floor.
    keep := share;
    IF held > total / live THEN
        SELECT count(*) INTO starving FROM agents a
        LEFT JOIN agent_leases al ON al.agent_id = a.id AND al.expires_at > now()
        WHERE (a.heartbeat_at > now() - p_agent_ttl OR a.id = p_agent) AND coalesce(al.held, 0) < total / live;
        IF starving > 0 THEN
            keep := (total / live)::integer;
        END IF;
    END IF;

    IF held < share THEN
        want := share - held;
        WITH c AS (
            SELECT l.topic_id, l.partition FROM leases l WHERE l.owner_agent IS NULL
            ORDER BY l.topic_id, l.partition FOR UPDATE SKIP LOCKED LIMIT want
        ), u AS (
            UPDATE leases l SET owner_agent = p_agent, incarnation = p_inc, epoch = l.epoch + 1
            FROM c WHERE l.topic_id = c.topic_id AND l.partition = c.partition
            RETURNING l.topic_id, l.partition, l.epoch
        )
        SELECT coalesce(array_agg(u.topic_id), '{}'), coalesce(array_agg(u.partition), '{}'), coalesce(array_agg(u.epoch), '{}')
        INTO claimed_topics, claimed_parts, claimed_epochs FROM u;
        want := want - cardinality(claimed_topics);
        IF want > 0 THEN
            -- Partitions of owners whose agent lease lapsed.
            WITH c AS (
                SELECT l.topic_id, l.partition, l.owner_agent, l.incarnation FROM agent_leases a
                JOIN leases l ON l.owner_agent = a.agent_id AND l.incarnation = a.incarnation
                WHERE a.expires_at <= now()
                ORDER BY l.topic_id, l.partition FOR UPDATE OF l SKIP LOCKED LIMIT want
            ), u AS (
                UPDATE leases l SET owner_agent = p_agent, incarnation = p_inc, epoch = l.epoch + 1
                FROM c WHERE l.topic_id = c.topic_id AND l.partition = c.partition
                RETURNING l.topic_id, l.partition, l.epoch, c.owner_agent, c.incarnation
            )
            SELECT claimed_topics || coalesce(array_agg(u.topic_id), '{}'), claimed_parts || coalesce(array_agg(u.partition), '{}'),
                   claimed_epochs || coalesce(array_agg(u.epoch), '{}'),
                   coalesce(array_agg(u.owner_agent), '{}'), coalesce(array_agg(u.incarnation), '{}')
            INTO claimed_topics, claimed_parts, claimed_epochs, prev_owners, prev_incs FROM u;
            UPDATE agent_leases a SET held = greatest(a.held - x.n, 0)
            FROM (SELECT o, i, count(*) AS n FROM unnest(prev_owners, prev_incs) AS t(o, i) GROUP BY o, i) x
            WHERE a.agent_id = x.o AND a.incarnation = x.i AND a.agent_id <> p_agent;
        END IF;
        held := held + cardinality(claimed_topics);
    ELSIF held > keep THEN
        WITH r AS (
            SELECT topic_id, partition FROM leases WHERE owner_agent = p_agent AND incarnation = p_inc
            ORDER BY topic_id DESC, partition DESC FOR UPDATE SKIP LOCKED LIMIT held - keep
        ), u AS (
            UPDATE leases l SET owner_agent = NULL, incarnation = NULL
            FROM r WHERE l.topic_id = r.topic_id AND l.partition = r.partition
            RETURNING l.topic_id, l.partition
        )
        SELECT coalesce(array_agg(u.topic_id), '{}'), coalesce(array_agg(u.partition), '{}')
        INTO released_topics, released_parts FROM u;
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
