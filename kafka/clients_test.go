package kafka_test

import (
	"testing"

	kc "silt/internal/kafkaclients"
)

// The real-client tests run Debian's clients, which `make test` installs
// (make kafka-clients): kcat, and confluent-kafka and kafka-python.

func TestConfluentKafkaPython(t *testing.T) {
	a := setup(t, nil)
	adm := newAdmin(t, a)
	for _, tc := range []struct {
		codec      string
		idempotent bool
	}{{"none", false}, {"gzip", true}, {"snappy", false}, {"lz4", true}, {"zstd", true}} {
		topic := topicName(t)
		const parts = 3
		createTopic(t, adm, topic, parts, nil)
		sent := kc.Records(60, tc.codec, true)
		acked := kc.ConfluentProduce(t, kc.Plain(a.KafkaAddr), topic, tc.codec, tc.idempotent, sent)
		consumed := kc.ConfluentConsume(t, kc.Plain(a.KafkaAddr), topic, parts, len(sent))
		kc.CheckRoundTrip(t, a.URL, topic, parts, sent, acked, consumed)
	}
}

func TestKafkaPython(t *testing.T) {
	a := setup(t, nil)
	adm := newAdmin(t, a)
	for _, codec := range []string{"none", "gzip"} {
		topic := topicName(t)
		const parts = 2
		createTopic(t, adm, topic, parts, nil)
		sent := kc.Records(40, codec, true)
		acked := kc.KafkaPythonProduce(t, kc.Plain(a.KafkaAddr), topic, codec, sent)
		consumed := kc.KafkaPythonConsume(t, kc.Plain(a.KafkaAddr), topic, parts, len(sent))
		kc.CheckRoundTrip(t, a.URL, topic, parts, sent, acked, consumed)
	}
}

func TestKcat(t *testing.T) {
	a := setup(t, nil)
	adm := newAdmin(t, a)
	const parts = 4
	for _, codec := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
		topic := topicName(t)
		createTopic(t, adm, topic, parts, nil)
		kc.KcatRoundTrip(t, kc.Plain(a.KafkaAddr), a.URL, topic, parts, codec)
	}
}
