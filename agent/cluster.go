package agent

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"silt/ownership"
)

// Cluster reports live agents and their partitions; ownership.Owner
// implements it.
type Cluster interface {
	Cluster(ctx context.Context, afterTopic string, afterPartition int32, limit int) (ownership.ClusterPage, error)
}

// ClusterJSON is the body of GET /v1/cluster.
type ClusterJSON struct {
	// Agents lists every live agent, each with its share of a page of the
	// owned partitions (limit and cursor), continued at NextCursor.
	Agents     []AgentJSON `json:"agents"`
	NextCursor string      `json:"next_cursor,omitempty"`
	// Auth is the answering agent's mode: required or none.
	Auth string `json:"auth"`
}

// AgentJSON is one live agent.
type AgentJSON struct {
	ID          string           `json:"id"`
	Address     string           `json:"address"`
	Version     string           `json:"version"`
	StartedAt   time.Time        `json:"started_at"`
	HeartbeatAt time.Time        `json:"heartbeat_at"`
	Partitions  []OwnedPartition `json:"partitions"`
}

// OwnedPartition is a partition an agent owns, with its lease epoch.
type OwnedPartition struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Epoch     int64  `json:"epoch"`
}

func (s *Server) cluster(c echo.Context) error {
	pg, err := pageParams(c)
	if err != nil {
		return err
	}
	afterTopic, afterPart, err := parsePartitionCursor(pg.cursor)
	if err != nil {
		return err
	}
	cp, err := s.deps.Cluster.Cluster(c.Request().Context(), afterTopic, afterPart, pg.limit)
	if err != nil {
		return err
	}
	views := cp.Agents
	out := ClusterJSON{Agents: make([]AgentJSON, len(views)), Auth: s.cfg.Auth}
	for i, v := range views {
		a := AgentJSON{ID: v.ID, Address: v.Address, Version: v.Version, StartedAt: v.StartedAt, HeartbeatAt: v.HeartbeatAt,
			Partitions: make([]OwnedPartition, len(v.Partitions))}
		for j, p := range v.Partitions {
			a.Partitions[j] = OwnedPartition{Topic: p.Topic, Partition: p.Partition, Epoch: p.Epoch}
		}
		out.Agents[i] = a
	}
	if cp.Last != nil {
		out.NextCursor = nextCursor(partitionCursor(cp.Last.Topic, cp.Last.Partition))
	}
	return c.JSON(http.StatusOK, out)
}
