package chaos

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"silt/client"
)

// prober decides that the agents recovered: every agent answers /readyz
// and acknowledges a write of its own.
type prober struct {
	env   *Env
	topic string
	hc    *http.Client
}

func newProber(env *Env, topic string) *prober {
	return &prober{env: env, topic: topic, hc: httpClient(5 * time.Second)}
}

// recovered waits until every agent passes check in one round, or ctx
// ends (then it says which agent failed how).
func (p *prober) recovered(ctx context.Context) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		var errs []error
		for i, id := range p.env.AgentIDs() {
			if err := p.check(ctx, id, int32(i)); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", id, err))
				break // the next round starts over
			}
		}
		if len(errs) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(errs...)
		case <-tick.C:
		}
	}
}

func (p *prober) check(ctx context.Context, id string, part int32) error {
	if p.env.AgentPID(id) == 0 {
		return errors.New("not running")
	}
	u := p.env.AgentURL(id)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, u+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return fmt.Errorf("readyz: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("readyz: %d", resp.StatusCode)
	}
	cl, err := client.New(u, client.WithToken(p.env.AdminKey()), client.WithHTTPClient(p.hc))
	if err != nil {
		return err
	}
	if _, err := cl.Produce(cctx, p.topic, []client.Message{{Partition: client.Partition(part), Value: []byte("probe")}}); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	return nil
}
