package kafkaclients

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"silt/client"
	"silt/partitioner"
)

// KcatRoundTrip checks kcat against the broker b with one codec ("none",
// "gzip", "snappy", "lz4" or "zstd") on topic, which has parts
// partitions and is empty: -L shows one broker (b's port) leading every
// partition; 50 keyed records with two headers go in with -P (murmur2, as
// the HTTP partitioner); -C -o beginning -e reads them all back; and the
// HTTP API at url (opts: an API key, say) reads the same keys, values,
// headers and timestamps at the same partitions and offsets.
func KcatRoundTrip(t testing.TB, b Broker, url, topic string, parts int32, codec string, opts ...client.Option) {
	t.Helper()
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
	if err := json.Unmarshal(Run(t, nil, "kcat", append(b.KcatArgs(), "-L", "-J", "-t", topic)...), &md); err != nil {
		t.Fatal(err)
	}
	if len(md.Brokers) != 1 || !strings.HasSuffix(md.Brokers[0].Name, b.Addr[strings.LastIndex(b.Addr, ":"):]) ||
		len(md.Topics) != 1 || len(md.Topics[0].Partitions) != int(parts) {
		t.Fatalf("kcat -L: %+v", md)
	}

	var in bytes.Buffer
	var keys, values []string
	for i := range 50 {
		k, v := fmt.Sprintf("%s-key-%d", codec, i), fmt.Sprintf(`{"i":%d,"codec":"%s","pad":"%s"}`, i, codec, strings.Repeat("z", i))
		keys, values = append(keys, k), append(values, v)
		fmt.Fprintf(&in, "%s:%s\n", k, v)
	}
	args := append(b.KcatArgs(), "-P", "-t", topic, "-K:", "-H", "source=kcat", "-H", "codec="+codec,
		"-X", "partitioner=murmur2_random", "-X", "linger.ms=20")
	if codec != "none" {
		args = append(args, "-z", codec)
	}
	Run(t, in.Bytes(), "kcat", args...)

	msgs := KcatConsume(t, b, topic)
	if len(msgs) != len(keys) {
		t.Fatalf("%s: kcat consumed %d of %d", codec, len(msgs), len(keys))
	}
	http := OverHTTP(t, url, topic, parts, len(keys), opts...)
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
		if string(Bytes(t, h.Key)) != *m.Key || string(Bytes(t, h.Value)) != *m.Payload || h.Ts != m.Ts || len(h.Headers) != 2 ||
			*h.Headers[1][0] != "codec" || string(Bytes(t, h.Headers[1][1])) != codec {
			t.Fatalf("%s: HTTP reads %+v where kcat read %+v", codec, h, m)
		}
	}
}
