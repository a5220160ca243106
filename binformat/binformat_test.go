package binformat

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func sample() *Request {
	return &Request{
		ProducerID: 42,
		Sequences:  []Sequence{{Partition: 1, BaseSequence: 7}},
		Records: []Record{
			{Partition: -1, Timestamp: -1, Key: nil, Value: []byte("v"), Headers: []Header{{Key: "h", Value: nil}, {Key: "", Value: []byte{}}}},
			{Partition: 3, Timestamp: 1700000000000, Key: []byte{}, Value: nil},
			{Partition: 0, Timestamp: 5, Key: []byte("k"), Value: bytes.Repeat([]byte{0xff}, 1000)},
		},
	}
}

func TestRequestRoundTrip(t *testing.T) {
	in := sample()
	got, err := DecodeRequest(AppendRequest(nil, in), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, got) {
		t.Fatalf("round trip:\n in %+v\ngot %+v", in, got)
	}
	// nil and empty stay distinct.
	if got.Records[0].Key != nil || got.Records[1].Key == nil || got.Records[1].Value != nil {
		t.Fatal("null/empty distinction lost")
	}
}

func TestFetchRoundTrip(t *testing.T) {
	recs := []Record{{Offset: 10, Partition: -1, Timestamp: 3, Key: []byte("a"), Value: nil, Headers: []Header{{Key: "x", Value: []byte("y")}}}}
	b := AppendFetchHeader(nil, 11, 20, 0, len(recs))
	for i := range recs {
		b = AppendFetchRecord(b, &recs[i])
	}
	if want := FetchHeaderSize + FetchRecordSize(&recs[0]); len(b) != want {
		t.Fatalf("encoded %d bytes, sizes say %d", len(b), want)
	}
	got, err := DecodeFetch(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.NextOffset != 11 || got.HighWatermark != 20 || !reflect.DeepEqual(got.Records, recs) {
		t.Fatalf("got %+v", got)
	}
}

func TestDecodeRejectsBadInput(t *testing.T) {
	full := AppendRequest(nil, sample())
	for i := 0; i < len(full); i++ {
		if _, err := DecodeRequest(full[:i], Limits{}); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated at %d: err = %v", i, err)
		}
	}
	if _, err := DecodeRequest(append(full, 0), Limits{}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("trailing byte: %v", err)
	}
	if _, err := DecodeRequest(full, Limits{MaxRecords: 2}); !errors.Is(err, ErrTooMany) {
		t.Fatalf("limit: %v", err)
	}
}

// Count walks what DecodeRequest decodes, with the same limits; a record
// with more headers than allowed is refused before its headers exist.
func TestCountAndHeaderLimit(t *testing.T) {
	full := AppendRequest(nil, sample())
	records, headers, err := Count(full, Limits{})
	if err != nil || records != 3 || headers != 2 {
		t.Fatalf("count: %d records, %d headers, %v", records, headers, err)
	}
	for i := 0; i < len(full); i++ {
		if _, _, err := Count(full[:i], Limits{}); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated at %d: err = %v", i, err)
		}
	}
	for _, lim := range []Limits{{MaxHeaders: 1}} {
		if _, _, err := Count(full, lim); !errors.Is(err, ErrTooManyHeaders) || errors.Is(err, ErrTooMany) {
			t.Fatalf("count with %+v: %v", lim, err)
		}
		if _, err := DecodeRequest(full, lim); !errors.Is(err, ErrTooManyHeaders) {
			t.Fatalf("decode with %+v: %v", lim, err)
		}
	}
	if _, _, err := Count(full, Limits{MaxRecords: 2}); !errors.Is(err, ErrTooMany) {
		t.Fatalf("record limit: %v", err)
	}
	if _, err := DecodeRequest(full, Limits{MaxHeaders: 2}); err != nil {
		t.Fatalf("at the header limit: %v", err)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add(AppendRequest(nil, sample()))
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := DecodeRequest(b, Limits{MaxRecords: 1000})
		records, headers, cerr := Count(b, Limits{MaxRecords: 1000})
		if (err == nil) != (cerr == nil) {
			t.Fatalf("decode: %v, count: %v", err, cerr)
		}
		if err != nil {
			return
		}
		n := 0
		for i := range req.Records {
			n += len(req.Records[i].Headers)
		}
		if records != len(req.Records) || headers != n {
			t.Fatalf("count says %d records, %d headers; decoded %d, %d", records, headers, len(req.Records), n)
		}
		if again := AppendRequest(nil, req); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs")
		}
	})
}
