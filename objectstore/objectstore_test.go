package objectstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"silt/objectstore"
	"silt/objectstore/mem"
	"silt/objectstore/objectstoretest"
)

func newMem(t *testing.T) *mem.Bucket {
	t.Helper()
	b, err := mem.New(t.Context(), mem.Config{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestValidateKey(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"a", "a/b", "a/b/c.txt", "...", "a..b", ".hidden", "a/.b", "with space", "ü"} {
		if err := objectstore.ValidateKey(key); err != nil {
			t.Errorf("ValidateKey(%q) = %v, want nil", key, err)
		}
	}
	for _, key := range []string{"", "/", "/a", "a/", "a//b", ".", "..", "../a", "a/..", "a/./b", "a\x00"} {
		if err := objectstore.ValidateKey(key); !errors.Is(err, objectstore.ErrInvalidKey) {
			t.Errorf("ValidateKey(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
}

func TestWithPrefixConformance(t *testing.T) {
	t.Parallel()
	objectstoretest.Run(t, func(t *testing.T) objectstore.Bucket {
		return objectstore.WithPrefix(newMem(t), "/tenant/a/")
	})
}

func TestWithPrefix(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	base := newMem(t)
	if objectstore.WithPrefix(base, "/") != objectstore.Bucket(base) {
		t.Fatal("an empty prefix should return the bucket itself")
	}
	a := objectstore.WithPrefix(base, "tenant/a")
	b := objectstore.WithPrefix(base, "tenant/a2/")
	for _, bk := range []objectstore.Bucket{a, b} {
		if err := bk.Put(ctx, "k", strings.NewReader(bk.Name()), -1, objectstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	if err := base.List(ctx, "", func(info objectstore.ObjectInfo) error {
		keys = append(keys, info.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(keys, ",") != "tenant/a/k,tenant/a2/k" {
		t.Fatalf("base keys = %v", keys)
	}
	// The prefixes do not see each other, though "tenant/a" is a string
	// prefix of "tenant/a2".
	keys = nil
	if err := a.List(ctx, "", func(info objectstore.ObjectInfo) error {
		keys = append(keys, info.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(keys, ",") != "k" {
		t.Fatalf("prefixed keys = %v", keys)
	}
	info, err := a.Stat(ctx, "k")
	if err != nil || info.Key != "k" {
		t.Fatalf("Stat = %+v, %v", info, err)
	}
	if got := a.Name(); got != "mem://test/tenant/a" {
		t.Fatalf("Name = %q", got)
	}
	// Nesting composes.
	nested := objectstore.WithPrefix(objectstore.WithPrefix(base, "x"), "y")
	if err := nested.Put(ctx, "z", strings.NewReader("1"), 1, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := base.Stat(ctx, "x/y/z"); err != nil {
		t.Fatalf("nested prefix: %v", err)
	}
	// A key cannot climb out of the prefix.
	for _, key := range []string{"", "../k", "/k"} {
		if _, err := a.Stat(ctx, key); !errors.Is(err, objectstore.ErrInvalidKey) {
			t.Errorf("Stat %q: %v, want ErrInvalidKey", key, err)
		}
	}
}

func TestInstrumentConformance(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	objectstoretest.Run(t, func(t *testing.T) objectstore.Bucket {
		// Many buckets on one registerer share the collectors.
		return objectstore.Instrument(newMem(t), reg, "mem")
	})
}

// metric returns the value of the counter or the sample count of the
// histogram named name with exactly the given labels (0 when absent).
func metric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue next
				}
			}
			return value(m)
		}
	}
	return 0
}

func value(m *dto.Metric) float64 {
	if m.GetHistogram() != nil {
		return float64(m.GetHistogram().GetSampleCount())
	}
	return m.GetCounter().GetValue()
}

func TestInstrument(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	reg := prometheus.NewRegistry()
	b := objectstore.Instrument(newMem(t), reg, "mem")
	// Registering again on the same registerer reuses the collectors.
	b2 := objectstore.Instrument(newMem(t), reg, "other")

	data := bytes.Repeat([]byte("x"), 1000)
	if err := b.Put(ctx, "k", bytes.NewReader(data), 1000, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "k", bytes.NewReader(data), 1000, objectstore.PutOptions{IfNotExists: true}); !errors.Is(err, objectstore.ErrExists) {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "missing"); !errors.Is(err, objectstore.ErrNotExist) {
		t.Fatal(err)
	}
	rc, err := b.GetRange(ctx, "k", 0, 600)
	if err != nil {
		t.Fatal(err)
	}
	// Bytes count as they are read, not when the body is opened.
	if got := metric(t, reg, "silt_objectstore_read_bytes_total", map[string]string{"backend": "mem"}); got != 0 {
		t.Fatalf("read bytes before reading = %v", got)
	}
	if _, err := io.CopyN(io.Discard, rc, 250); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if _, err := b.GetRange(ctx, "k", 5000, 1); !errors.Is(err, objectstore.ErrInvalidRange) {
		t.Fatal(err)
	}
	if _, err := b.Stat(ctx, "/bad"); !errors.Is(err, objectstore.ErrInvalidKey) {
		t.Fatal(err)
	}
	errStop := errors.New("stop")
	if err := b.List(ctx, "", func(objectstore.ObjectInfo) error { return errStop }); !errors.Is(err, errStop) {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.Delete(cctx, "k"); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if err := b2.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}

	req := func(backend, op, outcome string) float64 {
		return metric(t, reg, "silt_objectstore_requests_total", map[string]string{"backend": backend, "op": op, "outcome": outcome})
	}
	for _, c := range []struct {
		backend, op, outcome string
		want                 float64
	}{
		{"mem", "put", "ok", 1},
		{"mem", "put", "exists", 1},
		{"mem", "get", "not_exist", 1},
		{"mem", "get", "ok", 0}, // exported as zero
		{"mem", "get_range", "ok", 1},
		{"mem", "get_range", "invalid_range", 1},
		{"mem", "stat", "invalid_key", 1},
		{"mem", "list", "stopped", 1},
		{"mem", "delete", "canceled", 1},
		{"other", "delete", "ok", 1},
		{"other", "put", "ok", 0},
	} {
		if got := req(c.backend, c.op, c.outcome); got != c.want {
			t.Errorf("requests{%s,%s,%s} = %v, want %v", c.backend, c.op, c.outcome, got, c.want)
		}
	}
	if got := metric(t, reg, "silt_objectstore_read_bytes_total", map[string]string{"backend": "mem"}); got != 250 {
		t.Errorf("read bytes = %v, want 250", got)
	}
	if got := metric(t, reg, "silt_objectstore_written_bytes_total", map[string]string{"backend": "mem"}); got != 2000 {
		t.Errorf("written bytes = %v, want 2000 (both puts read their body)", got)
	}
	if got := metric(t, reg, "silt_objectstore_request_duration_seconds", map[string]string{"backend": "mem", "op": "put"}); got != 2 {
		t.Errorf("put latency samples = %v, want 2", got)
	}
}

func TestInstrumentNilRegisterer(t *testing.T) {
	t.Parallel()
	b := objectstore.Instrument(newMem(t), nil, "mem")
	if err := b.Put(t.Context(), "k", strings.NewReader("x"), 1, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestInstrumentClash(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	// A different metric under one of the names is a programming error.
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "silt_objectstore_read_bytes_total", Help: "x"}))
	defer func() {
		if recover() == nil {
			t.Fatal("Instrument did not panic on a clashing metric")
		}
	}()
	objectstore.Instrument(newMem(t), reg, "mem")
}
