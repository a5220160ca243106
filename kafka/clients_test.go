package kafka_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"silt/client"
	"silt/internal/agenttest"
	"silt/partitioner"
)

// The real-client tests run Debian's clients, installed by `make test`
// (make kafka-clients): kcat, and confluent-kafka and kafka-python under
// Debian's own Python (/usr/bin/python3, whatever python3 comes first on
// PATH).

const debianPython = "/usr/bin/python3"

// jrec is a record as the client scripts read and write it.
type jrec struct {
	Partition int32        `json:"partition"`
	Offset    int64        `json:"offset"`
	Key       *string      `json:"key"`   // base64; nil is null
	Value     *string      `json:"value"` // base64; nil is null
	Headers   [][2]*string `json:"headers"`
	Ts        int64        `json:"ts"`
}

func b64(b []byte) *string {
	if b == nil {
		return nil
	}
	s := base64.StdEncoding.EncodeToString(b)
	return &s
}

func unb64(t *testing.T, s *string) []byte {
	t.Helper()
	if s == nil {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(*s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// clientRecords are records with null and empty values, headers with
// empty values, and set timestamps. Null header values are left to the Go
// tests: kafka-python cannot send them, and confluent-kafka 1.7.0 (Debian
// 12's) crashes at exit after receiving one (a reference count bug of
// its own).
func clientRecords(n int, prefix string, keyed bool) []jrec {
	base := int64(1_700_000_000_000)
	out := make([]jrec, n)
	for i := range out {
		r := jrec{Ts: base + int64(i)*7}
		r.Key = b64([]byte(fmt.Sprintf("%s-%d", prefix, i)))
		r.Value = b64([]byte(fmt.Sprintf(`{"n":%d,"text":"%s"}`, i, strings.Repeat("x", i%50))))
		if !keyed {
			r.Key = nil
		}
		switch i % 4 {
		case 1:
			r.Value = nil
		case 2:
			r.Value = b64([]byte{})
			r.Headers = [][2]*string{{strPtr("h"), b64([]byte("v"))}, {strPtr("empty"), b64([]byte{})}, {strPtr("h"), b64([]byte("again"))}}
		case 3:
			r.Headers = [][2]*string{{strPtr("bin"), b64([]byte{0, 1, 2, 255})}}
		}
		out[i] = r
	}
	return out
}

func strPtr(s string) *string { return &s }

func testdata(name string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "testdata", name)
}

// run runs a client, bounded in time, and returns its standard output.
func run(t *testing.T, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = t.TempDir()
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstderr:\n%s", name, strings.Join(args, " "), err, lastLines(stderr.String(), 40))
	}
	return stdout.Bytes()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func jsonLines[T any](t *testing.T, out []byte) []T {
	t.Helper()
	var recs []T
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var r T
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		recs = append(recs, r)
	}
	return recs
}

func encodeLines(t *testing.T, recs []jrec) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, r := range recs {
		line, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// sameJrec compares key, value, headers and timestamp, null and empty apart.
func sameJrec(t *testing.T, want, got jrec) string {
	t.Helper()
	eq := func(a, b *string) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
	switch {
	case !eq(want.Key, got.Key):
		return fmt.Sprintf("key %q, got %q", unb64(t, want.Key), unb64(t, got.Key))
	case !eq(want.Value, got.Value):
		return fmt.Sprintf("value %q (null %v), got %q (null %v)", unb64(t, want.Value), want.Value == nil, unb64(t, got.Value), got.Value == nil)
	case want.Ts != got.Ts:
		return fmt.Sprintf("timestamp %d, got %d", want.Ts, got.Ts)
	case len(want.Headers) != len(got.Headers):
		return fmt.Sprintf("%d headers, got %d", len(want.Headers), len(got.Headers))
	}
	for i := range want.Headers {
		if !eq(want.Headers[i][0], got.Headers[i][0]) || !eq(want.Headers[i][1], got.Headers[i][1]) {
			return fmt.Sprintf("header %d differs", i)
		}
	}
	return ""
}

// overHTTP reads every record of a topic's partitions over HTTP.
func overHTTP(t *testing.T, a *agenttest.Agent, topic string, partitions int32, want int) map[[2]int64]jrec {
	t.Helper()
	hc, err := client.New(a.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, time.Minute)
	out := map[[2]int64]jrec{}
	for p := range partitions {
		off := int64(0)
		for {
			res, err := hc.Fetch(ctx, topic, p, off, client.FetchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res.Records {
				j := jrec{Partition: p, Offset: r.Offset, Key: b64(r.Key), Value: b64(r.Value), Ts: r.Timestamp.UnixMilli()}
				for _, h := range r.Headers {
					j.Headers = append(j.Headers, [2]*string{strPtr(h.Key), b64(h.Value)})
				}
				out[[2]int64{int64(p), r.Offset}] = j
			}
			if res.NextOffset >= res.HighWatermark {
				break
			}
			off = res.NextOffset
		}
	}
	if len(out) != want {
		t.Fatalf("HTTP reads %d records, want %d", len(out), want)
	}
	return out
}

// checkRoundTrip checks what a client acknowledged and consumed against
// what it sent and against the HTTP API, and that keys landed where the
// HTTP API's partitioner puts them.
func checkRoundTrip(t *testing.T, a *agenttest.Agent, topic string, partitions int32, sent, acked, consumed []jrec) {
	t.Helper()
	if len(acked) != len(sent) || len(consumed) != len(sent) {
		t.Fatalf("sent %d, acknowledged %d, consumed %d", len(sent), len(acked), len(consumed))
	}
	byPos := map[[2]int64]jrec{}
	for _, c := range consumed {
		byPos[[2]int64{int64(c.Partition), c.Offset}] = c
	}
	http := overHTTP(t, a, topic, partitions, len(sent))
	for i, s := range sent {
		pos := [2]int64{int64(acked[i].Partition), acked[i].Offset}
		c, ok := byPos[pos]
		if !ok {
			t.Fatalf("record %d acknowledged at %v was not consumed there", i, pos)
		}
		if d := sameJrec(t, s, c); d != "" {
			t.Fatalf("record %d consumed: %s", i, d)
		}
		if d := sameJrec(t, s, http[pos]); d != "" {
			t.Fatalf("record %d over HTTP: %s", i, d)
		}
		if k := unb64(t, s.Key); len(k) > 0 {
			if want := partitioner.ForKey(k, partitions); acked[i].Partition != want {
				t.Fatalf("record %d key %q in partition %d; HTTP puts it in %d", i, k, acked[i].Partition, want)
			}
		}
	}
}

func TestConfluentKafkaPython(t *testing.T) {
	a := setup(t, nil)
	adm := newAdmin(t, a)
	for _, tc := range []struct{ codec, idempotent string }{
		{"none", "false"}, {"gzip", "true"}, {"snappy", "false"}, {"lz4", "true"}, {"zstd", "true"},
	} {
		topic := topicName(t)
		const parts = 3
		createTopic(t, adm, topic, parts, nil)
		sent := clientRecords(60, tc.codec, true)
		acked := jsonLines[jrec](t, run(t, encodeLines(t, sent), debianPython, "-I", testdata("confluent_client.py"),
			"produce", a.KafkaAddr, topic, tc.codec, tc.idempotent))
		consumed := jsonLines[jrec](t, run(t, nil, debianPython, "-I", testdata("confluent_client.py"),
			"consume", a.KafkaAddr, topic, fmt.Sprint(parts), fmt.Sprint(len(sent))))
		checkRoundTrip(t, a, topic, parts, sent, acked, consumed)
	}
}

func TestKafkaPython(t *testing.T) {
	a := setup(t, nil)
	adm := newAdmin(t, a)
	for _, codec := range []string{"none", "gzip"} {
		topic := topicName(t)
		const parts = 2
		createTopic(t, adm, topic, parts, nil)
		sent := clientRecords(40, codec, true)
		acked := jsonLines[jrec](t, run(t, encodeLines(t, sent), debianPython, "-I", testdata("kafkapython_client.py"),
			"produce", a.KafkaAddr, topic, codec))
		consumed := jsonLines[jrec](t, run(t, nil, debianPython, "-I", testdata("kafkapython_client.py"),
			"consume", a.KafkaAddr, topic, fmt.Sprint(parts), fmt.Sprint(len(sent))))
		checkRoundTrip(t, a, topic, parts, sent, acked, consumed)
	}
}

// kcatMessage is one message of `kcat -C -J`.
type kcatMessage struct {
	Partition int32    `json:"partition"`
	Offset    int64    `json:"offset"`
	Ts        int64    `json:"ts"`
	Headers   []string `json:"headers"` // name, value, name, value...
	Key       *string  `json:"key"`
	Payload   *string  `json:"payload"`
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
		if err := json.Unmarshal(run(t, nil, "kcat", "-b", a.KafkaAddr, "-L", "-J", "-t", topic), &md); err != nil {
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
		run(t, in.Bytes(), "kcat", args...)

		// Consume from the beginning to the end.
		msgs := jsonLines[kcatMessage](t, run(t, nil, "kcat", "-b", a.KafkaAddr, "-C", "-t", topic, "-o", "beginning", "-e", "-J"))
		if len(msgs) != len(keys) {
			t.Fatalf("%s: kcat consumed %d of %d", codec, len(msgs), len(keys))
		}
		http := overHTTP(t, a, topic, parts, len(keys))
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
			if string(unb64(t, h.Key)) != *m.Key || string(unb64(t, h.Value)) != *m.Payload || h.Ts != m.Ts || len(h.Headers) != 2 ||
				*h.Headers[1][0] != "codec" || string(unb64(t, h.Headers[1][1])) != codec {
				t.Fatalf("%s: HTTP reads %+v where kcat read %+v", codec, h, m)
			}
		}
	}
}
