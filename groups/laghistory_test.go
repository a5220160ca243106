package groups

import (
	"context"
	"errors"
	"testing"
	"time"

	"silt/metadata"
)

type fakeLags struct {
	lags []metadata.GroupLag
	err  error
}

func (f *fakeLags) GroupLags(context.Context, int) ([]metadata.GroupLag, bool, error) {
	return f.lags, false, f.err
}

// The history sums each group's partitions per sample, keeps one window
// of samples, skips failed reads, and forgets groups with none left.
func TestLagHistory(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LagHistoryInterval, cfg.LagHistoryWindow = time.Second, 3*time.Second
	reader := &fakeLags{}
	h, err := NewLagHistory(cfg, reader, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_000_000, 0)
	h.now = func() time.Time { return now }
	step := func(lags ...metadata.GroupLag) {
		reader.lags = lags
		h.Sample(context.Background())
		now = now.Add(time.Second)
	}
	step(metadata.GroupLag{Group: "a", Topic: "t", Partition: 0, Lag: 5}, metadata.GroupLag{Group: "a", Topic: "t", Partition: 1, Lag: 7},
		metadata.GroupLag{Group: "b", Topic: "t", Partition: 0, Lag: 1})
	reader.err = errors.New("postgres is down")
	step()
	reader.err = nil
	for i := range 5 {
		step(metadata.GroupLag{Group: "a", Topic: "t", Partition: 0, Lag: int64(i)})
	}
	pts := h.Points("a")
	if len(pts) != 4 || pts[len(pts)-1].Lag != 4 || pts[0].Lag != 1 {
		t.Fatalf("points of a: %+v", pts)
	}
	for i := 1; i < len(pts); i++ {
		if !pts[i].At.After(pts[i-1].At) {
			t.Fatalf("points out of order: %+v", pts)
		}
	}
	if got := h.Points("b"); len(got) != 0 {
		t.Fatalf("b is past the window but has %+v", got)
	}
	if got := h.Points("nope"); got == nil || len(got) != 0 {
		t.Fatalf("an unknown group: %#v", got)
	}
}

func TestLagHistoryConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LagHistoryInterval = 0
	if cfg.Validate() == nil {
		t.Fatal("zero interval accepted")
	}
	cfg = DefaultConfig()
	cfg.LagHistoryInterval, cfg.LagHistoryWindow = time.Millisecond, time.Hour
	if cfg.Validate() == nil {
		t.Fatal("3.6 million samples accepted")
	}
}
