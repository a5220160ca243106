package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// RetryPolicy bounds automatic retries. The zero value, and any policy
// with MaxAttempts below 2, never retries.
type RetryPolicy struct {
	// MaxAttempts counts every try, the first included.
	MaxAttempts int
	// MaxElapsed bounds the time from the first try to the start of the
	// last; a wait that would end past it is not taken.
	MaxElapsed time.Duration
	// Backoff is the first wait when the agent gives no Retry-After; it
	// doubles per retry up to MaxBackoff, with jitter.
	Backoff    time.Duration
	MaxBackoff time.Duration
	// AttemptTimeout, when positive, bounds each try; a try that times out
	// is retried like a dropped connection.
	AttemptTimeout time.Duration
}

// DefaultRetryPolicy is 5 tries within 30s, backing off from 100ms to 5s.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{MaxAttempts: 5, MaxElapsed: 30 * time.Second, Backoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second}
}

// withDefaults fills zero bounds from DefaultRetryPolicy, so a policy that
// retries is always bounded in time as well as in count.
func (p RetryPolicy) withDefaults() RetryPolicy {
	d := DefaultRetryPolicy()
	if p.MaxElapsed <= 0 {
		p.MaxElapsed = d.MaxElapsed
	}
	if p.Backoff <= 0 {
		p.Backoff = d.Backoff
	}
	if p.MaxBackoff < p.Backoff {
		p.MaxBackoff = max(d.MaxBackoff, p.Backoff)
	}
	return p
}

// retrier tracks one operation's tries against a policy.
type retrier struct {
	p       RetryPolicy
	start   time.Time
	attempt int // tries made
}

func newRetrier(p RetryPolicy) *retrier {
	return &retrier{p: p.withDefaults(), start: time.Now()}
}

// wait decides whether err deserves another try and sleeps before it. It
// returns false when the operation should fail with err: not retriable,
// out of attempts or time, or ctx ended.
func (r *retrier) wait(ctx context.Context, err error, safeToRepeat bool) bool {
	r.attempt++
	if r.attempt >= r.p.MaxAttempts || ctx.Err() != nil || !retriable(err, safeToRepeat) {
		return false
	}
	d := r.delay(err)
	if time.Since(r.start)+d > r.p.MaxElapsed {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// delay is Retry-After when the agent sent one, else jittered backoff.
func (r *retrier) delay(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) && e.RetryAfter > 0 {
		return e.RetryAfter
	}
	return backoff(r.p.Backoff, r.p.MaxBackoff, r.attempt)
}

// backoff is base·2^(n-1) capped at limit, scaled by a random 50–100%.
func backoff(base, limit time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d/2 + rand.N(d/2+1)
}

// retriable reports whether err may be retried: problems the agent marks
// retriable, and, when the request is safe to repeat, transport failures.
func retriable(err error, safeToRepeat bool) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Retriable
	}
	if !safeToRepeat {
		return false
	}
	var te *transportError
	return errors.As(err, &te)
}

// transportError is a failure to get a complete response: connection
// errors, timeouts of one try, truncated bodies.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }
