package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"silt/auth"
	"silt/client"
	"silt/metadata"
	"silt/migrations"
)

const (
	synopsisKeyCreate   = "silt keys create --name NAME (--admin | --allow OP[,OP]:TYPE:PATTERN ...) [--expires-in D] [--produce-bytes-per-sec N] [--fetch-bytes-per-sec N] [--requests-per-sec N] [--replace] [--database-url URL]"
	synopsisKeyList     = "silt keys list [--database-url URL]"
	synopsisKeyRevoke   = "silt keys revoke ID [--database-url URL]"
	synopsisKeySetACLs  = "silt keys set-acls ID --allow OP[,OP]:TYPE:PATTERN ... [--database-url URL]"
	synopsisKeyGenerate = "silt keys generate"
	synopsisWhoAmI      = "silt keys whoami"
)

var keySubcommands = []subcommand{
	{"create", synopsisKeyCreate, runKeyCreate},
	{"list", synopsisKeyList, runKeyList},
	{"revoke", synopsisKeyRevoke, runKeyRevoke},
	{"set-acls", synopsisKeySetACLs, runKeySetACLs},
	{"whoami", synopsisWhoAmI, runKeyWhoAmI},
	{"generate", synopsisKeyGenerate, runKeyGenerate},
}

const keyNotes = `
With --database-url (SILT_DATABASE_URL) create, list, revoke and set-acls
work offline, straight on Postgres (for bootstrapping the first admin
key); otherwise they ask the agent at --url, with an admin --token.
--allow takes OPERATIONS:TYPE:PATTERN: operations produce, consume,
describe, create, alter, delete (comma-separated); types topic, group,
cluster; a pattern ending in * is a prefix (consume:topic:logs-*), * alone
is every name. create prints the key alone on the last line of stdout; it
is never shown again. generate prints a fresh key for
--bootstrap-admin-key without storing it.
`

// runKeysCmd is `silt keys`.
func runKeysCmd(ctx context.Context, args []string, stdout, _ io.Writer) error {
	return runSubcommand(ctx, args, stdout, keySubcommands, keyNotes)
}

// keyFlags are the flags every keys subcommand shares: the agent's (for
// online use) and --database-url (offline).
type keyFlags struct {
	out         *outputFlags
	databaseURL string
}

func newKeyFlags(fs *flagSet) *keyFlags {
	f := &keyFlags{out: newOutputFlags(fs)}
	fs.StringVar(&f.databaseURL, "database-url", "", "Postgres URL: work offline, straight on the database, instead of through an agent")
	return f
}

// keyBackend is where keys are managed: Postgres or an agent.
type keyBackend struct {
	keys  *auth.Keys
	api   *client.Client
	close func()
}

