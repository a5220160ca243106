package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"silt/auth"
	"silt/metadata"
	"silt/problem"
)

// TopicStore is what the agent needs of the metadata store for topics.
type TopicStore interface {
	CreateTopic(ctx context.Context, name string, partitions int32, cfg metadata.TopicConfig) (metadata.Topic, error)
	GetTopic(ctx context.Context, name string) (metadata.Topic, error)
	ListTopics(ctx context.Context, after string, limit int) ([]metadata.Topic, error)
	Partitions(ctx context.Context, topicID int64, from int32, limit int) ([]metadata.PartitionInfo, error)
	AlterTopic(ctx context.Context, name string, u metadata.TopicUpdate) (metadata.Topic, error)
	DeleteTopic(ctx context.Context, name string) error
	NewProducerID(ctx context.Context) (int64, error)
}

// maxJSONBody bounds small JSON request bodies (topics, groups, offsets).
const maxJSONBody = 1 << 20

var topicNameRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// ValidTopicName applies Kafka's rules.
func ValidTopicName(name string) error {
	if name == "." || name == ".." {
		return fmt.Errorf("topic name %q is not allowed", name)
	}
	if !topicNameRE.MatchString(name) {
		return fmt.Errorf("topic name %q must be 1 to 249 characters of [a-zA-Z0-9._-]", name)
	}
	return nil
}

// TopicJSON is a topic in responses.
type TopicJSON struct {
	Name       string               `json:"name"`
	ID         int64                `json:"id"`
	Partitions int32                `json:"partitions"`
	Config     metadata.TopicConfig `json:"config"`
	CreatedAt  time.Time            `json:"created_at"`
	UpdatedAt  time.Time            `json:"updated_at"`
	// States is present in describe responses: a page of the
	// partitions (limit and cursor), continued at NextCursor.
	States     []PartitionJSON `json:"partition_states,omitempty"`
	NextCursor string          `json:"next_cursor,omitempty"`
}

// PartitionJSON is one partition's state.
type PartitionJSON struct {
	Partition      int32  `json:"partition"`
	LogStartOffset int64  `json:"log_start_offset"`
	HighWatermark  int64  `json:"high_watermark"`
	Bytes          int64  `json:"bytes"`
	Owner          string `json:"owner"`
	LeaseEpoch     int64  `json:"lease_epoch"`
}

func topicJSON(t metadata.Topic) TopicJSON {
	return TopicJSON{Name: t.Name, ID: t.ID, Partitions: t.Partitions, Config: t.Config, CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt}
}

// CreateTopicRequest is the body of POST /v1/topics.
type CreateTopicRequest struct {
	Name       string          `json:"name"`
	Partitions *int32          `json:"partitions"`
	Config     json.RawMessage `json:"config"`
}

// AlterTopicRequest is the body of PATCH /v1/topics/{topic}.
type AlterTopicRequest struct {
	Partitions *int32          `json:"partitions"`
	Config     json.RawMessage `json:"config"`
}

func (s *Server) topicRoutes(g *echo.Group) {
	g.POST("/topics", s.createTopic)
	g.GET("/topics", s.listTopics)
	g.GET("/topics/:topic", s.describeTopic)
	g.PATCH("/topics/:topic", s.alterTopic)
	g.DELETE("/topics/:topic", s.deleteTopic)
	g.POST("/producers", s.newProducer)
}

// decodeJSON reads a small JSON body strictly into v.
func decodeJSON(c echo.Context, v any) error {
	if err := requireJSON(c); err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), c.Request().Body, maxJSONBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return newProblem(http.StatusRequestEntityTooLarge, problem.CodeRequestTooLarge, "body exceeds %d bytes", maxJSONBody)
		}
		return readError(err)
	}
	return strictUnmarshal(body, v)
}

// requireJSON accepts an application/json body, or none.
func requireJSON(c echo.Context) error {
	ct, err := bodyMediaType(c.Request())
	if err != nil {
		return err
	}
	if ct != "" && ct != MediaJSON {
		return newProblem(http.StatusUnsupportedMediaType, problem.CodeUnsupportedMediaType, "content type %q is not supported; send application/json", ct)
	}
	return nil
}

