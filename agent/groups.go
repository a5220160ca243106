package agent

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"silt/auth"
	"silt/fetch"
	"silt/groups"
	"silt/metadata"
	"silt/problem"
	"silt/segment"
)

// GroupCoordinator runs consumer groups; groups.Coordinator implements it.
type GroupCoordinator interface {
	Join(ctx context.Context, group string, req groups.JoinRequest) (groups.JoinResult, error)
	Heartbeat(ctx context.Context, group, member string, generation int64) (groups.HeartbeatResult, error)
	Leave(ctx context.Context, group, member string) error
	Commit(ctx context.Context, group string, req groups.CommitRequest) error
	Offsets(ctx context.Context, group string) ([]groups.PartitionLag, error)
	List(ctx context.Context, after string, limit int) ([]groups.Summary, error)
	Describe(ctx context.Context, group string) (groups.Description, error)
	Delete(ctx context.Context, group string) error
	StartFetch(ctx context.Context, group, member string, generation int64, autoCommit bool) (groups.FetchStart, error)
	FinishFetch(ctx context.Context, group, member string, generation int64, positions []groups.Position) error
}

// JoinGroupRequest is the body of POST /v1/groups/{group}/members.
type JoinGroupRequest struct {
	Topics           []string `json:"topics"`
	SessionTimeoutMs *int64   `json:"session_timeout_ms,omitempty"`
	// MemberID rejoins as that member (after a rebalance).
	MemberID string `json:"member_id,omitempty"`
	// AutoOffsetReset is earliest or latest (the default, as in Kafka).
	AutoOffsetReset string `json:"auto_offset_reset,omitempty"`
}

// AssignmentJSON is an assigned partition and where the member starts.
type AssignmentJSON struct {
	Topic string `json:"topic"`
	// TopicID is the topic's id, which commits may pin.
	TopicID         int64  `json:"topic_id"`
	Partition       int32  `json:"partition"`
	CommittedOffset *int64 `json:"committed_offset"`
	Offset          int64  `json:"offset"`
}

// JoinGroupResponse is the answer to a join.
type JoinGroupResponse struct {
	MemberID            string           `json:"member_id"`
	Generation          int64            `json:"generation"`
	Assignments         []AssignmentJSON `json:"assignments"`
	HeartbeatIntervalMs int64            `json:"heartbeat_interval_ms"`
	SessionTimeoutMs    int64            `json:"session_timeout_ms"`
}

// HeartbeatRequest is the body of a heartbeat.
type HeartbeatRequest struct {
	Generation *int64 `json:"generation"`
}

// HeartbeatResponse tells the member whether to rejoin.
type HeartbeatResponse struct {
	Generation int64 `json:"generation"`
	Rejoin     bool  `json:"rejoin"`
}

// CommitOffsetsRequest is the body of POST /v1/groups/{group}/offsets.
// Without MemberID it is a standalone commit, allowed only while the group
// has no members.
type CommitOffsetsRequest struct {
	MemberID   string             `json:"member_id,omitempty"`
	Generation *int64             `json:"generation,omitempty"`
	Offsets    []OffsetCommitJSON `json:"offsets"`
}

// OffsetCommitJSON is one offset to commit: the offset of the next record
// to read.
type OffsetCommitJSON struct {
	Topic string `json:"topic"`
	// TopicID, when set, must be the topic's id: 409 topic_id_mismatch
	// otherwise (the topic was deleted and created again).
	TopicID   *int64 `json:"topic_id,omitempty"`
	Partition *int32 `json:"partition"`
	Offset    *int64 `json:"offset"`
	Metadata  string `json:"metadata,omitempty"`
}

// GroupOffsetJSON is one partition of GET /v1/groups/{group}/offsets.
type GroupOffsetJSON struct {
	Topic           string     `json:"topic"`
	Partition       int32      `json:"partition"`
	CommittedOffset *int64     `json:"committed_offset"`
	Metadata        string     `json:"metadata"`
	CommittedAt     *time.Time `json:"committed_at,omitempty"`
	LogStartOffset  int64      `json:"log_start_offset"`
	HighWatermark   int64      `json:"high_watermark"`
	Lag             int64      `json:"lag"`
}

