package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"silt/client"
)

const (
	synopsisCreate   = "silt topic create NAME [--partitions N] [--config key=value ...]"
	synopsisList     = "silt topic list"
	synopsisDescribe = "silt topic describe NAME"
	synopsisAlter    = "silt topic alter NAME [--partitions N] [--config key=value ...]"
	synopsisDelete   = "silt topic delete NAME"
)

// topicSubcommands are the verbs of `silt topic`.
var topicSubcommands = []subcommand{
	{"create", synopsisCreate, runTopicCreate},
	{"list", synopsisList, runTopicList},
	{"describe", synopsisDescribe, runTopicDescribe},
	{"alter", synopsisAlter, runTopicAlter},
	{"delete", synopsisDelete, runTopicDelete},
}

// runTopicCmd is `silt topic`.
func runTopicCmd(ctx context.Context, args []string, stdout, _ io.Writer) error {
	return runSubcommand(ctx, args, stdout, topicSubcommands, fmt.Sprintf("Config keys: %s.\n", strings.Join(configKeys(), ", ")))
}

// parseTopicArgs parses the flags and returns the NAME argument when
// withName.
func parseTopicArgs(fs *flagSet, f *outputFlags, args []string, synopsis string, withName bool) (string, *client.Client, error) {
	want := 0
	if withName {
		want = 1
	}
	pos, c, err := f.parse(fs, args, synopsis, want)
	if err != nil || !withName {
		return "", c, err
	}
	return pos[0], c, nil
}

// topicChangeFlags are --partitions and --config of create and alter.
type topicChangeFlags struct {
	partitions int
	config     []string
}

func addTopicChangeFlags(fs *flagSet, partitionsUsage string) *topicChangeFlags {
	f := &topicChangeFlags{}
	fs.IntVar(&f.partitions, "partitions", 0, partitionsUsage)
	fs.ListVar(&f.config, "config", "a topic setting as key=value; repeat for more ("+strings.Join(configKeys(), ", ")+")")
	return f
}

func (f *topicChangeFlags) parse() (int32, client.ConfigPatch, error) {
	if f.partitions < 0 || f.partitions > 1<<31-1 {
		return 0, client.ConfigPatch{}, fmt.Errorf("--partitions %d: want a positive count", f.partitions)
	}
	patch, err := parseConfig(f.config)
	return int32(f.partitions), patch, err
}

func runTopicCreate(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("topic create")
	tf := newOutputFlags(fs)
	cf := addTopicChangeFlags(fs, "partition count (default 1)")
	name, c, err := parseTopicArgs(fs, tf, args, synopsisCreate, true)
	if err != nil {
		return err
	}
	parts, patch, err := cf.parse()
	if err != nil {
		return err
	}
	t, err := c.CreateTopic(ctx, client.NewTopic{Name: name, Partitions: parts, Config: patch})
	if err != nil {
		return err
	}
	if tf.output == "json" {
		return writeJSON(stdout, t)
	}
	fmt.Fprintf(stdout, "Created topic %s.\n", t.Name)
	return writeTopic(stdout, t)
}

func runTopicList(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("topic list")
	tf := newOutputFlags(fs)
	_, c, err := parseTopicArgs(fs, tf, args, synopsisList, false)
	if err != nil {
		return err
	}
	topics, err := c.ListTopics(ctx)
	if err != nil {
		return err
	}
	if tf.output == "json" {
		return writeJSON(stdout, struct {
			Topics []client.Topic `json:"topics"`
		}{Topics: append([]client.Topic{}, topics...)})
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPARTITIONS\tRETENTION.MS\tRETENTION.BYTES\tCLEANUP.POLICY\tCREATED")
	for _, t := range topics {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\n", t.Name, t.Partitions, t.Config.RetentionMs, t.Config.RetentionBytes,
			t.Config.CleanupPolicy, formatTime(t.CreatedAt))
	}
	return tw.Flush()
}

func runTopicDescribe(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("topic describe")
	tf := newOutputFlags(fs)
	name, c, err := parseTopicArgs(fs, tf, args, synopsisDescribe, true)
	if err != nil {
		return err
	}
	t, err := c.DescribeTopic(ctx, name)
	if err != nil {
		return err
	}
	if tf.output == "json" {
		return writeJSON(stdout, t)
	}
	if err := writeTopic(stdout, t); err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PARTITION\tLOG-START\tHIGH-WATERMARK\tBYTES\tOWNER\tLEASE-EPOCH")
	for _, p := range t.PartitionStates {
		owner := p.Owner
		if owner == "" {
			owner = "-"
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%s\t%d\n", p.Partition, p.LogStartOffset, p.HighWatermark, p.Bytes, owner, p.LeaseEpoch)
	}
	return tw.Flush()
}

func runTopicAlter(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("topic alter")
	tf := newOutputFlags(fs)
	cf := addTopicChangeFlags(fs, "new partition count (counts only grow)")
	name, c, err := parseTopicArgs(fs, tf, args, synopsisAlter, true)
	if err != nil {
		return err
	}
	parts, patch, err := cf.parse()
	if err != nil {
		return err
	}
	if parts == 0 && patch.IsZero() {
		return usageError(synopsisAlter, "nothing to change: give --partitions or --config")
	}
	t, err := c.AlterTopic(ctx, name, client.TopicUpdate{Partitions: parts, Config: patch})
	if err != nil {
		return err
	}
	if tf.output == "json" {
		return writeJSON(stdout, t)
	}
	fmt.Fprintf(stdout, "Altered topic %s.\n", t.Name)
	return writeTopic(stdout, t)
}

func runTopicDelete(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("topic delete")
	tf := newOutputFlags(fs)
	name, c, err := parseTopicArgs(fs, tf, args, synopsisDelete, true)
	if err != nil {
		return err
	}
	if err := c.DeleteTopic(ctx, name); err != nil {
		return err
	}
	if tf.output == "json" {
		return writeJSON(stdout, map[string]any{"name": name, "deleted": true})
	}
	_, err = fmt.Fprintf(stdout, "Deleted topic %s.\n", name)
	return err
}

// writeTopic prints a topic's fields and settings.
func writeTopic(w io.Writer, t client.Topic) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Name:\t%s\n", t.Name)
	fmt.Fprintf(tw, "ID:\t%d\n", t.ID)
	fmt.Fprintf(tw, "Partitions:\t%d\n", t.Partitions)
	fmt.Fprintf(tw, "Created:\t%s\n", formatTime(t.CreatedAt))
	fmt.Fprintf(tw, "Updated:\t%s\n", formatTime(t.UpdatedAt))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "Config:\n")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, kv := range configEntries(t.Config) {
		fmt.Fprintf(tw, "  %s\t%s\n", kv[0], kv[1])
	}
	return tw.Flush()
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// configKey describes one topic setting for --config.
type configKey struct {
	name string
	// set parses value into the patch.
	set func(p *client.ConfigPatch, value string) error
	// get renders the setting of a config.
	get func(c client.TopicConfig) string
}

