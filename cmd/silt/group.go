package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"silt/client"
	"silt/problem"
)

const (
	synopsisGroupList     = "silt group list"
	synopsisGroupDescribe = "silt group describe GROUP"
	synopsisGroupReset    = "silt group reset-offsets GROUP --topic T (--to-earliest | --to-latest | --to-timestamp MS | --to-offset N) [--partition P] [--dry-run]"
	synopsisGroupDelete   = "silt group delete GROUP"
)

// groupSubcommands are the verbs of `silt group`.
var groupSubcommands = []subcommand{
	{"list", synopsisGroupList, runGroupList},
	{"describe", synopsisGroupDescribe, runGroupDescribe},
	{"reset-offsets", synopsisGroupReset, runGroupReset},
	{"delete", synopsisGroupDelete, runGroupDelete},
}

// runGroupCmd is `silt group`: consumer groups.
func runGroupCmd(ctx context.Context, args []string, stdout, _ io.Writer) error {
	return runSubcommand(ctx, args, stdout, groupSubcommands, "reset-offsets works only on a group without members (the agent enforces it).\n")
}

func runGroupList(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("group list")
	gf := newOutputFlags(fs)
	_, c, err := gf.parse(fs, args, synopsisGroupList, 0)
	if err != nil {
		return err
	}
	list, err := c.ListGroups(ctx)
	if err != nil {
		return err
	}
	if gf.output == "json" {
		return writeJSON(stdout, struct {
			Groups []client.GroupSummary `json:"groups"`
		}{append([]client.GroupSummary{}, list...)})
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tSTATE\tGENERATION\tMEMBERS")
	for _, g := range list {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", g.Name, g.State, g.Generation, g.Members)
	}
	return tw.Flush()
}

func runGroupDescribe(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("group describe")
	gf := newOutputFlags(fs)
	pos, c, err := gf.parse(fs, args, synopsisGroupDescribe, 1)
	if err != nil {
		return err
	}
	d, err := c.DescribeGroup(ctx, pos[0])
	if err != nil {
		return err
	}
	offs, err := c.GroupOffsets(ctx, pos[0])
	if err != nil {
		return err
	}
	if gf.output == "json" {
		return writeJSON(stdout, struct {
			Group   client.GroupDescription `json:"group"`
			Offsets []client.GroupOffset    `json:"offsets"`
		}{d, append([]client.GroupOffset{}, offs...)})
	}
	owner := map[client.TopicPartition]string{}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Group:\t%s\n", d.Name)
	fmt.Fprintf(tw, "State:\t%s\n", d.State)
	fmt.Fprintf(tw, "Generation:\t%d\n", d.Generation)
	fmt.Fprintf(tw, "Members:\t%d\n", len(d.Members))
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(d.Members) > 0 {
		fmt.Fprintln(stdout)
		tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "MEMBER\tGENERATION\tTOPICS\tASSIGNMENT\tLAST-HEARTBEAT")
		for _, m := range d.Members {
			var parts []string
			for _, a := range m.Assignments {
				parts = append(parts, fmt.Sprintf("%s/%d", a.Topic, a.Partition))
				owner[a] = m.MemberID
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", m.MemberID, m.Generation, strings.Join(m.Topics, ","),
				orDash(strings.Join(parts, ",")), formatTime(m.LastHeartbeat))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(offs) == 0 {
		return nil
	}
	fmt.Fprintln(stdout)
	tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITION\tCOMMITTED\tLOG-START\tHIGH-WATERMARK\tLAG\tMEMBER")
	for _, o := range offs {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%s\n", o.Topic, o.Partition, offsetOrDash(o.CommittedOffset), o.LogStartOffset,
			o.HighWatermark, o.Lag, orDash(owner[client.TopicPartition{Topic: o.Topic, Partition: o.Partition}]))
	}
	return tw.Flush()
}

func runGroupDelete(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("group delete")
	gf := newOutputFlags(fs)
	pos, c, err := gf.parse(fs, args, synopsisGroupDelete, 1)
	if err != nil {
		return err
	}
	if err := c.DeleteGroup(ctx, pos[0]); err != nil {
		return err
	}
	if gf.output == "json" {
		return writeJSON(stdout, map[string]any{"name": pos[0], "deleted": true})
	}
	_, err = fmt.Fprintf(stdout, "Deleted group %s.\n", pos[0])
	return err
}

// resetPlan is one partition of reset-offsets.
type resetPlan struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Previous  *int64 `json:"previous"`
	Offset    int64  `json:"offset"`
}

