// Package cborwrite appends CBOR items in the core deterministic
// encoding (RFC 8949 section 4.2.1: shortest heads, definite lengths). It
// is the writing half of cborread: store and hub/message encode their
// hottest records with it, field by field, where fxamacker/cbor would
// reflect over a struct and allocate several times; tests hold the bytes
// equal to fxamacker's for the same records.
package cborwrite

// Major types.
const (
	Uint  byte = 0
	Neg   byte = 1
	Bytes byte = 2
	Text  byte = 3
	Array byte = 4
	Map   byte = 5
)

// HeadLen is the length of a head with argument v.
func HeadLen(v uint64) int {
	switch {
	case v < 24:
		return 1
	case v <= 0xff:
		return 2
	case v <= 0xffff:
		return 3
	case v <= 0xffffffff:
		return 5
	}
	return 9
}

// AppendHead appends the head of an item of major type major with
// argument v.
func AppendHead(b []byte, major byte, v uint64) []byte {
	m := major << 5
	switch {
	case v < 24:
		return append(b, m|byte(v))
	case v <= 0xff:
		return append(b, m|24, byte(v))
	case v <= 0xffff:
		return append(b, m|25, byte(v>>8), byte(v))
	case v <= 0xffffffff:
		return append(b, m|26, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return append(b, m|27, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// IntLen is the length of the integer v.
func IntLen(v int64) int {
	if v < 0 {
		return HeadLen(uint64(-1 - v))
	}
	return HeadLen(uint64(v))
}

// AppendInt appends the integer v.
func AppendInt(b []byte, v int64) []byte {
	if v < 0 {
		return AppendHead(b, Neg, uint64(-1-v))
	}
	return AppendHead(b, Uint, uint64(v))
}

// StringLen is the length of a byte or text string of n bytes.
func StringLen(n int) int { return HeadLen(uint64(n)) + n }

// AppendBytes appends the byte string v.
func AppendBytes(b, v []byte) []byte {
	return append(AppendHead(b, Bytes, uint64(len(v))), v...)
}

// AppendText appends the text string v; it does not check that v is
// UTF-8, as fxamacker/cbor does not when encoding.
func AppendText(b []byte, v string) []byte {
	return append(AppendHead(b, Text, uint64(len(v))), v...)
}

// AppendBool appends true or false.
func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xf5)
	}
	return append(b, 0xf4)
}