var topicConfigKeys = []configKey{
	{"cleanup.policy",
		func(p *client.ConfigPatch, v string) error {
			switch v {
			case "delete", "compact", "compact,delete", "delete,compact":
				if v == "delete,compact" {
					v = "compact,delete"
				}
				p.CleanupPolicy = &v
				return nil
			}
			return fmt.Errorf("want delete, compact or compact,delete")
		},
		func(c client.TopicConfig) string { return c.CleanupPolicy }},
	{"delete.retention.ms",
		func(p *client.ConfigPatch, v string) error { return setMillis(&p.DeleteRetentionMs, v, false) },
		func(c client.TopicConfig) string { return strconv.FormatInt(c.DeleteRetentionMs, 10) }},
	{"max.message.bytes",
		func(p *client.ConfigPatch, v string) error {
			n, err := parseBytes(v)
			if err != nil || n < 1 || n > 1<<31-1 {
				return fmt.Errorf("want a positive size such as 1048576 or 1MiB")
			}
			n32 := int32(n)
			p.MaxMessageBytes = &n32
			return nil
		},
		func(c client.TopicConfig) string { return strconv.FormatInt(int64(c.MaxMessageBytes), 10) }},
	{"message.timestamp.after.max.ms",
		func(p *client.ConfigPatch, v string) error { return setMillis(&p.TimestampAfterMaxMs, v, false) },
		func(c client.TopicConfig) string { return strconv.FormatInt(c.TimestampAfterMaxMs, 10) }},
	{"message.timestamp.before.max.ms",
		func(p *client.ConfigPatch, v string) error { return setMillis(&p.TimestampBeforeMaxMs, v, false) },
		func(c client.TopicConfig) string { return strconv.FormatInt(c.TimestampBeforeMaxMs, 10) }},
	{"message.timestamp.type",
		func(p *client.ConfigPatch, v string) error {
			if v != "CreateTime" && v != "LogAppendTime" {
				return fmt.Errorf("want CreateTime or LogAppendTime")
			}
			p.TimestampType = &v
			return nil
		},
		func(c client.TopicConfig) string { return c.TimestampType }},
	{"retention.bytes",
		func(p *client.ConfigPatch, v string) error {
			n, err := parseBytes(v)
			if v == "-1" {
				n, err = -1, nil
			}
			if err != nil || n == 0 {
				return fmt.Errorf("want -1 (unlimited) or a positive size such as 1073741824 or 1GiB")
			}
			p.RetentionBytes = &n
			return nil
		},
		func(c client.TopicConfig) string { return strconv.FormatInt(c.RetentionBytes, 10) }},
	{"retention.ms",
		func(p *client.ConfigPatch, v string) error { return setMillis(&p.RetentionMs, v, true) },
		func(c client.TopicConfig) string { return strconv.FormatInt(c.RetentionMs, 10) }},
}

func configKeys() []string {
	out := make([]string, len(topicConfigKeys))
	for i, k := range topicConfigKeys {
		out[i] = k.name
	}
	return out
}

// configEntries lists a config's settings in key order.
func configEntries(c client.TopicConfig) [][2]string {
	out := make([][2]string, len(topicConfigKeys))
	for i, k := range topicConfigKeys {
		out[i] = [2]string{k.name, k.get(c)}
	}
	return out
}

// setMillis parses milliseconds, or a Go duration such as 168h; -1 means
// forever when allowed.
func setMillis(dst **int64, v string, allowForever bool) error {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		d, derr := time.ParseDuration(v)
		if derr != nil {
			return fmt.Errorf("want milliseconds or a duration such as 168h")
		}
		n = d.Milliseconds()
	}
	switch {
	case n == -1 && allowForever:
	case n < 0:
		return fmt.Errorf("must not be negative")
	}
	*dst = &n
	return nil
}

// parseConfig turns --config key=value flags into a patch.
func parseConfig(pairs []string) (client.ConfigPatch, error) {
	var p client.ConfigPatch
	seen := map[string]bool{}
	for _, pair := range pairs {
		k, v, err := splitPair(pair)
		if err != nil {
			return client.ConfigPatch{}, fmt.Errorf("--config %w", err)
		}
		if seen[k] {
			return client.ConfigPatch{}, fmt.Errorf("--config %s is given twice", k)
		}
		seen[k] = true
		i := indexOfConfigKey(k)
		if i < 0 {
			return client.ConfigPatch{}, fmt.Errorf("--config %s: unknown key; known keys: %s", k, strings.Join(configKeys(), ", "))
		}
		if err := topicConfigKeys[i].set(&p, v); err != nil {
			return client.ConfigPatch{}, fmt.Errorf("--config %s=%s: %w", k, v, err)
		}
	}
	return p, nil
}

func indexOfConfigKey(k string) int {
	for i, c := range topicConfigKeys {
		if c.name == k {
			return i
		}
	}
	return -1
}
