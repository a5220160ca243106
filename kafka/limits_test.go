package kafka_test

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"silt/internal/agentd"
)

// Past --kafka-max-connections a new connection is closed at once (its
// first request gets no answer), the ones open are served, and a slot
// freed by a close is taken by the next connection.
func TestMaxConnections(t *testing.T) {
	a := setup(t, func(c *agentd.Config) { c.Kafka.MaxConnections = 2 })
	first, second := dialRaw(t, a.KafkaAddr), dialRaw(t, a.KafkaAddr)
	for _, c := range []*rawConn{first, second} {
		c.do(kmsg.NewPtrApiVersionsRequest(), 3) // served, so registered
	}
	waitGauge(t, a, "silt_kafka_connections", 2)

	third := dialRaw(t, a.KafkaAddr)
	req := kmsg.NewPtrApiVersionsRequest()
	req.SetVersion(3)
	if corr, err := third.trySend(req); err == nil {
		resp := req.ResponseKind()
		resp.SetVersion(3)
		if err := third.receive(corr, resp); err == nil {
			t.Fatal("a third connection was served with a limit of two")
		}
	}
	// Those open are still served.
	second.do(kmsg.NewPtrApiVersionsRequest(), 3)

	first.nc.Close()
	waitGauge(t, a, "silt_kafka_connections", 1)
	fourth := dialRaw(t, a.KafkaAddr)
	fourth.do(kmsg.NewPtrApiVersionsRequest(), 3)
}
