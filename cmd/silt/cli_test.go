package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"silt/client"
)

func TestParseArgsInterleaved(t *testing.T) {
	newFS := func() (*flagSet, *int, *[]string, *bool) {
		fs := newFlagSet("test")
		var n int
		var list []string
		var b bool
		fs.IntVar(&n, "partitions", 1, "")
		fs.ListVar(&list, "config", "")
		fs.BoolVar(&b, "follow", false, "")
		return fs, &n, &list, &b
	}
	for _, tc := range []struct {
		args   []string
		pos    []string
		n      int
		list   []string
		follow bool
	}{
		{[]string{"orders", "--partitions", "3"}, []string{"orders"}, 3, nil, false},
		{[]string{"--partitions=3", "orders"}, []string{"orders"}, 3, nil, false},
		{[]string{"-partitions", "4", "a", "--follow", "b", "--config", "x=1", "--config=y=2"}, []string{"a", "b"}, 4, []string{"x=1", "y=2"}, true},
		{[]string{"a", "--follow=false", "--", "--partitions", "-"}, []string{"a", "--partitions", "-"}, 1, nil, false},
		{[]string{"-", "a"}, []string{"-", "a"}, 1, nil, false},
	} {
		fs, n, list, follow := newFS()
		pos, err := parseArgs(fs, tc.args)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if fmt.Sprint(pos) != fmt.Sprint(tc.pos) || *n != tc.n || fmt.Sprint(*list) != fmt.Sprint(tc.list) || *follow != tc.follow {
			t.Fatalf("%q: pos %q n %d list %q follow %v", tc.args, pos, *n, *list, *follow)
		}
	}
	for _, bad := range [][]string{{"a", "--nope"}, {"a", "--partitions"}, {"--partitions", "x", "a"}} {
		fs, _, _, _ := newFS()
		if _, err := parseArgs(fs, bad); err == nil {
			t.Fatalf("%q: no error", bad)
		}
	}
}

