package kafka_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"silt/internal/agentd"
	"silt/internal/agenttest"
)

// setup starts an agent with the Kafka listener on.
func setup(t *testing.T, configure func(*agentd.Config)) *agenttest.Agent {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Postgres (make test)")
	}
	return agenttest.Start(t, agenttest.Options{Kafka: true, Configure: configure})
}

// topicName returns a fresh topic name for a test.
func topicName(t *testing.T) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "kt-" + hex.EncodeToString(b[:])
}

// newClient returns a franz-go client of the agent, closed at cleanup.
func newClient(t *testing.T, a *agenttest.Agent, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	base := []kgo.Opt{
		kgo.SeedBrokers(a.KafkaAddr),
		kgo.RetryTimeout(20 * time.Second),
		kgo.MetadataMinAge(100 * time.Millisecond),
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func newAdmin(t *testing.T, a *agenttest.Agent) *kadm.Client {
	t.Helper()
	return kadm.NewClient(newClient(t, a))
}

// createTopic creates a topic over Kafka.
func createTopic(t *testing.T, adm *kadm.Client, name string, partitions int32, configs map[string]*string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := adm.CreateTopics(ctx, partitions, -1, configs, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := res[name].Err; err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// rawConn speaks the protocol by hand (kmsg framing), for requests that
// clients would not send.
type rawConn struct {
	t    *testing.T
	nc   net.Conn
	corr int32
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc}
}

// send writes a request without reading the answer.
func (c *rawConn) send(req kmsg.Request) int32 {
	c.t.Helper()
	corr, err := c.trySend(req)
	if err != nil {
		c.t.Fatal(err)
	}
	return corr
}

// trySend writes req and returns its correlation id, or the write's error.
func (c *rawConn) trySend(req kmsg.Request) (int32, error) {
	c.corr++
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("silt-test"))
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.nc.Write(f.AppendRequest(nil, req, c.corr))
	return c.corr, err
}

// receive reads one answer into resp, checking its correlation id.
func (c *rawConn) receive(corr int32, resp kmsg.Response) error {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	var hdr [8]byte
	if _, err := io.ReadFull(c.nc, hdr[:]); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(hdr[:4])
	if got := int32(binary.BigEndian.Uint32(hdr[4:])); got != corr {
		return fmt.Errorf("correlation id %d, want %d", got, corr)
	}
	body := make([]byte, size-4)
	if _, err := io.ReadFull(c.nc, body); err != nil {
		return err
	}
	if resp.IsFlexible() && resp.Key() != 18 {
		if len(body) == 0 || body[0] != 0 {
			return fmt.Errorf("flexible response header: tags %x", body[:min(1, len(body))])
		}
		body = body[1:]
	}
	return resp.ReadFrom(body)
}

// do sends req at version v and reads its answer.
func (c *rawConn) do(req kmsg.Request, v int16) kmsg.Response {
	c.t.Helper()
	req.SetVersion(v)
	corr := c.send(req)
	resp := req.ResponseKind()
	resp.SetVersion(v)
	if err := c.receive(corr, resp); err != nil {
		c.t.Fatalf("%T v%d: %v", req, v, err)
	}
	return resp
}
