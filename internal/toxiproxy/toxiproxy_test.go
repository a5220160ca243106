package toxiproxy_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"silt/internal/testenv"
	"silt/internal/toxiproxy"
)

// setup starts a private toxiproxy and a proxy in front of a fresh test
// database; it returns the client, the proxy and the database URL through it.
func setup(t *testing.T) (*toxiproxy.Client, toxiproxy.Proxy, string) {
	t.Helper()
	tp := testenv.Toxiproxy(t)
	direct, err := url.Parse(testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := tp.CreateProxy(ctx, testenv.RandomName("pg_"), "", direct.Host)
	if err != nil {
		t.Fatal(err)
	}
	if host, port, err := net.SplitHostPort(p.Listen); err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("proxy listens on %q (%v), want 127.0.0.1 and a real port", p.Listen, err)
	}
	proxied := *direct
	proxied.Host = p.Listen
	return tp, p, proxied.String()
}

// selectOne connects through the proxy and runs SELECT 1 within a deadline.
func selectOne(ctx context.Context, dbURL string) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return err
	}
	if one != 1 {
		return errors.New("SELECT 1 did not return 1")
	}
	return nil
}

// A freeze (the timeout toxic with timeout 0) on either direction stops a
// query on an open connection until its deadline; after the toxic is
// removed, a new connection works again.
func TestFreezeStopsPostgresTrafficUntilRemoved(t *testing.T) {
	t.Parallel()
	tp, p, dbURL := setup(t)
	for _, stream := range []string{toxiproxy.Downstream, toxiproxy.Upstream} {
		t.Run(stream, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			conn, err := pgx.Connect(ctx, dbURL)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatalf("through the proxy before any toxic: %v", err)
			}

			toxic, err := tp.AddToxic(ctx, p.Name, toxiproxy.Freeze(stream))
			if err != nil {
				t.Fatal(err)
			}
			if toxic.Name != "freeze_"+stream || toxic.Type != "timeout" || toxic.Stream != stream {
				t.Fatalf("server stored %+v", toxic)
			}
			qctx, qcancel := context.WithTimeout(ctx, 500*time.Millisecond)
			_, err = conn.Exec(qctx, "SELECT 1")
			qcancel()
			if err == nil {
				t.Fatalf("a query completed through a frozen %s", stream)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("frozen query: %v; want it to run into its deadline (the connection must stay open)", err)
			}
			if _, err := tp.AddToxic(ctx, p.Name, toxiproxy.Freeze(stream)); !errors.Is(err, toxiproxy.ErrExists) {
				t.Fatalf("adding the same toxic twice: %v, want ErrExists", err)
			}

			if err := tp.RemoveToxic(ctx, p.Name, toxic.Name); err != nil {
				t.Fatal(err)
			}
			if err := selectOne(ctx, dbURL); err != nil {
				t.Fatalf("a new connection after removing the toxic: %v", err)
			}
			if err := tp.RemoveToxic(ctx, p.Name, toxic.Name); !errors.Is(err, toxiproxy.ErrNotFound) {
				t.Fatalf("removing a removed toxic: %v, want ErrNotFound", err)
			}
		})
	}
}

// A disabled proxy refuses connections; enabled again, it serves on the
// same address. A deleted proxy is gone.
func TestDisableEnableAndDeleteProxy(t *testing.T) {
	t.Parallel()
	tp, p, dbURL := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := selectOne(ctx, dbURL); err != nil {
		t.Fatal(err)
	}

	off, err := tp.SetEnabled(ctx, p.Name, false)
	if err != nil {
		t.Fatal(err)
	}
	if off.Enabled {
		t.Fatalf("after disabling: %+v", off)
	}
	if c, err := net.DialTimeout("tcp", p.Listen, 5*time.Second); err == nil {
		c.Close()
		t.Fatalf("a disabled proxy accepted a connection on %s", p.Listen)
	}

	on, err := tp.SetEnabled(ctx, p.Name, true)
	if err != nil {
		t.Fatal(err)
	}
	if !on.Enabled || on.Listen != p.Listen {
		t.Fatalf("after enabling: %+v, want enabled on %s", on, p.Listen)
	}
	if err := selectOne(ctx, dbURL); err != nil {
		t.Fatalf("through the proxy enabled again: %v", err)
	}

	if err := tp.DeleteProxy(ctx, p.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Proxy(ctx, p.Name); !errors.Is(err, toxiproxy.ErrNotFound) {
		t.Fatalf("a deleted proxy: %v, want ErrNotFound", err)
	}
}