// GroupOffsetsResponse is the body of GET /v1/groups/{group}/offsets.
type GroupOffsetsResponse struct {
	Group   string            `json:"group"`
	Offsets []GroupOffsetJSON `json:"offsets"`
}

// GroupSummaryJSON is a group in GET /v1/groups.
type GroupSummaryJSON struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	Generation int64  `json:"generation"`
	Members    int    `json:"members"`
}

// GroupPartitionJSON is a partition of a member's assignment.
type GroupPartitionJSON struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
}

// GroupMemberJSON is a member in GET /v1/groups/{group}.
type GroupMemberJSON struct {
	MemberID         string               `json:"member_id"`
	Generation       int64                `json:"generation"`
	Topics           []string             `json:"topics"`
	SessionTimeoutMs int64                `json:"session_timeout_ms"`
	AutoOffsetReset  string               `json:"auto_offset_reset"`
	Assignments      []GroupPartitionJSON `json:"assignments"`
	JoinedAt         time.Time            `json:"joined_at"`
	LastHeartbeat    time.Time            `json:"last_heartbeat"`
}

// GroupJSON is the body of GET /v1/groups/{group}.
type GroupJSON struct {
	Name       string            `json:"name"`
	State      string            `json:"state"`
	Generation int64             `json:"generation"`
	Members    []GroupMemberJSON `json:"members"`
}

func (s *Server) groupRoutes(g *echo.Group) {
	if s.deps.Groups == nil {
		return
	}
	g.GET("/groups", s.listGroups)
	g.GET("/groups/:group", s.describeGroup)
	g.DELETE("/groups/:group", s.deleteGroup)
	g.POST("/groups/:group/members", s.joinGroup)
	g.POST("/groups/:group/members/:member/heartbeat", s.heartbeat)
	g.DELETE("/groups/:group/members/:member", s.leaveGroup)
	g.GET("/groups/:group/members/:member/records", s.groupFetch)
	g.POST("/groups/:group/offsets", s.commitOffsets)
	g.GET("/groups/:group/offsets", s.groupOffsets)
	if s.deps.LagHistory != nil {
		g.GET("/groups/:group/lag-history", s.groupLagHistory)
	}
}

// LagHistory is the agent's memory of every group's total lag
// (groups.LagHistory).
type LagHistory interface {
	Points(group string) []groups.LagPoint
	Interval() time.Duration
}

// LagHistoryResponse is the body of GET /v1/groups/{group}/lag-history.
type LagHistoryResponse struct {
	Group      string         `json:"group"`
	IntervalMs int64          `json:"interval_ms"`
	Points     []LagPointJSON `json:"points"`
}

// LagPointJSON is a group's total lag at a time (unix milliseconds).
type LagPointJSON struct {
	At  int64 `json:"at"`
	Lag int64 `json:"lag"`
}

func (s *Server) groupLagHistory(c echo.Context) error {
	group, _, err := memberParams(c)
	if err != nil {
		return err
	}
	if err := groups.ValidName(group); err != nil {
		return err
	}
	points := s.deps.LagHistory.Points(group)
	out := LagHistoryResponse{Group: group, IntervalMs: s.deps.LagHistory.Interval().Milliseconds(), Points: make([]LagPointJSON, len(points))}
	for i, p := range points {
		out.Points[i] = LagPointJSON{At: p.At.UnixMilli(), Lag: p.Lag}
	}
	return c.JSON(http.StatusOK, out)
}

// memberParams reads the :group and (when routed) :member path parameters.
func memberParams(c echo.Context) (group, member string, err error) {
	if group, err = pathParam(c, "group"); err != nil {
		return "", "", err
	}
	if c.Param("member") != "" {
		if member, err = pathParam(c, "member"); err != nil {
			return "", "", err
		}
	}
	return group, member, nil
}

