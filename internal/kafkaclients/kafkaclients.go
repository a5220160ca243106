// Package kafkaclients runs real Kafka clients against Silt in tests:
// Debian's kcat, and confluent-kafka (librdkafka) and kafka-python under
// Debian's own Python. `make test` installs them (make kafka-clients).
// Records go to and from the Python clients as JSON lines (see Record);
// CheckRoundTrip compares what a client sent, had acknowledged and
// consumed with what the HTTP API reads.
package kafkaclients

import (
	"bytes"
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"silt/auth"
	"silt/client"
	"silt/partitioner"
)

// Python is Debian's Python, into which Debian's python3-* packages
// install: another python3 may come first on PATH.
const Python = "/usr/bin/python3"

//go:embed scripts/*.py
var scripts embed.FS

// Record is a record as the client scripts read and write it.
type Record struct {
	Partition int32        `json:"partition"`
	Offset    int64        `json:"offset"`
	Key       *string      `json:"key"`   // base64; nil is null
	Value     *string      `json:"value"` // base64; nil is null
	Headers   [][2]*string `json:"headers"`
	Ts        int64        `json:"ts"`
}

// B64 encodes b for a Record; nil stays null.
func B64(b []byte) *string {
	if b == nil {
		return nil
	}
	s := base64.StdEncoding.EncodeToString(b)
	return &s
}

