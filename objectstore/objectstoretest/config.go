package objectstoretest

import (
	"context"
	"testing"
)

// CheckConfigs checks a backend's Config validation: good must pass
// validate, and each change in bad must make good fail both validate and
// open (the backend's New).
func CheckConfigs[C, B any](t *testing.T, good C, validate func(C) error, open func(context.Context, C) (B, error), bad map[string]func(*C)) {
	t.Helper()
	if err := validate(good); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	for name, mod := range bad {
		cfg := good
		mod(&cfg)
		if err := validate(cfg); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, cfg)
		}
		if _, err := open(t.Context(), cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}

// MustNew returns newBucket(t.Context(), cfg), failing t on an error.
func MustNew[C, B any](t *testing.T, newBucket func(context.Context, C) (B, error), cfg C) B {
	t.Helper()
	b, err := newBucket(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}
