package segment

import "math/bits"

// Kafka's varint and varlong are the zigzag ("sint32"/"sint64") variants of
// the protobuf base-128 encoding: zigzag(n) = (n << 1) ^ (n >> 63), written
// least significant group first, 7 bits per byte, high bit set on every byte
// but the last. For an int32 the 64-bit zigzag of the sign-extended value
// equals the 32-bit zigzag, so one encoder serves both.

// zigzag maps a signed value to an unsigned one so that small magnitudes of
// either sign encode in few bytes.
func zigzag(v int64) uint64 { return uint64(v<<1) ^ uint64(v>>63) }

// varintLen is the encoded length in bytes of v as a zigzag varint.
func varintLen(v int64) int {
	return (bits.Len64(zigzag(v)|1) + 6) / 7
}

// appendVarint appends v as a zigzag varint.
func appendVarint(dst []byte, v int64) []byte {
	u := zigzag(v)
	for u >= 0x80 {
		dst = append(dst, byte(u)|0x80)
		u >>= 7
	}
	return append(dst, byte(u))
}

// readVarint32 decodes a zigzag varint of at most 5 bytes whose value must
// fit an int32, as Kafka requires for "varint" fields. It returns the value
// and the number of bytes read, or n <= 0 when the input is truncated (0) or
// malformed (-1).
func readVarint32(b []byte) (v int32, n int) {
	if len(b) > 0 && b[0] < 0x80 {
		u := uint32(b[0])
		return int32(u>>1) ^ -int32(u&1), 1
	}
	var u uint64
	for i := 0; i < 5; i++ {
		if i >= len(b) {
			return 0, 0
		}
		c := b[i]
		u |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if u > 0xffffffff {
				return 0, -1
			}
			u32 := uint32(u)
			return int32(u32>>1) ^ -int32(u32&1), i + 1
		}
	}
	return 0, -1
}

// readVarint64 decodes a zigzag varint of at most 10 bytes ("varlong").
// Same result convention as readVarint32.
func readVarint64(b []byte) (v int64, n int) {
	if len(b) > 0 && b[0] < 0x80 {
		u := uint64(b[0])
		return int64(u>>1) ^ -int64(u&1), 1
	}
	var u uint64
	for i := 0; i < 10; i++ {
		if i >= len(b) {
			return 0, 0
		}
		c := b[i]
		if i == 9 && c > 1 {
			return 0, -1 // overflows 64 bits
		}
		u |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return int64(u>>1) ^ -int64(u&1), i + 1
		}
	}
	return 0, -1
}