// runGroupReset commits new offsets for a topic's partitions as a
// standalone commit, which the agent accepts only while the group has no
// members. Offsets outside the partition are moved to its nearest end, as
// Kafka's tool does.
func runGroupReset(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("group reset-offsets")
	gf := newOutputFlags(fs)
	var (
		topic                string
		partition            int
		toEarliest, toLatest bool
		toTimestamp          int64
		toOffset             int64
		dryRun               bool
	)
	fs.StringVar(&topic, "topic", "", "the topic whose offsets to reset (required)")
	fs.IntVar(&partition, "partition", -1, "reset only this partition (default: all)")
	fs.BoolVar(&toEarliest, "to-earliest", false, "reset to each partition's log start offset")
	fs.BoolVar(&toLatest, "to-latest", false, "reset to each partition's high watermark")
	fs.FlagSet.Int64Var(&toTimestamp, "to-timestamp", -1, "reset to the first record at or after this time (Unix ms); the high watermark when there is none")
	fs.add("to-timestamp", "reset to the first record at or after this time (Unix ms); the high watermark when there is none")
	fs.FlagSet.Int64Var(&toOffset, "to-offset", -1, "reset to this offset (moved into [log start, high watermark])")
	fs.add("to-offset", "reset to this offset (moved into [log start, high watermark])")
	fs.BoolVar(&dryRun, "dry-run", false, "print the new offsets without committing them")
	pos, c, err := gf.parse(fs, args, synopsisGroupReset, 1)
	if err != nil {
		return err
	}
	group := pos[0]
	chosen := 0
	for _, set := range []bool{toEarliest, toLatest, toTimestamp >= 0, toOffset >= 0} {
		if set {
			chosen++
		}
	}
	switch {
	case topic == "":
		return usageError(synopsisGroupReset, "--topic is required")
	case chosen != 1:
		return usageError(synopsisGroupReset, "give exactly one of --to-earliest, --to-latest, --to-timestamp and --to-offset")
	case partition < -1 || partition > 1<<31-1:
		return fmt.Errorf("--partition %d: want a partition number", partition)
	}
	t, err := c.DescribeTopic(ctx, topic)
	if err != nil {
		return err
	}
	var parts []client.PartitionState
	for _, p := range t.PartitionStates {
		if partition < 0 || p.Partition == int32(partition) {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return fmt.Errorf("topic %s has %d partitions; there is no partition %d", topic, t.Partitions, partition)
	}
	previous := map[int32]*int64{}
	switch offs, err := c.GroupOffsets(ctx, group); {
	case err == nil:
		for _, o := range offs {
			if o.Topic == topic {
				previous[o.Partition] = o.CommittedOffset
			}
		}
	case !client.IsCode(err, problem.CodeGroupNotFound):
		return err
	}
	plan := make([]resetPlan, 0, len(parts))
	commits := make([]client.OffsetCommit, 0, len(parts))
	for _, p := range parts {
		off := p.HighWatermark
		switch {
		case toEarliest:
			off = p.LogStartOffset
		case toTimestamp >= 0:
			at, found, err := c.OffsetForTimestamp(ctx, topic, p.Partition, time.UnixMilli(toTimestamp))
			if err != nil {
				return err
			}
			if found {
				off = at
			}
		case toOffset >= 0:
			off = min(max(toOffset, p.LogStartOffset), p.HighWatermark)
		}
		plan = append(plan, resetPlan{Topic: topic, Partition: p.Partition, Previous: previous[p.Partition], Offset: off})
		// Pinned: offsets computed from this topic must not land in one
		// created under its name meanwhile.
		commits = append(commits, client.OffsetCommit{Topic: topic, TopicID: t.ID, Partition: p.Partition, Offset: off})
	}
	if !dryRun {
		if err := c.CommitOffsets(ctx, group, "", 0, commits); err != nil {
			return err
		}
	}
	if gf.output == "json" {
		return writeJSON(stdout, map[string]any{"group": group, "dry_run": dryRun, "offsets": plan})
	}
	verb := "Reset"
	if dryRun {
		verb = "Would reset (dry run)"
	}
	fmt.Fprintf(stdout, "%s offsets of group %s on topic %s.\n", verb, group, topic)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITION\tPREVIOUS\tNEW")
	for _, p := range plan {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\n", p.Topic, p.Partition, offsetOrDash(p.Previous), p.Offset)
	}
	return tw.Flush()
}

func offsetOrDash(p *int64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprint(*p)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// groupConsumeOptions configure consumeGroup. Zero values take defaults.
type groupConsumeOptions struct {
	// SessionTimeout of the member (default 10s).
	SessionTimeout time.Duration
	// AutoOffsetReset is where to start in partitions without a committed
	// offset: client.ResetEarliest or client.ResetLatest (the default).
	AutoOffsetReset string
	// MaxRecords stops after printing this many records; 0 runs until ctx
	// ends.
	MaxRecords int
	// FetchRecords bounds one fetch (default: the agent's).
	FetchRecords int
	// Wait is each fetch's long-poll (default 5s).
	Wait time.Duration
	// Format prints a record (default formatJSON).
	Format recordFormat
	// Log, when set, receives one line per rebalance and retry.
	Log io.Writer
}

// consumeGroup consumes topics as a member of group, printing records to
// stdout: it joins, heartbeats in the background at the interval the
// agent asks for, fetches from the member's assigned partitions, and
// after each batch is printed and flushed commits the offsets after the
// printed records (at least once: a crash or rebalance between printing
// and committing prints those records again). A rebalance (heartbeat
// saying rejoin, or stale_generation) rejoins with the member id; an
// expired member (member_not_found) joins afresh. It leaves the group on
// return. It returns nil when ctx ends or MaxRecords were printed.
//
// This is `silt consume --group`.
func consumeGroup(ctx context.Context, c *client.Client, group string, topics []string, opts groupConsumeOptions, stdout io.Writer) error {
	if len(topics) == 0 {
		return errors.New("consume with a group: at least one topic is required")
	}
	if opts.SessionTimeout <= 0 {
		opts.SessionTimeout = 10 * time.Second
	}
	if opts.Wait <= 0 {
		opts.Wait = 5 * time.Second
	}
	if opts.Format == nil {
		opts.Format = formatJSON
	}
	if opts.MaxRecords < 0 {
		return errors.New("consume with a group: max records must not be negative")
	}
	gc := &groupConsumer{c: c, group: group, topics: topics, opts: opts}
	if err := gc.join(ctx, false); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer gc.leave(ctx)
	hbCtx, stopHB := context.WithCancel(ctx)
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		gc.heartbeats(hbCtx)
	}()
	defer func() {
		stopHB()
		<-hbDone
	}()
	w := bufio.NewWriter(stdout)
	printed := 0
	failures := 0
	for {
		if ctx.Err() != nil {
			return nil
		}
		if err := gc.rejoinIfTold(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		id, gen := gc.membership()
		res, err := c.GroupFetch(ctx, group, id, client.GroupFetchOptions{MaxRecords: opts.FetchRecords, Wait: opts.Wait, Generation: gen})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if err := gc.recover(ctx, err, &failures); err != nil {
				if ctx.Err() != nil {
					return nil // stopped while rejoining
				}
				return err
			}
			continue
		}
		failures = 0
		recs := res.Records
		if opts.MaxRecords > 0 {
			recs = recs[:min(len(recs), opts.MaxRecords-printed)]
		}
		for _, r := range recs {
			if err := opts.Format(w, r.Record); err != nil {
				return err
			}
		}
		if err := w.Flush(); err != nil {
			return err
		}
		printed += len(recs)
		if err := gc.commit(ctx, gen, recs); err != nil {
			return err
		}
		if opts.MaxRecords > 0 && printed >= opts.MaxRecords {
			return nil
		}
	}
}

// groupConsumer is consumeGroup's membership.
type groupConsumer struct {
	c      *client.Client
	group  string
	topics []string
	opts   groupConsumeOptions

	mu       sync.Mutex
	memberID string
	gen      int64
	interval time.Duration
	rejoin   bool // a heartbeat said the group rebalanced
	lost     bool // a heartbeat said the member is gone
}

func (gc *groupConsumer) logf(format string, args ...any) {
	if gc.opts.Log != nil {
		fmt.Fprintf(gc.opts.Log, format+"\n", args...)
	}
}

func (gc *groupConsumer) membership() (string, int64) {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	return gc.memberID, gc.gen
}

// join joins as a new member or, with again, rejoins as the current one
// (falling back to a new one when the group forgot it).
func (gc *groupConsumer) join(ctx context.Context, again bool) error {
	id, _ := gc.membership()
	if !again {
		id = ""
	}
	req := client.JoinGroupRequest{MemberID: id, Topics: gc.topics, SessionTimeout: gc.opts.SessionTimeout, AutoOffsetReset: gc.opts.AutoOffsetReset}
	m, err := gc.c.JoinGroup(ctx, gc.group, req)
	if id != "" && client.IsCode(err, problem.CodeMemberNotFound) {
		req.MemberID = ""
		m, err = gc.c.JoinGroup(ctx, gc.group, req)
	}
	if err != nil {
		return err
	}
	gc.mu.Lock()
	gc.memberID, gc.gen, gc.interval = m.MemberID, m.Generation, m.HeartbeatInterval
	gc.rejoin, gc.lost = false, false
	gc.mu.Unlock()
	parts := make([]string, len(m.Assignments))
	for i, a := range m.Assignments {
		parts[i] = fmt.Sprintf("%s/%d@%d", a.Topic, a.Partition, a.Offset)
	}
	// The member id authorizes the member's commits: the log shows its start.
	gc.logf("joined group %s as %s…, generation %d: %s", gc.group, m.MemberID[:min(8, len(m.MemberID))], m.Generation, orDash(strings.Join(parts, " ")))
	return nil
}

// rejoinIfTold rejoins when a heartbeat asked for it.
func (gc *groupConsumer) rejoinIfTold(ctx context.Context) error {
	gc.mu.Lock()
	rejoin, lost := gc.rejoin, gc.lost
	gc.mu.Unlock()
	if !rejoin && !lost {
		return nil
	}
	return gc.join(ctx, !lost)
}

// heartbeats runs until ctx ends, flagging rebalances for the fetch loop.
func (gc *groupConsumer) heartbeats(ctx context.Context) {
	for {
		gc.mu.Lock()
		interval := gc.interval
		gc.mu.Unlock()
		t := time.NewTimer(max(interval, 10*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		id, gen := gc.membership()
		hb, err := gc.c.Heartbeat(ctx, gc.group, id, gen)
		gc.mu.Lock()
		if id == gc.memberID && gen == gc.gen { // not rejoined meanwhile
			switch {
			case err == nil && hb.Rejoin:
				gc.rejoin = true
			case client.IsCode(err, problem.CodeMemberNotFound):
				gc.lost = true
			}
		}
		gc.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			gc.logf("heartbeat: %v", err)
		}
	}
}

// recover handles a failed fetch: rebalances rejoin; other failures back
// off and rejoin (a lost response may have moved the agent's positions:
// rejoining puts them back at the committed offsets), up to a bound.
func (gc *groupConsumer) recover(ctx context.Context, err error, failures *int) error {
	switch {
	case client.IsCode(err, problem.CodeStaleGeneration):
		gc.logf("group %s rebalanced; rejoining", gc.group)
		return gc.join(ctx, true)
	case client.IsCode(err, problem.CodeMemberNotFound):
		gc.logf("member expired; joining group %s again", gc.group)
		return gc.join(ctx, false)
	}
	var e *client.Error
	if errors.As(err, &e) && !e.Retriable {
		return err
	}
	*failures++
	if *failures > 5 {
		return err
	}
	gc.logf("fetch failed (%v); retrying", err)
	t := time.NewTimer(time.Duration(*failures) * 200 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil
	case <-t.C:
	}
	if err := gc.join(ctx, true); err != nil && ctx.Err() == nil {
		gc.logf("rejoin failed: %v", err)
	}
	return nil
}

// commit commits the offsets after the printed records. It runs even
// when ctx has just ended, so that what was printed is not printed again.
// A rebalance in between only means those records may be printed again.
func (gc *groupConsumer) commit(ctx context.Context, gen int64, recs []client.GroupRecord) error {
	type pinned struct {
		client.TopicPartition
		id int64
	}
	next := map[pinned]int64{}
	for _, r := range recs {
		k := pinned{client.TopicPartition{Topic: r.Topic, Partition: r.Partition}, r.TopicID}
		next[k] = max(next[k], r.Offset+1)
	}
	if len(next) == 0 {
		return nil
	}
	offsets := make([]client.OffsetCommit, 0, len(next))
	for k, off := range next {
		// Pinned to the topic the records came from: a topic deleted and
		// created again since must not get this offset.
		offsets = append(offsets, client.OffsetCommit{Topic: k.Topic, TopicID: k.id, Partition: k.Partition, Offset: off})
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	id, _ := gc.membership()
	err := gc.c.CommitOffsets(cctx, gc.group, id, gen, offsets)
	switch {
	case err == nil:
		return nil
	case client.IsCode(err, problem.CodeStaleGeneration), client.IsCode(err, problem.CodeNotAssigned), client.IsCode(err, problem.CodeMemberNotFound),
		client.IsCode(err, problem.CodeTopicIDMismatch):
		gc.logf("commit refused (%v); those records may be delivered again", err)
		gc.mu.Lock()
		if client.IsCode(err, problem.CodeMemberNotFound) {
			gc.lost = true
		} else {
			gc.rejoin = true
		}
		gc.mu.Unlock()
		return nil
	}
	return err
}

// leave leaves the group, even when ctx has ended.
func (gc *groupConsumer) leave(ctx context.Context) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	id, _ := gc.membership()
	if err := gc.c.LeaveGroup(lctx, gc.group, id); err != nil && !client.IsCode(err, problem.CodeMemberNotFound) {
		gc.logf("leave: %v", err)
	}
}