func (s *Server) joinGroup(c echo.Context) error {
	group, _, err := memberParams(c)
	if err != nil {
		return err
	}
	var req JoinGroupRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	jr := groups.JoinRequest{MemberID: req.MemberID, Topics: req.Topics, AutoOffsetReset: req.AutoOffsetReset}
	if req.SessionTimeoutMs != nil {
		if *req.SessionTimeoutMs <= 0 || *req.SessionTimeoutMs > math.MaxInt32 {
			return badRequest(problem.CodeInvalidParameter, "session_timeout_ms must be a positive number of milliseconds")
		}
		jr.SessionTimeout = time.Duration(*req.SessionTimeoutMs) * time.Millisecond
	}
	res, err := s.deps.Groups.Join(c.Request().Context(), group, jr)
	if err != nil {
		return err
	}
	out := JoinGroupResponse{MemberID: res.MemberID, Generation: res.Generation,
		Assignments:         make([]AssignmentJSON, len(res.Assignments)),
		HeartbeatIntervalMs: res.HeartbeatInterval.Milliseconds(), SessionTimeoutMs: res.SessionTimeout.Milliseconds()}
	for i, a := range res.Assignments {
		out.Assignments[i] = AssignmentJSON{Topic: a.Topic, TopicID: a.TopicID, Partition: a.Partition, CommittedOffset: a.Committed, Offset: a.Offset}
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) heartbeat(c echo.Context) error {
	group, member, err := memberParams(c)
	if err != nil {
		return err
	}
	var req HeartbeatRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if req.Generation == nil {
		return badRequest(problem.CodeInvalidParameter, "generation is required")
	}
	if *req.Generation < 0 {
		return badRequest(problem.CodeInvalidParameter, "generation %d is negative", *req.Generation)
	}
	res, err := s.deps.Groups.Heartbeat(c.Request().Context(), group, member, *req.Generation)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, HeartbeatResponse{Generation: res.Generation, Rejoin: res.Rejoin})
}

