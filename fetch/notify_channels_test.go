package fetch_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"silt/fetch"
	"silt/metadata/metadatatest"
)

// Another channel rides on the commit listener's connection: its
// notifications reach its handler, and the handler hears of every
// (re)connection, when notifications may have been missed.
func TestNotifierAlsoListensOnAnotherChannel(t *testing.T) {
	url := metadatatest.URL(t)
	n, err := fetch.NewNotifier(url, "silt_commits", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	notes := make(chan string, 8)
	gaps := make(chan struct{}, 8)
	n.Also("silt_test_other", func(p string) { notes <- p }, func() { gaps <- struct{}{} })
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); <-n.Stopped() }()
	go n.Run(ctx)
	select {
	case <-gaps:
	case <-time.After(30 * time.Second):
		t.Fatal("no gap call at the first connection")
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `SELECT pg_notify('silt_test_other', 'key-1')`); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-notes:
		if p != "key-1" {
			t.Fatalf("payload %q", p)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the other channel's notification did not arrive")
	}
}
