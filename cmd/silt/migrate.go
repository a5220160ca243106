package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"silt/metadata"
	"silt/migrations"
)

func runMigrateCmd(ctx context.Context, args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("migrate")
	var url string
	fs.StringVar(&url, "database-url", "", "Postgres URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if url == "" {
		return errors.New("--database-url (SILT_DATABASE_URL) is required")
	}
	cfg := metadata.DefaultConfig()
	cfg.URL = url
	store, err := metadata.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	applied, err := migrations.Apply(ctx, store.Pool())
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		_, err = fmt.Fprintln(stdout, "schema is up to date")
		return err
	}
	for _, m := range applied {
		if _, err := fmt.Fprintln(stdout, "applied", m); err != nil {
			return err
		}
	}
	return nil
}