func (s *Server) leaveGroup(c echo.Context) error {
	group, member, err := memberParams(c)
	if err != nil {
		return err
	}
	if err := s.deps.Groups.Leave(c.Request().Context(), group, member); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) commitOffsets(c echo.Context) error {
	group, _, err := memberParams(c)
	if err != nil {
		return err
	}
	var req CommitOffsetsRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	cr := groups.CommitRequest{MemberID: req.MemberID, Offsets: make([]groups.OffsetCommit, len(req.Offsets))}
	if req.MemberID != "" {
		if req.Generation == nil {
			return badRequest(problem.CodeInvalidParameter, "generation is required with member_id")
		}
		if *req.Generation < 0 {
			return badRequest(problem.CodeInvalidParameter, "generation %d is negative", *req.Generation)
		}
		cr.Generation = *req.Generation
	}
	for i, o := range req.Offsets {
		if o.Partition == nil || o.Offset == nil {
			return badRequest(problem.CodeInvalidParameter, "offsets[%d]: topic, partition and offset are required", i)
		}
		if err := ValidTopicName(o.Topic); err != nil {
			return badRequest(problem.CodeInvalidTopicName, "offsets[%d]: %v", i, err)
		}
		cr.Offsets[i] = groups.OffsetCommit{Topic: o.Topic, Partition: *o.Partition, Offset: *o.Offset, Metadata: o.Metadata}
		if o.TopicID != nil {
			if *o.TopicID < 1 {
				return badRequest(problem.CodeInvalidParameter, "offsets[%d].topic_id must be a positive topic id", i)
			}
			cr.Offsets[i].TopicID = *o.TopicID
		}
	}
	if err := s.deps.Groups.Commit(c.Request().Context(), group, cr); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) groupOffsets(c echo.Context) error {
	group, _, err := memberParams(c)
	if err != nil {
		return err
	}
	lags, err := s.deps.Groups.Offsets(c.Request().Context(), group)
	if err != nil {
		return err
	}
	out := GroupOffsetsResponse{Group: group, Offsets: make([]GroupOffsetJSON, len(lags))}
	for i, l := range lags {
		out.Offsets[i] = GroupOffsetJSON{Topic: l.Topic, Partition: l.Partition, CommittedOffset: l.Committed, Metadata: l.Metadata,
			CommittedAt: l.CommittedAt, LogStartOffset: l.LogStartOffset, HighWatermark: l.HighWatermark, Lag: l.Lag}
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) listGroups(c echo.Context) error {
	pg, err := pageParams(c)
	if err != nil {
		return err
	}
	list, err := s.deps.Groups.List(c.Request().Context(), pg.cursor, pg.limit)
	if err != nil {
		return err
	}
	out := struct {
		Groups     []GroupSummaryJSON `json:"groups"`
		NextCursor string             `json:"next_cursor,omitempty"`
	}{Groups: make([]GroupSummaryJSON, 0, len(list))}
	for _, g := range list {
		if !visible(c, auth.ResourceGroup, g.Name) {
			continue
		}
		out.Groups = append(out.Groups, GroupSummaryJSON{Name: g.Name, State: g.State, Generation: g.Generation, Members: g.Members})
	}
	if len(list) == pg.limit {
		out.NextCursor = nextCursor(list[len(list)-1].Name)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) describeGroup(c echo.Context) error {
	group, _, err := memberParams(c)
	if err != nil {
		return err
	}
	d, err := s.deps.Groups.Describe(c.Request().Context(), group)
	if err != nil {
		return err
	}
	out := GroupJSON{Name: d.Name, State: d.State, Generation: d.Generation, Members: make([]GroupMemberJSON, len(d.Members))}
	for i, m := range d.Members {
		mj := GroupMemberJSON{MemberID: m.ID, Generation: m.Generation, Topics: m.Topics, SessionTimeoutMs: m.SessionTimeout.Milliseconds(),
			AutoOffsetReset: m.AutoOffsetReset, Assignments: make([]GroupPartitionJSON, len(m.Assignment)),
			JoinedAt: m.JoinedAt, LastHeartbeat: m.LastHeartbeat}
		for j, a := range m.Assignment {
			mj.Assignments[j] = GroupPartitionJSON{Topic: a.Topic, Partition: a.Partition}
		}
		out.Members[i] = mj
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) deleteGroup(c echo.Context) error {
	group, _, err := memberParams(c)
	if err != nil {
		return err
	}
	if err := s.deps.Groups.Delete(c.Request().Context(), group); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// maxWaitPartitions bounds the partitions one group long-poll waits on at
// once; a member assigned more is woken by the first ones only.
const maxWaitPartitions = 256

// groupFetch returns records across the member's assigned partitions from
// its stored positions and stores the positions reached. See
// docs/groups.md.
func (s *Server) groupFetch(c echo.Context) error {
	maxRecords, err := intParam(c, "max_records", defaultMaxRecords, 1, maxMaxRecords)
	if err != nil {
		return err
	}
	maxBytes, err := intParam(c, "max_bytes", defaultMaxBytes, 1, maxMaxBytes)
	if err != nil {
		return err
	}
	waitMs, err := intParam(c, "wait_ms", 0, 0, s.cfg.MaxWait.Milliseconds())
	if err != nil {
		return err
	}
	generation, err := intParam(c, "generation", groups.AnyGeneration, 0, math.MaxInt64)
	if err != nil {
		return err
	}
	autoCommit := false
	switch raw := c.QueryParam("auto_commit"); raw {
	case "", "false":
	case "true":
		autoCommit = true
	default:
		return badRequest(problem.CodeInvalidParameter, "auto_commit=%q must be true or false", raw)
	}
	enc, err := encodingParam(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	group, member, err := memberParams(c)
	if err != nil {
		return err
	}
	start, err := s.deps.Groups.StartFetch(ctx, group, member, generation, autoCommit)
	if err != nil {
		return err
	}
	gf := &groupFetchState{
		positions:  append([]groups.Position(nil), start.Positions...),
		records:    make([][]fetch.Record, len(start.Positions)),
		maxRecords: int(maxRecords), maxBytes: maxBytes, reset: start.AutoOffsetReset,
	}
	defer gf.release()
	if err := s.fetchAssigned(ctx, gf, time.Duration(waitMs)*time.Millisecond); err != nil {
		return err
	}
	if gf.moved(start.Positions) {
		if err := s.deps.Groups.FinishFetch(ctx, group, member, start.Generation, gf.positions); err != nil {
			return err
		}
	}
	w := c.Response()
	w.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	w.WriteHeader(http.StatusOK)
	pw := newPieceWriter(w)
	pw.buf = append(pw.buf, `{"generation":`...)
	pw.buf = strconv.AppendInt(pw.buf, start.Generation, 10)
	pw.buf = append(pw.buf, `,"records":[`...)
	n := 0
	for _, i := range gf.order {
		p := gf.positions[i]
		for j := range gf.records[i] {
			if n > 0 {
				pw.buf = append(pw.buf, ',')
			}
			n++
			// The partition fetch's record object, with topic and partition added.
			pw.buf = appendRecordJSON(pw.buf, &gf.records[i][j], enc)
			pw.buf = append(pw.buf[:len(pw.buf)-1], `,"topic":`...)
			pw.buf = appendJSONString(pw.buf, p.Topic)
			pw.buf = append(pw.buf, `,"topic_id":`...)
			pw.buf = strconv.AppendInt(pw.buf, p.TopicID, 10)
			pw.buf = append(pw.buf, `,"partition":`...)
			pw.buf = strconv.AppendInt(pw.buf, int64(p.Partition), 10)
			pw.buf = append(pw.buf, '}')
			pw.maybeFlush()
		}
	}
	pw.buf = append(pw.buf, `],"positions":[`...)
	for i, p := range gf.positions {
		if i > 0 {
			pw.buf = append(pw.buf, ',')
		}
		pw.buf = append(pw.buf, `{"topic":`...)
		pw.buf = appendJSONString(pw.buf, p.Topic)
		pw.buf = append(pw.buf, `,"topic_id":`...)
		pw.buf = strconv.AppendInt(pw.buf, p.TopicID, 10)
		pw.buf = append(pw.buf, `,"partition":`...)
		pw.buf = strconv.AppendInt(pw.buf, int64(p.Partition), 10)
		pw.buf = append(pw.buf, `,"offset":`...)
		pw.buf = strconv.AppendInt(pw.buf, p.Offset, 10)
		pw.buf = append(pw.buf, '}')
		pw.maybeFlush()
	}
	pw.buf = append(pw.buf, "]}\n"...)
	return s.endPieces(pw)
}

// groupFetchState is one group fetch in progress.
type groupFetchState struct {
	positions  []groups.Position
	records    [][]fetch.Record // per position
	order      []int            // positions in the order they are read and returned
	maxRecords int
	maxBytes   int64
	reset      string
	count      int
	bytes      int64
	held       []*fetch.Response // released once the answer is written
}

// release gives back the fetched responses' share of the in-flight budget.
func (gf *groupFetchState) release() {
	for _, r := range gf.held {
		r.Release()
	}
	gf.held = nil
}

func (gf *groupFetchState) full() bool { return gf.count >= gf.maxRecords || gf.bytes >= gf.maxBytes }

func (gf *groupFetchState) moved(from []groups.Position) bool {
	for i := range from {
		if gf.positions[i].Offset != from[i].Offset {
			return true
		}
	}
	return false
}

// take keeps what fits of a fetched page of position i and advances it.
// The first record of the whole fetch is kept even when larger than
// max_bytes, as in a partition fetch.
func (gf *groupFetchState) take(i int, resp *fetch.Response) {
	gf.held = append(gf.held, resp)
	kept := 0
	for j := range resp.Records {
		r := &resp.Records[j]
		size := segment.RecordSize(&r.Record)
		if gf.count > 0 && (gf.count >= gf.maxRecords || gf.bytes+size > gf.maxBytes) {
			break
		}
		gf.count++
		gf.bytes += size
		kept++
	}
	gf.records[i] = append(gf.records[i], resp.Records[:kept]...)
	switch {
	case kept == len(resp.Records):
		gf.positions[i].Offset = max(gf.positions[i].Offset, resp.NextOffset)
	case kept > 0:
		gf.positions[i].Offset = resp.Records[kept-1].Offset + 1
	}
}

// fetchAssigned reads the positions in a random rotation (fair across
// fetches) without waiting; if nothing came and wait > 0, it long-polls
// every position at once and returns what the first wake-up brought.
func (s *Server) fetchAssigned(ctx context.Context, gf *groupFetchState, wait time.Duration) error {
	n := len(gf.positions)
	if n == 0 {
		return s.idle(ctx, wait)
	}
	first := rand.IntN(n)
	for k := range n {
		gf.order = append(gf.order, (first+k)%n)
	}
	for _, i := range gf.order {
		if gf.full() {
			break
		}
		resp, err := s.fetchPosition(ctx, gf, i, 0)
		if errors.Is(err, metadata.ErrPartitionNotFound) {
			// The topic was deleted: the group rebalances at its next
			// operation, which tells the member to rejoin.
			continue
		}
		if errors.Is(err, fetch.ErrBackpressure) && gf.count > 0 {
			break // too many response bytes in flight: answer with what came
		}
		if err != nil {
			return err
		}
		gf.take(i, resp)
	}
	if gf.count > 0 || wait <= 0 {
		return nil
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		i    int
		resp *fetch.Response
		err  error
	}
	waiting := gf.order[:min(n, maxWaitPartitions)]
	results := make(chan result, len(waiting))
	for _, i := range waiting {
		go func() {
			p := gf.positions[i]
			resp, err := s.deps.Fetcher.Fetch(wctx, fetch.Request{TopicID: p.TopicID, Partition: p.Partition, Offset: p.Offset,
				MaxRecords: gf.maxRecords, MaxBytes: gf.maxBytes, Wait: wait})
			results <- result{i, resp, err}
		}()
	}
	got := make([]*fetch.Response, n)
	var firstErr error
	for range waiting {
		r := <-results
		switch {
		case r.err == nil && len(r.resp.Records) > 0:
			got[r.i] = r.resp
			cancel() // the first records end the wait of the others
		case errors.Is(r.err, metadata.ErrPartitionNotFound):
			// A topic was deleted: end the wait now; the member's next
			// operation learns of the rebalance.
			cancel()
		case r.err != nil && wctx.Err() == nil && !errors.Is(r.err, fetch.ErrOffsetOutOfRange):
			// Out of range here means retention raced the first pass;
			// the next fetch resets the position.
			firstErr = r.err
			cancel()
		}
	}
	if err := ctx.Err(); err != nil {
		for _, r := range got {
			r.Release()
		}
		return err
	}
	for _, i := range gf.order {
		if got[i] != nil {
			gf.take(i, got[i])
		}
	}
	if gf.count == 0 && firstErr != nil {
		return firstErr
	}
	return nil
}

// fetchPosition reads position i, moving it by the member's
// auto_offset_reset when it fell below the log start.
func (s *Server) fetchPosition(ctx context.Context, gf *groupFetchState, i int, wait time.Duration) (*fetch.Response, error) {
	for attempt := 0; ; attempt++ {
		p := &gf.positions[i]
		budget := gf.maxBytes - gf.bytes
		resp, err := s.deps.Fetcher.Fetch(ctx, fetch.Request{TopicID: p.TopicID, Partition: p.Partition, Offset: p.Offset,
			MaxRecords: gf.maxRecords - gf.count, MaxBytes: max(budget, 1), Wait: wait})
		var oor *fetch.OutOfRangeError
		if errors.As(err, &oor) && attempt == 0 {
			if gf.reset == groups.ResetEarliest {
				p.Offset = oor.LogStartOffset
			} else {
				p.Offset = oor.HighWatermark
			}
			continue
		}
		return resp, err
	}
}

// idle waits out a long-poll of a member without partitions.
func (s *Server) idle(ctx context.Context, wait time.Duration) error {
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.stopping:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}
