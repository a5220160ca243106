package agent

import (
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"silt/problem"
)

// Listings come in pages: ?limit=N (default 1,000, at most 10,000) and
// ?cursor=C, the next_cursor of the previous page; a page without
// next_cursor is the last.
const (
	defaultPageLimit = 1000
	maxPageLimit     = 10_000
)

// page is a listing request's position and size.
type page struct {
	limit  int
	cursor string // decoded; "" from the start
}

// pageParams reads limit and cursor.
func pageParams(c echo.Context) (page, error) {
	n, err := intParam(c, "limit", defaultPageLimit, 1, maxPageLimit)
	if err != nil {
		return page{}, err
	}
	p := page{limit: int(n)}
	if raw := c.QueryParam("cursor"); raw != "" {
		b, err := base64.RawURLEncoding.DecodeString(raw)
		if err != nil || len(b) == 0 {
			return page{}, badRequest(problem.CodeInvalidParameter, "cursor=%q is not a cursor this API gave out", raw)
		}
		p.cursor = string(b)
	}
	return p, nil
}

// nextCursor encodes the position after the last item of a full page.
func nextCursor(last string) string { return base64.RawURLEncoding.EncodeToString([]byte(last)) }

// partitionCursor is a position in (topic name, partition) order.
func partitionCursor(topic string, partition int32) string {
	return topic + "\x00" + strconv.FormatInt(int64(partition), 10)
}

// parsePartitionCursor reads a partitionCursor ("" is the start).
func parsePartitionCursor(cur string) (topic string, partition int32, err error) {
	if cur == "" {
		return "", -1, nil
	}
	t, p, ok := strings.Cut(cur, "\x00")
	n, perr := strconv.ParseInt(p, 10, 32)
	if !ok || perr != nil {
		return "", 0, badRequest(problem.CodeInvalidParameter, "cursor is not a cursor this API gave out")
	}
	return t, int32(n), nil
}