func (f *keyFlags) parse(ctx context.Context, fs *flagSet, args []string, synopsis string, want int) ([]string, *keyBackend, error) {
	pos, err := parseArgs(fs, args)
	if err != nil {
		return nil, nil, err
	}
	if len(pos) != want {
		return nil, nil, usageError(synopsis, "expected %d argument(s), got %d", want, len(pos))
	}
	if f.out.output != "table" && f.out.output != "json" {
		return nil, nil, fmt.Errorf("--output %q: want table or json", f.out.output)
	}
	if f.databaseURL == "" {
		c, err := f.out.api.client()
		return pos, &keyBackend{api: c, close: func() {}}, err
	}
	cfg := metadata.DefaultConfig()
	cfg.URL = f.databaseURL
	cfg.MaxConns = 2
	store, err := metadata.Open(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	if _, err := migrations.Apply(ctx, store.Pool()); err != nil {
		store.Close()
		return nil, nil, err
	}
	return pos, &keyBackend{keys: auth.NewKeys(store), close: store.Close}, nil
}

// aclFlags parse repeated --allow values.
func parseAllow(allow []string) ([]auth.ACL, error) {
	out := make([]auth.ACL, 0, len(allow))
	for _, s := range allow {
		a, err := auth.ParseACL(s)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func runKeyCreate(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("keys create")
	kf := newKeyFlags(fs)
	var (
		name      string
		admin     bool
		replace   bool
		allow     []string
		expiresIn time.Duration
		quota     auth.Quota
		rps       float64
	)
	fs.StringVar(&name, "name", "", "the key's name (its principal: what a client certificate names)")
	fs.BoolVar(&admin, "admin", false, "an admin key: may do everything")
	fs.ListVar(&allow, "allow", "an ACL entry OPERATIONS:TYPE:PATTERN, such as produce:topic:orders; repeat for more")
	fs.DurationVar(&expiresIn, "expires-in", 0, "the key stops working this long from now (0: never)")
	fs.BytesVar(&quota.ProduceBytesPerSec, "produce-bytes-per-sec", 0, "produce quota over the whole cluster (0: none)")
	fs.BytesVar(&quota.FetchBytesPerSec, "fetch-bytes-per-sec", 0, "fetch quota over the whole cluster (0: none)")
	fs.float64Var(&rps, "requests-per-sec", 0, "request quota over the whole cluster (0: none)")
	fs.BoolVar(&replace, "replace", false, "revoke the live key of the same name first")
	_, b, err := kf.parse(ctx, fs, args, synopsisKeyCreate, 0)
	if err != nil {
		return err
	}
	defer b.close()
	quota.RequestsPerSec = rps
	acls, err := parseAllow(allow)
	if err != nil {
		return err
	}
	if name == "" || (!admin && len(acls) == 0) {
		return usageError(synopsisKeyCreate, "--name and either --admin or --allow are required")
	}
	var expires *time.Time
	if expiresIn < 0 {
		return fmt.Errorf("--expires-in %s: want a positive duration", expiresIn)
	}
	if expiresIn > 0 {
		t := time.Now().Add(expiresIn).UTC()
		expires = &t
	}
	var key client.Key
	var token string
	if b.keys != nil {
		if replace {
			if err := revokeLiveName(ctx, b.keys, name); err != nil {
				return err
			}
		}
		k, tok, err := b.keys.Create(ctx, auth.KeySpec{Name: name, Admin: admin, ACLs: acls, Quota: quota, ExpiresAt: expires})
		if err != nil {
			return err
		}
		key, token = clientKey(k), tok
	} else {
		created, err := b.api.CreateKey(ctx, client.NewKey{Name: name, Admin: admin, Allow: allow, Replace: replace, ExpiresAt: expires,
			Quota: client.Quota{ProduceBytesPerSec: quota.ProduceBytesPerSec, FetchBytesPerSec: quota.FetchBytesPerSec, RequestsPerSec: quota.RequestsPerSec}})
		if err != nil {
			return err
		}
		key, token = created.Key, created.Token
	}
	if kf.out.output == "json" {
		return writeJSON(stdout, client.CreatedKey{Key: key, Token: token})
	}
	fmt.Fprintf(stdout, "Created key %s (id %s). Keep it now: it is not shown again.\n", key.Name, key.ID)
	if err := writeKeys(stdout, []client.Key{key}); err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, token)
	return err
}

// revokeLiveName revokes the live key named name, if any.
func revokeLiveName(ctx context.Context, keys *auth.Keys, name string) error {
	list, err := keys.List(ctx)
	if err != nil {
		return err
	}
	for _, k := range list {
		if k.Name == name && k.RevokedAt == nil {
			if _, err := keys.Revoke(ctx, k.ID); err != nil {
				return err
			}
		}
	}
	return nil
}

func clientKey(k auth.Key) client.Key {
	out := client.Key{ID: k.ID, Name: k.Name, Admin: k.Admin, ExpiresAt: k.ExpiresAt, CreatedAt: k.CreatedAt, LastUsedAt: k.LastUsedAt,
		RevokedAt: k.RevokedAt, Quota: client.Quota{ProduceBytesPerSec: k.Quota.ProduceBytesPerSec, FetchBytesPerSec: k.Quota.FetchBytesPerSec,
			RequestsPerSec: k.Quota.RequestsPerSec}, ACLs: []client.ACL{}}
	for _, a := range k.ACLs {
		ops := make([]string, len(a.Operations))
		for i, o := range a.Operations {
			ops[i] = string(o)
		}
		out.ACLs = append(out.ACLs, client.ACL{ResourceType: string(a.ResourceType), PatternType: string(a.PatternType), Name: a.Name, Operations: ops})
	}
	return out
}

func runKeyList(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("keys list")
	kf := newKeyFlags(fs)
	_, b, err := kf.parse(ctx, fs, args, synopsisKeyList, 0)
	if err != nil {
		return err
	}
	defer b.close()
	var keys []client.Key
	if b.keys != nil {
		list, err := b.keys.List(ctx)
		if err != nil {
			return err
		}
		for _, k := range list {
			keys = append(keys, clientKey(k))
		}
	} else if keys, err = b.api.ListKeys(ctx); err != nil {
		return err
	}
	if kf.out.output == "json" {
		return writeJSON(stdout, struct {
			Keys []client.Key `json:"keys"`
		}{Keys: append([]client.Key{}, keys...)})
	}
	return writeKeys(stdout, keys)
}

func runKeyRevoke(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("keys revoke")
	kf := newKeyFlags(fs)
	pos, b, err := kf.parse(ctx, fs, args, synopsisKeyRevoke, 1)
	if err != nil {
		return err
	}
	defer b.close()
	var key client.Key
	if b.keys != nil {
		k, err := b.keys.Revoke(ctx, pos[0])
		if err != nil {
			return err
		}
		key = clientKey(k)
	} else if key, err = b.api.RevokeKey(ctx, pos[0]); err != nil {
		return err
	}
	if kf.out.output == "json" {
		return writeJSON(stdout, key)
	}
	_, err = fmt.Fprintf(stdout, "Revoked key %s (id %s); every agent refuses it within 5 s.\n", key.Name, key.ID)
	return err
}

func runKeySetACLs(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("keys set-acls")
	kf := newKeyFlags(fs)
	var allow []string
	fs.ListVar(&allow, "allow", "an ACL entry OPERATIONS:TYPE:PATTERN; repeat for more (none: the key may do nothing)")
	pos, b, err := kf.parse(ctx, fs, args, synopsisKeySetACLs, 1)
	if err != nil {
		return err
	}
	defer b.close()
	acls, err := parseAllow(allow)
	if err != nil {
		return err
	}
	var key client.Key
	if b.keys != nil {
		k, err := b.keys.SetACLs(ctx, pos[0], acls)
		if err != nil {
			return err
		}
		key = clientKey(k)
	} else if key, err = b.api.SetKeyACLs(ctx, pos[0], nil, allow); err != nil {
		return err
	}
	if kf.out.output == "json" {
		return writeJSON(stdout, key)
	}
	return writeKeys(stdout, []client.Key{key})
}

func runKeyWhoAmI(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("keys whoami")
	of := newOutputFlags(fs)
	_, c, err := of.parse(fs, args, synopsisWhoAmI, 0)
	if err != nil {
		return err
	}
	w, err := c.WhoAmI(ctx)
	if err != nil {
		return err
	}
	if of.output == "json" {
		return writeJSON(stdout, w)
	}
	fmt.Fprintf(stdout, "Key %s (id %s), auth %s.\n", w.Name, dash(w.KeyID), w.Auth)
	return writeKeys(stdout, []client.Key{{ID: w.KeyID, Name: w.Name, Admin: w.Admin, ACLs: w.ACLs, Quota: w.Quota, ExpiresAt: w.ExpiresAt}})
}

func runKeyGenerate(_ context.Context, args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return usageError(synopsisKeyGenerate, "generate takes no arguments")
	}
	token, _, err := auth.NewToken()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, token)
	return err
}

