package binformat

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func sampleBatches() ([]byte, *Batches) {
	want := &Batches{
		BatchesHeader: BatchesHeader{Partition: 3, Offset: 15, NextOffset: 40, HighWatermark: 41, LogStartOffset: 2, Count: 3},
		Batches:       [][]byte{bytes.Repeat([]byte{1}, 70), {}, bytes.Repeat([]byte{2}, 61)},
	}
	b := AppendBatchesHeader(nil, &want.BatchesHeader)
	for _, batch := range want.Batches {
		b = AppendBatchFrame(b, len(batch))
		b = append(b, batch...)
	}
	return b, want
}

func TestBatchesRoundTrip(t *testing.T) {
	b, want := sampleBatches()
	if n := BatchesHeaderSize + 3*BatchFrameSize + 70 + 61; len(b) != n {
		t.Fatalf("encoded %d bytes, sizes say %d", len(b), n)
	}
	got, err := DecodeBatches(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	empty, err := DecodeBatches(AppendBatchesHeader(nil, &BatchesHeader{NextOffset: 7}))
	if err != nil || empty.Count != 0 || empty.Batches != nil || empty.NextOffset != 7 {
		t.Fatalf("no batches: %+v, %v", empty, err)
	}
}

func TestDecodeBatchesRejectsBadFraming(t *testing.T) {
	full, _ := sampleBatches()
	for i := range len(full) {
		if _, err := DecodeBatches(full[:i]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated at %d: %v", i, err)
		}
	}
	if _, err := DecodeBatches(append(full, 0)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("trailing byte: %v", err)
	}
	huge := AppendBatchesHeader(nil, &BatchesHeader{Count: 1 << 30})
	if _, err := DecodeBatches(huge); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a count the body cannot hold: %v", err)
	}
	long := AppendBatchFrame(AppendBatchesHeader(nil, &BatchesHeader{Count: 1}), 1<<31)
	if _, err := DecodeBatches(long); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a batch longer than the body: %v", err)
	}
}

func FuzzDecodeBatches(f *testing.F) {
	full, _ := sampleBatches()
	f.Add(full)
	f.Add([]byte(BatchesMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := DecodeBatches(b)
		if err != nil {
			return
		}
		again := AppendBatchesHeader(nil, &got.BatchesHeader)
		for _, batch := range got.Batches {
			again = append(AppendBatchFrame(again, len(batch)), batch...)
		}
		if !bytes.Equal(again, b) {
			t.Fatal("re-encoding differs")
		}
	})
}
