package metadata

import (
	"net/url"
	"regexp"
	"strings"
)

// redacted replaces a password in what RedactURL returns.
const redacted = "xxxxx"

var dsnPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// RedactURL returns a database URL (postgres://user:pass@host/db?...) or
// key=value connection string fit for logs: the password, in the user
// info or as a parameter, is replaced by xxxxx.
func RedactURL(s string) string {
	if !strings.Contains(s, "://") {
		return dsnPassword.ReplaceAllString(s, "${1}"+redacted)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "(a database URL that does not parse)"
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), redacted)
		}
	}
	q := u.Query()
	for k := range q {
		if strings.EqualFold(k, "password") {
			q.Set(k, redacted)
			u.RawQuery = q.Encode()
		}
	}
	return u.String()
}
