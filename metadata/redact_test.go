package metadata

import (
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://silt:s3cret@db:5432/silt?sslmode=require": "postgres://silt:xxxxx@db:5432/silt?sslmode=require",
		"postgres://silt@db/silt":                             "postgres://silt@db/silt",
		"postgresql://u:p%40ss@h/d?password=other":            "postgresql://u:xxxxx@h/d?password=xxxxx",
		"host=db user=silt password=s3cret dbname=silt":       "host=db user=silt password=xxxxx dbname=silt",
		"host=db password = 'a b c' dbname=silt":              "host=db password = xxxxx dbname=silt",
	} {
		got := RedactURL(in)
		if got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
		for _, secret := range []string{"s3cret", "p%40ss", "p@ss", "other", "a b c"} {
			if strings.Contains(got, secret) {
				t.Errorf("RedactURL(%q) kept %q", in, secret)
			}
		}
	}
	if got := RedactURL("postgres://u:pw@[bad"); strings.Contains(got, "pw") {
		t.Errorf("an unparseable URL kept its password: %q", got)
	}
}
