-- Kafka consumer groups (the classic protocol: JoinGroup, SyncGroup,
-- Heartbeat, LeaveGroup) share groups, group_members and group_offsets with
-- the HTTP groups, so that one view (silt group describe, the lag metrics)
-- shows both. Every decision still runs under the group's row lock; JoinGroup
-- and SyncGroup requests that must wait for other members are parked in the
-- agents, holding no lock, and woken by NOTIFY on silt_groups (the group's
-- id), sent by every transaction that changes a Kafka group's state.

-- protocol: which door manages the group while it has members ('http' or
-- 'kafka'); a member of the other kind is refused, and an empty group is
-- taken over by whichever kind joins first.
--
-- The Kafka group state machine (Kafka's GroupCoordinator):
--   empty -> preparing_rebalance -> completing_rebalance -> stable
-- rebalance_deadline: in preparing_rebalance, when the join completes
-- without the members that did not rejoin (the rebalance timeout); in
-- completing_rebalance, when the members that did not send SyncGroup are
-- removed. join_delay_until: the first rebalance of an empty group waits
-- until then for more members (group.initial.rebalance.delay.ms).
-- pending_members: member ids handed out with MEMBER_ID_REQUIRED (KIP-394)
-- that have not joined yet, {"id": expiry in ms since the epoch}.
ALTER TABLE groups
    ADD COLUMN protocol text NOT NULL DEFAULT 'http' CHECK (protocol IN ('http', 'kafka')),
    ADD COLUMN kafka_state text NOT NULL DEFAULT 'empty'
        CHECK (kafka_state IN ('empty', 'preparing_rebalance', 'completing_rebalance', 'stable')),
    ADD COLUMN protocol_type text NOT NULL DEFAULT '',
    ADD COLUMN protocol_name text NOT NULL DEFAULT '',
    ADD COLUMN leader text NOT NULL DEFAULT '',
    ADD COLUMN rebalance_deadline timestamptz,
    ADD COLUMN join_delay_until timestamptz,
    ADD COLUMN pending_members jsonb NOT NULL DEFAULT '{}'::jsonb;

-- A Kafka member: its static instance id (group.instance.id), client id and
-- host, rebalance timeout, the protocols it offers with their metadata (in
-- its order of preference), where it is in the current rebalance ('joining':
-- its JoinGroup counts for the next generation; 'syncing': in the generation,
-- no SyncGroup yet; 'synced': SyncGroup received), and the assignment the
-- leader gave it (kafka_assignment, the bytes; assignment, decoded when the
-- protocol is Kafka's consumer protocol, for describe and lag).
ALTER TABLE group_members
    ADD COLUMN instance_id text,
    ADD COLUMN client_id text NOT NULL DEFAULT '',
    ADD COLUMN client_host text NOT NULL DEFAULT '',
    ADD COLUMN rebalance_timeout_ms integer NOT NULL DEFAULT 0 CHECK (rebalance_timeout_ms >= 0),
    ADD COLUMN protocol_names text[] NOT NULL DEFAULT '{}',
    ADD COLUMN protocol_metadata bytea[] NOT NULL DEFAULT '{}',
    ADD COLUMN kafka_phase text NOT NULL DEFAULT '' CHECK (kafka_phase IN ('', 'joining', 'syncing', 'synced')),
    ADD COLUMN kafka_assignment bytea;
CREATE UNIQUE INDEX group_members_instance ON group_members (group_id, instance_id) WHERE instance_id IS NOT NULL;

-- SCRAM credentials of a key, for Kafka's SASL SCRAM-SHA-256 and -512: per
-- mechanism the salt, the iteration count and the stored and server keys
-- (RFC 5802) derived from the key when it is made. Keys made before have
-- none: they authenticate with PLAIN.
ALTER TABLE api_keys ADD COLUMN scram jsonb;
