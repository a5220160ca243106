package metadata

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Sentinel errors.
var (
	ErrTopicExists     = errors.New("metadata: topic already exists")
	ErrTopicNotFound   = errors.New("metadata: topic not found")
	ErrPartitionCount  = errors.New("metadata: partition count can only grow")
	ErrInvalidArgument = errors.New("metadata: invalid argument")
	// ErrUnavailable means Postgres could not be reached or the
	// transaction could not complete for a transient reason; retriable.
	ErrUnavailable = errors.New("metadata: postgres unavailable")
)

// sentinels lists the errors that classify passes through unchanged.
var sentinels = []error{ErrTopicExists, ErrTopicNotFound, ErrPartitionCount, ErrInvalidArgument, ErrUnavailable}

// SQLSTATE codes that map to sentinels.
const (
	sqlUniqueViolation      = "23505"
	sqlForeignKeyViolation  = "23503"
	sqlSerializationFailure = "40001"
	sqlDeadlockDetected     = "40P01"
	sqlAdminShutdown        = "57P01"
	sqlCannotConnectNow     = "57P03"
	sqlTooManyConnections   = "53300"
	sqlLockNotAvailable     = "55P03" // lock_timeout
	sqlQueryCanceled        = "57014" // statement_timeout or a cancel request
	sqlIdleInTransaction    = "25P03" // idle_in_transaction_session_timeout
	sqlInvalidParameter     = "22023"
	// Silt's own, raised by the server-side functions of migration 0003.
	sqlSegmentNotPending = "SLT01"
	sqlLeaseLost         = "SLT02"
	sqlRowsChanged       = "SLT03"
)

// timeoutKind names the session bound that ended a statement, or "".
func timeoutKind(err error) string {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return ""
	}
	switch pgErr.Code {
	case sqlLockNotAvailable:
		return "lock"
	case sqlIdleInTransaction:
		return "idle_in_transaction"
	case sqlQueryCanceled:
		if strings.Contains(pgErr.Message, "statement timeout") {
			return "statement"
		}
	}
	return ""
}

// classify maps driver errors to sentinels, keeping the original text.
// what names the verb, for the message.
func classify(what string, err error) error {
	if err == nil {
		return nil
	}
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return err
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	// Any failure to connect is unavailability, whatever the server said
	// (a database not accepting connections answers 55000).
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return fmt.Errorf("%s: %w: %v", what, ErrUnavailable, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case sqlSerializationFailure, sqlDeadlockDetected, sqlAdminShutdown, sqlCannotConnectNow, sqlTooManyConnections,
			sqlLockNotAvailable, sqlQueryCanceled, sqlIdleInTransaction:
			return fmt.Errorf("%s: %w: %s", what, ErrUnavailable, pgErr.Message)
		case sqlForeignKeyViolation:
			if pgErr.ConstraintName == "batches_segment_id_fkey" {
				// The segment's row was swept while the call waited.
				return fmt.Errorf("%s: %w: its row was swept", what, ErrSegmentExpired)
			}
		case sqlSegmentNotPending:
			return fmt.Errorf("%s: %w: %s", what, ErrSegmentExpired, pgErr.Message)
		case sqlLeaseLost, sqlRowsChanged:
			return fmt.Errorf("%s: %w: %s", what, ErrFenced, pgErr.Message)
		case sqlInvalidParameter:
			return fmt.Errorf("%s: %w: %s", what, ErrInvalidArgument, pgErr.Message)
		}
		if len(pgErr.Code) == 2+3 && pgErr.Code[:2] == "08" { // connection exceptions
			return fmt.Errorf("%s: %w: %s", what, ErrUnavailable, pgErr.Message)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	var netErr net.Error
	if errors.As(err, &netErr) || pgconn.SafeToRetry(err) || errors.Is(err, pgx.ErrTxClosed) {
		return fmt.Errorf("%s: %w: %v", what, ErrUnavailable, err)
	}
	if isConnClosed(err) {
		return fmt.Errorf("%s: %w: %v", what, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func isConnClosed(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return false
	}
	// pgx reports a dead connection as a plain error whose text says so.
	msg := strings.ToLower(err.Error())
	for _, s := range []string{"conn closed", "connection reset", "broken pipe", "eof", "failed to connect", "connection refused"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}