func (s *Server) createTopic(c echo.Context) error {
	var req CreateTopicRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if err := ValidTopicName(req.Name); err != nil {
		return badRequest(problem.CodeInvalidTopicName, "%v", err)
	}
	parts := int32(1)
	if req.Partitions != nil {
		parts = *req.Partitions
	}
	if parts < 1 || parts > s.cfg.MaxPartitions {
		return badRequest(problem.CodeInvalidPartitions, "partitions must be between 1 and %d", s.cfg.MaxPartitions)
	}
	cfg := metadata.DefaultTopicConfig()
	if err := mergeConfig(&cfg, req.Config); err != nil {
		return err
	}
	t, err := s.deps.Topics.CreateTopic(c.Request().Context(), req.Name, parts, cfg)
	if err != nil {
		return err
	}
	s.topics.Forget(req.Name)
	return c.JSON(http.StatusCreated, topicJSON(t))
}

// mergeConfig applies the keys present in raw onto cfg and validates it.
func mergeConfig(cfg *metadata.TopicConfig, raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if err := strictUnmarshalAt(raw, cfg, "config"); err != nil {
		var p *problem.Details
		if errors.As(err, &p) {
			p.Code = problem.CodeInvalidConfig
			if !strings.HasPrefix(p.Detail, "config") {
				p.Detail = "config: " + p.Detail
			}
		}
		return err
	}
	if err := cfg.Validate(); err != nil {
		return badRequest(problem.CodeInvalidConfig, "%s", userDetail(err))
	}
	return nil
}

func (s *Server) listTopics(c echo.Context) error {
	pg, err := pageParams(c)
	if err != nil {
		return err
	}
	topics, err := s.deps.Topics.ListTopics(c.Request().Context(), pg.cursor, pg.limit)
	if err != nil {
		return err
	}
	out := struct {
		Topics     []TopicJSON `json:"topics"`
		NextCursor string      `json:"next_cursor,omitempty"`
	}{Topics: make([]TopicJSON, 0, len(topics))}
	for _, t := range topics {
		if !visible(c, auth.ResourceTopic, t.Name) {
			continue
		}
		out.Topics = append(out.Topics, topicJSON(t))
	}
	if len(topics) == pg.limit {
		out.NextCursor = nextCursor(topics[len(topics)-1].Name)
	}
	return c.JSON(http.StatusOK, out)
}

// pinnedTopic resolves topic name for a request that may pin its id
// (topic_id, as Kafka's topic ids): a topic deleted and created again
// under the same name starts its offsets from 0, and a reader or writer
// holding the old id must not carry on in the new log. A mismatch is
// checked against Postgres, not only the cache, before it is refused.
func (s *Server) pinnedTopic(ctx context.Context, name string, pin int64) (metadata.Topic, error) {
	t, err := s.topics.Get(ctx, name)
	if err != nil || pin == 0 || t.ID == pin {
		return t, err
	}
	s.topics.Forget(name)
	if t, err = s.topics.Get(ctx, name); err != nil || t.ID == pin {
		return t, err
	}
	return metadata.Topic{}, topicIDMismatch(name, pin, t.ID)
}

// topicIDMismatch is the 409 of a request pinning topic id pin when the
// topic of that name has id current.
func topicIDMismatch(name string, pin, current int64) *problem.Details {
	p := newProblem(http.StatusConflict, problem.CodeTopicIDMismatch,
		"topic %q has id %d, not %d: the topic was deleted and created again, and its offsets started over from 0", name, current, pin)
	p.TopicID = &current
	return p
}

// topicIDParam reads the optional topic_id query parameter (0: none).
func topicIDParam(c echo.Context) (int64, error) {
	return intParam(c, "topic_id", 0, 1, math.MaxInt64)
}