func TestListFlagEnvTwin(t *testing.T) {
	t.Setenv("SILT_CONFIG", "retention.ms=5")
	fs := newFlagSet("test")
	var list []string
	fs.ListVar(&list, "config", "")
	if _, err := parseArgs(fs, nil); err != nil || fmt.Sprint(list) != "[retention.ms=5]" {
		t.Fatalf("env: %q %v", list, err)
	}
	fs = newFlagSet("test")
	list = nil
	fs.ListVar(&list, "config", "")
	if _, err := parseArgs(fs, []string{"--config", "a=1"}); err != nil || fmt.Sprint(list) != "[a=1]" {
		t.Fatalf("the command line must win: %q %v", list, err)
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`:`:          ":",
		`\t`:         "\t",
		`a\nb\r\0`:   "a\nb\r\x00",
		`\\`:         `\`,
		`\x1f|\x7C`:  "\x1f|\x7c",
		`::`:         "::",
		`tab\there`:  "tab\there",
		`"quoted"`:   `"quoted"`,
		`\xffsuffix`: "\xffsuffix",
	} {
		got, err := unescape(in)
		if err != nil || string(got) != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{`\`, `a\q`, `\x1`, `\xzz`} {
		if _, err := unescape(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if _, err := parseSeparator(""); err == nil {
		t.Error("an empty separator was accepted")
	}
}

func TestSplitKey(t *testing.T) {
	for _, tc := range []struct {
		line, sep  string
		key, value string
		nullKey    bool
	}{
		{"k:v", ":", "k", "v", false},
		{"k:v:w", ":", "k", "v:w", false},
		{":v", ":", "", "v", false},
		{"k:", ":", "k", "", false},
		{"novalue", ":", "", "novalue", true},
		{"a::b::c", "::", "a", "b::c", false},
		{"", ":", "", "", true},
	} {
		k, v := splitKey([]byte(tc.line), []byte(tc.sep))
		if string(k) != tc.key || string(v) != tc.value || (k == nil) != tc.nullKey {
			t.Errorf("%q split at %q: key %q (nil %v) value %q", tc.line, tc.sep, k, k == nil, v)
		}
	}
}

func TestParseConfig(t *testing.T) {
	p, err := parseConfig([]string{"retention.ms=168h", "retention.bytes=1GiB", "cleanup.policy=delete,compact", "max.message.bytes=2048", "delete.retention.ms=0"})
	if err != nil {
		t.Fatal(err)
	}
	if *p.RetentionMs != 168*3600*1000 || *p.RetentionBytes != 1<<30 || *p.CleanupPolicy != "compact,delete" ||
		*p.MaxMessageBytes != 2048 || *p.DeleteRetentionMs != 0 {
		t.Fatalf("patch %+v", p)
	}
	p, err = parseConfig([]string{"retention.ms=-1", "retention.bytes=-1"})
	if err != nil || *p.RetentionMs != -1 || *p.RetentionBytes != -1 || p.CleanupPolicy != nil {
		t.Fatalf("forever: %+v %v", p, err)
	}
	if p, err := parseConfig(nil); err != nil || !p.IsZero() {
		t.Fatalf("empty: %+v %v", p, err)
	}
	for _, bad := range [][]string{
		{"retention.ms"}, {"=5"}, {"nope=1"}, {"retention.ms=soon"}, {"retention.ms=-2"},
		{"cleanup.policy=sometimes"}, {"max.message.bytes=0"}, {"max.message.bytes=4GiB"}, {"retention.bytes=0"},
		{"retention.ms=1", "retention.ms=2"}, {"delete.retention.ms=-1"},
	} {
		if _, err := parseConfig(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseOffset(t *testing.T) {
	for in, want := range map[string]int64{"earliest": client.Earliest, "latest": client.Latest, "0": 0, "42": 42} {
		if got, err := parseOffset(in); err != nil || got != want {
			t.Errorf("%q: %d %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "-1", "first", "1.5"} {
		if _, err := parseOffset(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestReadLine(t *testing.T) {
	br := bufio.NewReaderSize(strings.NewReader("a\n\nlong-"+strings.Repeat("x", 100)+"\r\nlast"), 16)
	var got []string
	for {
		line, err := readLine(br, 1000)
		if line != nil {
			got = append(got, string(line))
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"a", "", "long-" + strings.Repeat("x", 100) + "\r", "last"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("lines %q", got)
	}
	br = bufio.NewReaderSize(strings.NewReader(strings.Repeat("y", 50)+"\n"), 16)
	if _, err := readLine(br, 20); err == nil {
		t.Fatal("an over-long line was accepted")
	}
}

// batches runs produceLines over input and returns the values per batch.
func batches(t *testing.T, input io.Reader, cfg produceConfig) ([][]string, error) {
	t.Helper()
	var out [][]string
	err := produceLines(t.Context(), input, cfg, func(msgs []client.Message) error {
		var b []string
		for _, m := range msgs {
			b = append(b, string(m.Key)+"|"+string(m.Value))
		}
		out = append(out, b)
		return nil
	})
	return out, err
}

func TestProduceLinesBatches(t *testing.T) {
	base := produceConfig{batchRecords: 2, batchBytes: 1 << 20, linger: time.Hour, maxLine: 1 << 20, partition: -1}
	got, err := batches(t, strings.NewReader("a\nb\nc\nd\ne"), base)
	if err != nil || fmt.Sprint(got) != "[[|a |b] [|c |d] [|e]]" {
		t.Fatalf("by count: %q %v", got, err)
	}
	bySize := base
	bySize.batchRecords, bySize.batchBytes = 100, 4
	got, err = batches(t, strings.NewReader("aa\nbb\nc\nd\ne\nf\n"), bySize)
	if err != nil || fmt.Sprint(got) != "[[|aa |bb] [|c |d |e |f]]" {
		t.Fatalf("by size: %q %v", got, err)
	}
	keyed := base
	keyed.keySep = []byte("=")
	got, err = batches(t, strings.NewReader("k=v\nnokey\n=empty\n"), keyed)
	if err != nil || fmt.Sprint(got) != "[[k|v |nokey] [|empty]]" {
		t.Fatalf("keys: %q %v", got, err)
	}
	if got, err := batches(t, strings.NewReader(""), base); err != nil || len(got) != 0 {
		t.Fatalf("empty input: %q %v", got, err)
	}
}

func TestProduceLinesLinger(t *testing.T) {
	// Two lines arrive, then the input stays open: linger sends them.
	pr, pw := io.Pipe()
	cfg := produceConfig{batchRecords: 100, batchBytes: 1 << 20, linger: 10 * time.Millisecond, maxLine: 1 << 20, partition: -1}
	sent := make(chan int, 10)
	done := make(chan error, 1)
	go func() {
		done <- produceLines(t.Context(), pr, cfg, func(msgs []client.Message) error {
			sent <- len(msgs)
			return nil
		})
	}()
	io.WriteString(pw, "a\nb\n")
	total := 0
	for total < 2 {
		total += <-sent // arrives although the input is still open
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestProduceLinesStopsOnSendError(t *testing.T) {
	cfg := produceConfig{batchRecords: 1, batchBytes: 1 << 20, linger: time.Hour, maxLine: 1 << 20, partition: -1}
	calls := 0
	boom := errors.New("boom")
	err := produceLines(t.Context(), strings.NewReader(strings.Repeat("x\n", 1000)), cfg, func([]client.Message) error {
		calls++
		return boom
	})
	if !errors.Is(err, boom) || calls != 1 {
		t.Fatalf("%v after %d sends", err, calls)
	}
	// Reading errors are reported.
	_, err = batches(t, io.MultiReader(strings.NewReader("a\n"), errReader{}), cfg)
	if err == nil || !strings.Contains(err.Error(), "read stdin") {
		t.Fatalf("read error: %v", err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestProduceMessage(t *testing.T) {
	cfg := produceConfig{keySep: []byte("\t"), partition: 2, headers: []client.Header{{Key: "a", Value: []byte("b")}}}
	m := cfg.message([]byte("key\tvalue"))
	if string(m.Key) != "key" || string(m.Value) != "value" || *m.Partition != 2 || len(m.Headers) != 1 {
		t.Fatalf("%+v", m)
	}
	cfg = produceConfig{partition: -1}
	m = cfg.message([]byte("key\tvalue"))
	if m.Key != nil || string(m.Value) != "key\tvalue" || m.Partition != nil || m.Headers != nil {
		t.Fatalf("%+v", m)
	}
}

func TestFormats(t *testing.T) {
	recs := []client.Record{
		{Partition: 1, Offset: 7, Timestamp: time.UnixMilli(1234), Key: []byte("k"), Value: []byte(`{"a":"<b>"}`),
			Headers: []client.Header{{Key: "h", Value: []byte("v")}, {Key: "n", Value: nil}, {Key: "bin", Value: []byte{0xff}}}},
		{Partition: 0, Offset: 0, Timestamp: time.UnixMilli(5), Key: nil, Value: nil},
		{Partition: 0, Offset: 1, Timestamp: time.UnixMilli(6), Key: []byte{0xfe}, Value: []byte{}},
	}
	render := func(f recordFormat) string {
		var b bytes.Buffer
		w := bufio.NewWriter(&b)
		for _, r := range recs {
			if err := f(w, r); err != nil {
				t.Fatal(err)
			}
		}
		w.Flush()
		return b.String()
	}
	value, _ := formatFor("value", nil)
	if got := render(value); got != "{\"a\":\"<b>\"}\n\n\n" {
		t.Errorf("value: %q", got)
	}
	kv, _ := formatFor("kv", []byte("="))
	if got := render(kv); got != "k={\"a\":\"<b>\"}\n=\n\xfe=\n" {
		t.Errorf("kv: %q", got)
	}
	js, _ := formatFor("json", nil)
	want := `{"partition":1,"offset":7,"timestamp":1234,"key":"k","value":"{\"a\":\"<b>\"}","headers":[{"key":"h","value":"v"},{"key":"n","value":null},{"key":"bin","value_b64":"/w=="}]}` + "\n" +
		`{"partition":0,"offset":0,"timestamp":5,"key":null,"value":null,"headers":[]}` + "\n" +
		`{"partition":0,"offset":1,"timestamp":6,"key_b64":"/g==","value":"","headers":[]}` + "\n"
	if got := render(js); got != want {
		t.Errorf("json:\n%s\nwant\n%s", got, want)
	}
	if _, err := formatFor("xml", nil); err == nil {
		t.Error("an unknown format was accepted")
	}
}

func TestRecordWriterStopsAtMax(t *testing.T) {
	var b bytes.Buffer
	rw := &recordWriter{w: bufio.NewWriter(&b), format: formatValue, left: 2}
	if err := rw.write(client.Record{Value: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	if err := rw.write(client.Record{Value: []byte("2")}); !errors.Is(err, errEnough) {
		t.Fatalf("second write: %v", err)
	}
	rw.w.Flush()
	if b.String() != "1\n2\n" {
		t.Fatalf("%q", b.String())
	}
}

func TestCommandsRegistered(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), nil, &out, &errOut); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, name := range []string{"topic", "produce", "consume"} {
		if !strings.Contains(out.String(), "  "+name+" ") {
			t.Errorf("usage does not list %s:\n%s", name, out.String())
		}
	}
}
