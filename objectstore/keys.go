package objectstore

import (
	"fmt"
	"strings"
)

// ValidateKey reports whether key is a valid object key: non-empty,
// slash-separated segments that are neither empty, ".", nor "..", and no NUL
// byte. The error wraps ErrInvalidKey. Every backend applies it.
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("empty key: %w", ErrInvalidKey)
	}
	if strings.IndexByte(key, 0) >= 0 {
		return fmt.Errorf("key %q contains a NUL byte: %w", key, ErrInvalidKey)
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return fmt.Errorf("key %q has an empty segment or a leading or trailing slash: %w", key, ErrInvalidKey)
		case ".", "..":
			return fmt.Errorf("key %q has a %q segment: %w", key, seg, ErrInvalidKey)
		}
	}
	return nil
}