// gone turns the error of a read or write on topic t, resolved a moment
// before, into what happened when its partitions are gone: the topic was
// deleted meanwhile (or this agent had it cached). It is topic_not_found,
// or, when a topic of that name exists again, topic_id_mismatch with the
// new id: retriable when the request pinned no id, since it addressed the
// topic by name. Other errors pass.
func (s *Server) gone(ctx context.Context, t metadata.Topic, pin int64, err error) error {
	if !errors.Is(err, metadata.ErrPartitionNotFound) {
		return err
	}
	s.topics.Forget(t.Name)
	now, gerr := s.topics.Get(ctx, t.Name)
	switch {
	case errors.Is(gerr, metadata.ErrTopicNotFound):
		return notFound(problem.CodeTopicNotFound, "topic %q does not exist: it was deleted", t.Name)
	case gerr != nil:
		return gerr
	case now.ID == t.ID:
		return err // not a deletion after all
	}
	p := topicIDMismatch(t.Name, t.ID, now.ID)
	if pin == 0 {
		p.Detail = fmt.Sprintf("topic %q was deleted and created again (its id is now %d) while the request ran; retry", t.Name, now.ID)
		p.Retriable = true
	}
	return p
}

// topicParam validates the :topic path parameter.
func topicParam(c echo.Context) (string, error) {
	name, err := pathParam(c, "topic")
	if err != nil {
		return "", err
	}
	if err := ValidTopicName(name); err != nil {
		return "", badRequest(problem.CodeInvalidTopicName, "%v", err)
	}
	return name, nil
}

func (s *Server) describeTopic(c echo.Context) error {
	name, err := topicParam(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	t, err := s.deps.Topics.GetTopic(ctx, name)
	if err != nil {
		return err
	}
	pg, err := pageParams(c)
	if err != nil {
		return err
	}
	from := int64(0)
	if pg.cursor != "" {
		if from, err = strconv.ParseInt(pg.cursor, 10, 32); err != nil || from < 0 {
			return badRequest(problem.CodeInvalidParameter, "cursor is not a cursor this API gave out")
		}
	}
	parts, err := s.deps.Topics.Partitions(ctx, t.ID, int32(from), pg.limit)
	if err != nil {
		return err
	}
	out := topicJSON(t)
	if len(parts) == pg.limit {
		out.NextCursor = nextCursor(strconv.Itoa(int(parts[len(parts)-1].Partition) + 1))
	}
	out.States = make([]PartitionJSON, len(parts))
	for i, p := range parts {
		out.States[i] = PartitionJSON{Partition: p.Partition, LogStartOffset: p.LogStartOffset, HighWatermark: p.HighWatermark,
			Bytes: p.TotalBytes, Owner: p.Owner, LeaseEpoch: p.LeaseEpoch}
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) alterTopic(c echo.Context) error {
	name, err := topicParam(c)
	if err != nil {
		return err
	}
	var req AlterTopicRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	ctx := c.Request().Context()
	var u metadata.TopicUpdate
	if req.Partitions != nil {
		if *req.Partitions < 1 || *req.Partitions > s.cfg.MaxPartitions {
			return badRequest(problem.CodeInvalidPartitions, "partitions must be between 1 and %d", s.cfg.MaxPartitions)
		}
		u.Partitions = req.Partitions
	}
	if len(req.Config) > 0 {
		// Validate the patch's shape now; it is applied to the current
		// config inside the update's transaction.
		probe := metadata.DefaultTopicConfig()
		if err := mergeConfig(&probe, req.Config); err != nil {
			return err
		}
		u.ConfigPatch = func(cfg *metadata.TopicConfig) error { return mergeConfig(cfg, req.Config) }
	}
	t, err := s.deps.Topics.AlterTopic(ctx, name, u)
	if err != nil {
		return err
	}
	s.topics.Forget(name)
	return c.JSON(http.StatusOK, topicJSON(t))
}

func (s *Server) deleteTopic(c echo.Context) error {
	name, err := topicParam(c)
	if err != nil {
		return err
	}
	if err := s.deps.Topics.DeleteTopic(c.Request().Context(), name); err != nil {
		return err
	}
	s.topics.Forget(name)
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) newProducer(c echo.Context) error {
	id, err := s.deps.Topics.NewProducerID(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, map[string]int64{"producer_id": id})
}