func writeKeys(w io.Writer, keys []client.Key) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tADMIN\tACLS\tQUOTA\tEXPIRES\tLAST USED\tREVOKED")
	for _, k := range keys {
		acls := make([]string, len(k.ACLs))
		for i, a := range k.ACLs {
			name := a.Name
			if a.PatternType == string(auth.PatternPrefix) {
				name += "*"
			}
			acls[i] = strings.Join(a.Operations, ",") + ":" + a.ResourceType + ":" + name
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\t%s\t%s\n", dash(k.ID), k.Name, k.Admin, dash(strings.Join(acls, " ")), quotaText(k.Quota),
			timeOrDash(k.ExpiresAt), timeOrDash(k.LastUsedAt), timeOrDash(k.RevokedAt))
	}
	return tw.Flush()
}

func quotaText(q client.Quota) string {
	var parts []string
	if q.ProduceBytesPerSec > 0 {
		parts = append(parts, "produce "+formatBytes(q.ProduceBytesPerSec)+"/s")
	}
	if q.FetchBytesPerSec > 0 {
		parts = append(parts, "fetch "+formatBytes(q.FetchBytesPerSec)+"/s")
	}
	if q.RequestsPerSec > 0 {
		parts = append(parts, fmt.Sprintf("%g req/s", q.RequestsPerSec))
	}
	return dash(strings.Join(parts, ", "))
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return formatTime(*t)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
