package groups

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// LagHistory keeps, in the agent's memory, every group's total lag (the
// sum over the partitions it committed in, as silt_group_lag_records)
// sampled every Config.LagHistoryInterval for Config.LagHistoryWindow:
// the console's lag chart. Every agent samples on its own (one query per
// interval), so any agent behind a load balancer answers with about the
// same history; an agent that started recently has less of it. Memory is
// bounded: at most LagMaxSeries partitions are read per sample, so at
// most that many groups, each with window/interval points.
type LagHistory struct {
	cfg    Config
	reader LagReader
	logger *slog.Logger
	mu     sync.Mutex
	groups map[string]*lagRing
	now    func() time.Time
}

// LagPoint is one sample of a group's total lag.
type LagPoint struct {
	At  time.Time
	Lag int64
}

// lagRing is one group's samples, oldest first.
type lagRing struct {
	points []LagPoint
}

// NewLagHistory returns an empty history; Run samples into it.
func NewLagHistory(cfg Config, reader LagReader, logger *slog.Logger) (*LagHistory, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &LagHistory{cfg: cfg, reader: reader, logger: logger, groups: map[string]*lagRing{}, now: time.Now}, nil
}

// Run samples now and then every interval until ctx ends.
func (h *LagHistory) Run(ctx context.Context) {
	t := time.NewTicker(h.cfg.LagHistoryInterval)
	defer t.Stop()
	for {
		h.Sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sample reads every group's lag once and appends it. A failed read is
// logged and leaves a gap.
func (h *LagHistory) Sample(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.LagQueryTimeout)
	defer cancel()
	lags, _, err := h.reader.GroupLags(ctx, h.cfg.LagMaxSeries)
	if err != nil {
		if ctx.Err() == nil {
			h.logger.Warn("sample consumer group lag", "err", err)
		}
		return
	}
	totals := map[string]int64{}
	for _, l := range lags {
		totals[l.Group] += l.Lag
	}
	now := h.now()
	cut := now.Add(-h.cfg.LagHistoryWindow)
	capacity := int(h.cfg.LagHistoryWindow/h.cfg.LagHistoryInterval) + 1
	h.mu.Lock()
	defer h.mu.Unlock()
	for g, lag := range totals {
		r := h.groups[g]
		if r == nil {
			r = &lagRing{}
			h.groups[g] = r
		}
		if len(r.points) >= capacity {
			copy(r.points, r.points[1:])
			r.points = r.points[:len(r.points)-1]
		}
		r.points = append(r.points, LagPoint{At: now, Lag: lag})
	}
	// Drop samples past the window, and groups left without any.
	for g, r := range h.groups {
		i := 0
		for i < len(r.points) && r.points[i].At.Before(cut) {
			i++
		}
		r.points = r.points[i:]
		if len(r.points) == 0 {
			delete(h.groups, g)
		}
	}
}

// Points returns a group's samples, oldest first (none for a group that
// committed nothing within the window).
func (h *LagHistory) Points(group string) []LagPoint {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.groups[group]
	if r == nil {
		return []LagPoint{}
	}
	return append([]LagPoint(nil), r.points...)
}

// Interval is the sampling interval.
func (h *LagHistory) Interval() time.Duration { return h.cfg.LagHistoryInterval }