// Bytes decodes a Record field.
func Bytes(t testing.TB, s *string) []byte {
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

func strPtr(s string) *string { return &s }

// Broker is where a client connects and how it authenticates.
type Broker struct {
	Addr string
	// User and Password, when set, authenticate with SASL: Mechanism
	// (PLAIN when empty, SCRAM-SHA-256, SCRAM-SHA-512).
	User, Password string
	Mechanism      string
	// CAFile, when set, connects over TLS, trusting that CA.
	CAFile string
}

// Plain is a broker reached without authentication or TLS.
func Plain(addr string) Broker { return Broker{Addr: addr} }

// WithKey authenticates with an API key: SASL PLAIN, user name the key's
// id, password the key.
func (b Broker) WithKey(key string) Broker {
	b.User, _ = auth.ParseToken(key)
	b.Password = key
	return b
}

// env is the scripts' view of the broker's security.
func (b Broker) env() []string {
	var out []string
	if b.User != "" {
		out = append(out, "SILT_KAFKA_USER="+b.User, "SILT_KAFKA_PASSWORD="+b.Password, "SILT_KAFKA_MECHANISM="+b.mechanism())
	}
	if b.CAFile != "" {
		out = append(out, "SILT_KAFKA_CA="+b.CAFile)
	}
	return out
}

func (b Broker) mechanism() string {
	if b.Mechanism == "" {
		return "PLAIN"
	}
	return b.Mechanism
}

// KcatArgs are kcat's (librdkafka's) settings for the broker.
func (b Broker) KcatArgs() []string {
	args := []string{"-b", b.Addr}
	switch {
	case b.User != "" && b.CAFile != "":
		args = append(args, "-X", "security.protocol=SASL_SSL")
	case b.User != "":
		args = append(args, "-X", "security.protocol=SASL_PLAINTEXT")
	case b.CAFile != "":
		args = append(args, "-X", "security.protocol=SSL")
	}
	if b.User != "" {
		args = append(args, "-X", "sasl.mechanisms="+b.mechanism(), "-X", "sasl.username="+b.User, "-X", "sasl.password="+b.Password)
	}
	if b.CAFile != "" {
		args = append(args, "-X", "ssl.ca.location="+b.CAFile)
	}
	return args
}

// Records makes n records with null and empty values, headers with empty
// values and set timestamps; keyed gives each a distinct key. Null header
// values are left out: kafka-python cannot send them, and
// confluent-kafka 1.7.0 (Debian 12's) crashes at exit after receiving
// one (a reference count bug of its own).
func Records(n int, prefix string, keyed bool) []Record {
	base := int64(1_700_000_000_000)
	out := make([]Record, n)
	for i := range out {
		r := Record{Ts: base + int64(i)*7}
		if keyed {
			r.Key = B64([]byte(fmt.Sprintf("%s-%d", prefix, i)))
		}
		r.Value = B64([]byte(fmt.Sprintf(`{"n":%d,"text":"%s"}`, i, strings.Repeat("x", i%50))))
		switch i % 4 {
		case 1:
			r.Value = nil
		case 2:
			r.Value = B64([]byte{})
			r.Headers = [][2]*string{{strPtr("h"), B64([]byte("v"))}, {strPtr("empty"), B64([]byte{})}, {strPtr("h"), B64([]byte("again"))}}
		case 3:
			r.Headers = [][2]*string{{strPtr("bin"), B64([]byte{0, 1, 2, 255})}}
		}
		out[i] = r
	}
	return out
}

// Run runs a program, bounded in time, and returns its standard output;
// a failure fails the test with the end of its standard error.
func Run(t testing.TB, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	out, err := TryRun(t, stdin, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TryRun is Run returning the failure.
func TryRun(t testing.TB, stdin []byte, name string, args ...string) ([]byte, error) {
	t.Helper()
	return tryRun(t, nil, stdin, name, args...)
}

func tryRun(t testing.TB, env []string, stdin []byte, name string, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = t.TempDir()
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %v\nstderr:\n%s", name, strings.Join(args, " "), err, lastLines(stderr.String(), 40))
	}
	return stdout.Bytes(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// JSONLines decodes one value per line.
func JSONLines[T any](t testing.TB, out []byte) []T {
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

func encodeLines(t testing.TB, recs []Record) []byte {
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

// script writes an embedded client script into a fresh directory.
func script(t testing.TB, name string) string {
	t.Helper()
	b, err := scripts.ReadFile("scripts/" + name)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func python(t testing.TB, b Broker, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	// -I: isolated from Python's environment variables and the working
	// directory.
	out, err := tryRun(t, b.env(), stdin, Python, append([]string{"-I", script(t, name)}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ConfluentProduce produces recs with confluent-kafka, with codec
// ("none", "gzip", "snappy", "lz4", "zstd") and idempotence as asked and
// librdkafka's murmur2_random partitioner (the Java client's), and returns
// where each was acknowledged, in input order.
func ConfluentProduce(t testing.TB, b Broker, topic, codec string, idempotent bool, recs []Record) []Record {
	t.Helper()
	return JSONLines[Record](t, python(t, b, encodeLines(t, recs), "confluent_client.py", "produce", b.Addr, topic, codec, fmt.Sprint(idempotent)))
}

// ConfluentConsume reads n records of partitions 0..partitions-1 from the
// beginning with confluent-kafka.
func ConfluentConsume(t testing.TB, b Broker, topic string, partitions int32, n int) []Record {
	t.Helper()
	return JSONLines[Record](t, python(t, b, nil, "confluent_client.py", "consume", b.Addr, topic, fmt.Sprint(partitions), fmt.Sprint(n)))
}

// ConfluentGroupConsume reads n records as a member of group with
// confluent-kafka, auto-commit off, committing synchronously after each
// batch it printed, then leaves the group; it starts from the group's
// committed offsets (from the beginning where there are none).
func ConfluentGroupConsume(t testing.TB, b Broker, topic, group string, n int) []Record {
	t.Helper()
	return JSONLines[Record](t, python(t, b, nil, "confluent_client.py", "group", b.Addr, topic, group, fmt.Sprint(n)))
}

// KafkaPythonProduce produces recs with kafka-python ("none" or "gzip").
func KafkaPythonProduce(t testing.TB, b Broker, topic, codec string, recs []Record) []Record {
	t.Helper()
	return JSONLines[Record](t, python(t, b, encodeLines(t, recs), "kafkapython_client.py", "produce", b.Addr, topic, codec))
}

// KafkaPythonConsume reads n records from the beginning with kafka-python.
func KafkaPythonConsume(t testing.TB, b Broker, topic string, partitions int32, n int) []Record {
	t.Helper()
	return JSONLines[Record](t, python(t, b, nil, "kafkapython_client.py", "consume", b.Addr, topic, fmt.Sprint(partitions), fmt.Sprint(n)))
}

// KcatMessage is one message of `kcat -C -J`.
type KcatMessage struct {
	Partition int32    `json:"partition"`
	Offset    int64    `json:"offset"`
	Ts        int64    `json:"ts"`
	Headers   []string `json:"headers"` // name, value, name, value...
	Key       *string  `json:"key"`
	Payload   *string  `json:"payload"`
}

// KcatConsume reads a topic from the beginning to its end with kcat.
func KcatConsume(t testing.TB, b Broker, topic string) []KcatMessage {
	t.Helper()
	return JSONLines[KcatMessage](t, Run(t, nil, "kcat", append(b.KcatArgs(), "-C", "-t", topic, "-o", "beginning", "-e", "-J")...))
}

// Same compares key, value, headers and timestamp, null and empty apart;
// it returns "" or the first difference.
func Same(t testing.TB, want, got Record) string {
	t.Helper()
	eq := func(a, b *string) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
	switch {
	case !eq(want.Key, got.Key):
		return fmt.Sprintf("key %q, got %q", Bytes(t, want.Key), Bytes(t, got.Key))
	case !eq(want.Value, got.Value):
		return fmt.Sprintf("value %q (null %v), got %q (null %v)", Bytes(t, want.Value), want.Value == nil, Bytes(t, got.Value), got.Value == nil)
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

// OverHTTP reads every record of a topic over the HTTP API at url, by
// partition and offset; it fails the test unless there are want of them.
// opts (an API key, say) configure the HTTP client.
func OverHTTP(t testing.TB, url, topic string, partitions int32, want int, opts ...client.Option) map[[2]int64]Record {
	t.Helper()
	hc, err := client.New(url, append([]client.Option{client.WithRetry(client.DefaultRetryPolicy())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := map[[2]int64]Record{}
	for p := range partitions {
		off := int64(0)
		for {
			res, err := hc.Fetch(ctx, topic, p, off, client.FetchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res.Records {
				j := Record{Partition: p, Offset: r.Offset, Key: B64(r.Key), Value: B64(r.Value), Ts: r.Timestamp.UnixMilli()}
				for _, h := range r.Headers {
					j.Headers = append(j.Headers, [2]*string{strPtr(h.Key), B64(h.Value)})
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

// CheckRoundTrip checks what a client had acknowledged and consumed
// against what it sent and against the HTTP API at url, and that every
// non-empty key landed where the HTTP API's partitioner puts it.
func CheckRoundTrip(t testing.TB, url, topic string, partitions int32, sent, acked, consumed []Record, opts ...client.Option) {
	t.Helper()
	if len(acked) != len(sent) || len(consumed) != len(sent) {
		t.Fatalf("sent %d, acknowledged %d, consumed %d", len(sent), len(acked), len(consumed))
	}
	byPos := map[[2]int64]Record{}
	for _, c := range consumed {
		byPos[[2]int64{int64(c.Partition), c.Offset}] = c
	}
	http := OverHTTP(t, url, topic, partitions, len(sent), opts...)
	for i, s := range sent {
		pos := [2]int64{int64(acked[i].Partition), acked[i].Offset}
		c, ok := byPos[pos]
		if !ok {
			t.Fatalf("record %d acknowledged at %v was not consumed there", i, pos)
		}
		if d := Same(t, s, c); d != "" {
			t.Fatalf("record %d consumed: %s", i, d)
		}
		if d := Same(t, s, http[pos]); d != "" {
			t.Fatalf("record %d over HTTP: %s", i, d)
		}
		if k := Bytes(t, s.Key); len(k) > 0 {
			if want := partitioner.ForKey(k, partitions); acked[i].Partition != want {
				t.Fatalf("record %d key %q in partition %d; HTTP puts it in %d", i, k, acked[i].Partition, want)
			}
		}
	}
}
