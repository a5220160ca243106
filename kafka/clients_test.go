package kafka_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	kc "silt/internal/kafkaclients"
	"silt/partitioner"
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

		// -L: the one broker and the topic's partitions.
		var md struct {
			Brokers []struct {
				Name string `json:"name"`
			} `json:"brokers"`
			Topics []struct {
				Topic      string `json:"topic"`
				Partitions []struct {
					Leader int32 `json:"leader"`
				} `json:"partitions"`
			} `json:"topics"`
		}
		if err := json.Unmarshal(kc.Run(t, nil, "kcat", "-b", a.KafkaAddr, "-L", "-J", "-t", topic), &md); err != nil {
			t.Fatal(err)
		}
		if len(md.Brokers) != 1 || !strings.HasSuffix(md.Brokers[0].Name, a.KafkaAddr[strings.LastIndex(a.KafkaAddr, ":"):]) ||
			len(md.Topics) != 1 || len(md.Topics[0].Partitions) != parts {
			t.Fatalf("kcat -L: %+v", md)
		}

		// Produce keyed records with headers.
		var in bytes.Buffer
		var keys, values []string
		for i := range 50 {
			k, v := fmt.Sprintf("%s-key-%d", codec, i), fmt.Sprintf(`{"i":%d,"codec":"%s","pad":"%s"}`, i, codec, strings.Repeat("z", i))
			keys, values = append(keys, k), append(values, v)
			fmt.Fprintf(&in, "%s:%s\n", k, v)
		}
		args := []string{"-b", a.KafkaAddr, "-P", "-t", topic, "-K:", "-H", "source=kcat", "-H", "codec=" + codec,
			"-X", "partitioner=murmur2_random", "-X", "linger.ms=20"}
		if codec != "none" {
			args = append(args, "-z", codec)
		}
		kc.Run(t, in.Bytes(), "kcat", args...)

		// Consume from the beginning to the end.
		msgs := kc.KcatConsume(t, kc.Plain(a.KafkaAddr), topic)
		if len(msgs) != len(keys) {
			t.Fatalf("%s: kcat consumed %d of %d", codec, len(msgs), len(keys))
		}
		http := kc.OverHTTP(t, a.URL, topic, parts, len(keys))
		seen := map[string]bool{}
		for _, m := range msgs {
			if m.Key == nil || m.Payload == nil {
				t.Fatalf("%s: message %+v", codec, m)
			}
			i := slices.Index(keys, *m.Key)
			if i < 0 || values[i] != *m.Payload || seen[*m.Key] {
				t.Fatalf("%s: unexpected message %q=%q", codec, *m.Key, *m.Payload)
			}
			seen[*m.Key] = true
			if !slices.Equal(m.Headers, []string{"source", "kcat", "codec", codec}) {
				t.Fatalf("%s: headers %q", codec, m.Headers)
			}
			if want := partitioner.ForKey([]byte(*m.Key), parts); m.Partition != want {
				t.Fatalf("%s: key %q in partition %d; HTTP puts it in %d", codec, *m.Key, m.Partition, want)
			}
			h := http[[2]int64{int64(m.Partition), m.Offset}]
			if string(kc.Bytes(t, h.Key)) != *m.Key || string(kc.Bytes(t, h.Value)) != *m.Payload || h.Ts != m.Ts || len(h.Headers) != 2 ||
				*h.Headers[1][0] != "codec" || string(kc.Bytes(t, h.Headers[1][1])) != codec {
				t.Fatalf("%s: HTTP reads %+v where kcat read %+v", codec, h, m)
			}
		}
	}
}
