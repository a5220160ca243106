package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
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
	ListTopics(ctx context.Context) ([]metadata.Topic, error)
	Partitions(ctx context.Context, topicID int64) ([]metadata.PartitionInfo, error)
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
	// States is present in describe responses.
	States []PartitionJSON `json:"partition_states,omitempty"`
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
		return badRequest(problem.CodeBadRequest, "read body: %v", err)
	}
	return strictUnmarshal(body, v)
}

// strictUnmarshal decodes exactly one JSON value, rejecting unknown fields.
func strictUnmarshal(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest(problem.CodeInvalidJSON, "malformed JSON: %v", err)
	}
	if dec.More() {
		return badRequest(problem.CodeInvalidJSON, "malformed JSON: trailing data after the object")
	}
	return nil
}

// requireJSON accepts application/json (with parameters) or no body type.
func requireJSON(c echo.Context) error {
	ct := mediaType(c.Request().Header.Get(echo.HeaderContentType))
	if ct != "" && ct != "application/json" {
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
	s.topics.forget(req.Name)
	return c.JSON(http.StatusCreated, topicJSON(t))
}

// mergeConfig applies the keys present in raw onto cfg and validates it.
func mergeConfig(cfg *metadata.TopicConfig, raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if err := strictUnmarshal(raw, cfg); err != nil {
		var p *problem.Details
		if errors.As(err, &p) {
			p.Code = problem.CodeInvalidConfig
			p.Detail = "config: " + p.Detail
		}
		return err
	}
	if err := cfg.Validate(); err != nil {
		return badRequest(problem.CodeInvalidConfig, "%v", err)
	}
	return nil
}

func (s *Server) listTopics(c echo.Context) error {
	topics, err := s.deps.Topics.ListTopics(c.Request().Context())
	if err != nil {
		return err
	}
	out := struct {
		Topics []TopicJSON `json:"topics"`
	}{Topics: make([]TopicJSON, 0, len(topics))}
	for _, t := range topics {
		if !visible(c, auth.ResourceTopic, t.Name) {
			continue
		}
		out.Topics = append(out.Topics, topicJSON(t))
	}
	return c.JSON(http.StatusOK, out)
}

// topicParam validates the :topic path parameter.
func topicParam(c echo.Context) (string, error) {
	name := c.Param("topic")
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
	parts, err := s.deps.Topics.Partitions(ctx, t.ID)
	if err != nil {
		return err
	}
	out := topicJSON(t)
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
	s.topics.forget(name)
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
	s.topics.forget(name)
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) newProducer(c echo.Context) error {
	id, err := s.deps.Topics.NewProducerID(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, map[string]int64{"producer_id": id})
}
