package main

// Checks of the deployment files (deploy/, localstack/) against the agent
// itself: its flags and their SILT_* twins, its listen port and probe
// routes, its shutdown timeout and its metric names. Docker is not needed:
// the files are parsed, not run.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"silt/agent"
	"silt/auth"
)

// repoRoot is the repository, seen from cmd/silt.
const repoRoot = "../.."

func repoPath(parts ...string) string { return filepath.Join(append([]string{repoRoot}, parts...)...) }

// agentEnvConfig applies SILT_* settings to the agent's flags as its
// environment would, checking that each name is a flag's twin and each
// value parses. Other names (AWS_*, GOMEMLIMIT, POD_IP) are ignored.
func agentEnvConfig(t *testing.T, where string, env map[string]string) agentConfig {
	t.Helper()
	cfg := defaultAgentConfig()
	fs := newFlagSet("agent")
	agentFlags(fs, &cfg, true)
	byEnv := map[string]string{}
	for name, env := range fs.envs {
		byEnv[env] = name
	}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if !strings.HasPrefix(k, "SILT_") {
			continue
		}
		name, ok := byEnv[k]
		if !ok {
			t.Errorf("%s: %s is not the environment twin of any `silt agent` flag (see docs/configuration.md)", where, k)
			continue
		}
		if err := fs.Set(name, env[k]); err != nil {
			t.Errorf("%s: %s=%q: %v", where, k, env[k], err)
		}
	}
	return cfg
}

// listenPort is the port of a --listen value such as :8080.
func listenPort(t *testing.T, listen string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatalf("listen %q: %v", listen, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("listen %q: %v", listen, err)
	}
	return n
}

// The probe routes exist on the agent and answer 200 when it is healthy.
func TestDeployProbeRoutesExist(t *testing.T) {
	srv, err := agent.New(agent.DefaultConfig(), agent.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			t.Errorf("GET %s: %d", path, rec.Code)
		}
	}
	srv.Drain()
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("GET /readyz while draining: %d, want 503 (load balancers rely on it)", rec.Code)
	}
}

// deployFiles are the configuration files of deploy/ and localstack/.
func deployFiles(t *testing.T, match func(name string) bool) []string {
	t.Helper()
	var out []string
	for _, dir := range []string{"deploy", "localstack"} {
		err := filepath.WalkDir(repoPath(dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && match(d.Name()) {
				out = append(out, p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func isYAML(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}

// yamlDocs decodes every document of a YAML file.
func yamlDocs(t *testing.T, path string) []*yaml.Node {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		docs = append(docs, &n)
	}
}

func TestDeployYAMLParses(t *testing.T) {
	files := deployFiles(t, isYAML)
	if len(files) < 8 {
		t.Fatalf("found only %d YAML files under deploy/ and localstack/: %v", len(files), files)
	}
	for _, f := range files {
		for i, doc := range yamlDocs(t, f) {
			var v any
			if err := doc.Decode(&v); err != nil {
				t.Errorf("%s, document %d: %v", f, i+1, err)
			}
		}
	}
}

// No file under deploy/ or localstack/ (other than Go code) names a SILT_*
// variable that is not an agent flag's twin (or, in instructions, a CLI
// flag's: SILT_TOKEN), in settings or in comments.
func TestDeploySiltEnvNamesAreFlags(t *testing.T) {
	fs := newFlagSet("agent")
	cfg := defaultAgentConfig()
	agentFlags(fs, &cfg, true)
	known := map[string]bool{}
	for _, env := range fs.envs {
		known[env] = true
	}
	cli := newFlagSet("topic")
	addAPIFlags(cli)
	for _, env := range cli.envs {
		known[env] = true
	}
	files := deployFiles(t, func(name string) bool {
		return isYAML(name) || strings.HasSuffix(name, ".env") || strings.HasPrefix(name, "Dockerfile") ||
			strings.HasPrefix(name, "haproxy.cfg") || strings.HasSuffix(name, ".json")
	})
	re := regexp.MustCompile(`SILT_[A-Z0-9_]+`)
	total := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range re.FindAllString(string(b), -1) {
			total++
			if !known[name] {
				t.Errorf("%s: %s is not the environment twin of any `silt agent` flag", f, name)
			}
		}
	}
	if total < 20 {
		t.Fatalf("only %d SILT_* names found; is the scan looking at the right files?", total)
	}
}

// --- docker-compose -------------------------------------------------------

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	EnvFile     []string          `yaml:"env_file"`
	Environment map[string]string `yaml:"environment"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test    []string `yaml:"test"`
		Disable bool     `yaml:"disable"`
	} `yaml:"healthcheck"`
	StopGracePeriod string   `yaml:"stop_grace_period"`
	Command         []string `yaml:"command"`
	Volumes         []string `yaml:"volumes"`
	Ports           []string `yaml:"ports"`
}

// readEnvFile reads a KEY=VALUE file as Compose does (the subset we use).
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: bad line %q", path, line)
		}
		out[k] = v
	}
	return out
}

func TestDockerCompose(t *testing.T) {
	dir := repoPath("localstack")
	path := filepath.Join(dir, "docker-compose.yml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(b, &cf); err != nil {
		t.Fatal(err)
	}
	svcs := cf.Services
	for _, name := range []string{"postgres", "minio", "minio-init", "keys-init", "agent1", "agent2", "agent3", "lb"} {
		if _, ok := svcs[name]; !ok {
			t.Fatalf("no service %s", name)
		}
	}
	conditions := map[string]bool{"service_started": true, "service_healthy": true, "service_completed_successfully": true}
	for name, s := range svcs {
		if s.Image == "" {
			t.Errorf("%s: no image", name)
		}
		oneShot := name == "minio-init" || name == "keys-init"
		if !oneShot && (s.Healthcheck == nil || len(s.Healthcheck.Test) < 2) {
			t.Errorf("%s: no healthcheck (docker compose up --wait needs one)", name)
		}
		for dep, d := range s.DependsOn {
			target, ok := svcs[dep]
			switch {
			case !ok:
				t.Errorf("%s depends on unknown service %s", name, dep)
			case !conditions[d.Condition]:
				t.Errorf("%s depends on %s with condition %q", name, dep, d.Condition)
			case d.Condition == "service_healthy" && target.Healthcheck == nil:
				t.Errorf("%s waits for %s to be healthy, which has no healthcheck", name, dep)
			}
		}
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s publishes %q beyond the loopback interface", name, p)
			}
		}
	}
	if svcs["minio-init"].DependsOn["minio"].Condition != "service_healthy" {
		t.Error("minio-init must wait for a healthy minio")
	}
	// keys-init makes the admin key: an admin `silt keys create` on the
	// agents' database, after Postgres is up.
	ki := svcs["keys-init"]
	if ki.DependsOn["postgres"].Condition != "service_healthy" || len(ki.Command) < 2 || ki.Command[0] != "keys" || ki.Command[1] != "create" ||
		!slices.Contains(ki.Command, "--admin") || ki.Environment["SILT_DATABASE_URL"] != svcs["agent1"].Environment["SILT_DATABASE_URL"] {
		t.Errorf("keys-init: %+v", ki)
	}

	shared := readEnvFile(t, filepath.Join(dir, "agent.env"))
	agents := []string{}
	totalConns := 0
	for name, s := range svcs {
		if !strings.HasPrefix(name, "agent") {
			continue
		}
		agents = append(agents, name)
		if !slices.Contains(s.EnvFile, "agent.env") {
			t.Errorf("%s: does not read agent.env (the settings shared with `make localstack`)", name)
		}
		env := map[string]string{}
		for k, v := range shared {
			env[k] = v
		}
		for k, v := range s.Environment { // environment wins over env_file
			env[k] = v
		}
		cfg := agentEnvConfig(t, name, env)
		for _, k := range []string{"SILT_DATABASE_URL", "SILT_OBJECTSTORE", "SILT_AGENT_ID", "SILT_ADVERTISE_ADDRESS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
			if env[k] == "" {
				t.Errorf("%s: %s is not set", name, k)
			}
		}
		if env["SILT_AGENT_ID"] != name || env["SILT_ADVERTISE_ADDRESS"] != fmt.Sprintf("%s:%d", name, listenPort(t, cfg.Agent.HTTP.Listen)) {
			t.Errorf("%s: agent id %q, advertised %q", name, env["SILT_AGENT_ID"], env["SILT_ADVERTISE_ADDRESS"])
		}
		if err := cfg.finish(); err != nil {
			t.Errorf("%s: the agent would refuse this configuration: %v", name, err)
		}
		checkProbeCommand(t, name, s.Healthcheck.Test, "/readyz", listenPort(t, cfg.Agent.HTTP.Listen))
		grace, err := time.ParseDuration(s.StopGracePeriod)
		if err != nil || grace <= cfg.Agent.ShutdownTimeout {
			t.Errorf("%s: stop_grace_period %q must exceed the shutdown timeout %s (final flush)", name, s.StopGracePeriod, cfg.Agent.ShutdownTimeout)
		}
		if cfg.Agent.HTTP.Auth != agent.AuthRequired {
			t.Errorf("%s: runs with --auth=%s; the local cluster requires keys as production does", name, cfg.Agent.HTTP.Auth)
		}
		if s.DependsOn["keys-init"].Condition != "service_completed_successfully" {
			t.Errorf("%s: must wait for the admin key: %+v", name, s.DependsOn)
		}
		if s.DependsOn["postgres"].Condition != "service_healthy" || s.DependsOn["minio-init"].Condition != "service_completed_successfully" {
			t.Errorf("%s: must wait for a healthy postgres and a created bucket: %+v", name, s.DependsOn)
		}
		if s.Build == nil {
			t.Errorf("%s: not built from deploy/Dockerfile", name)
		} else if _, err := os.Stat(filepath.Join(dir, s.Build.Context, s.Build.Dockerfile)); err != nil || s.Build.Dockerfile != "deploy/Dockerfile" {
			t.Errorf("%s: build %+v: %v", name, *s.Build, err)
		}
		if !strings.Contains(env["SILT_OBJECTSTORE"], "://silt/") || !strings.Contains(svcs["minio-init"].Command[0], "mc mb --ignore-existing silt/silt") {
			t.Errorf("%s: the object store %q is not the bucket minio-init creates", name, env["SILT_OBJECTSTORE"])
		}
		totalConns += cfg.Agent.DBMaxConns + 1 // the pool plus one LISTEN connection
	}
	slices.Sort(agents)

	// Postgres takes every agent's connections.
	pg := svcs["postgres"]
	maxConns := 100
	for i, a := range pg.Command {
		if v, ok := strings.CutPrefix(a, "max_connections="); ok && i > 0 && pg.Command[i-1] == "-c" {
			maxConns, _ = strconv.Atoi(v)
		}
	}
	if totalConns+10 > maxConns {
		t.Errorf("postgres max_connections %d is too small for %d agent connections", maxConns, totalConns)
	}

	// The load balancer: the shared config, every agent behind it.
	lb := svcs["lb"]
	if !slices.Contains(lb.Volumes, "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro") {
		t.Errorf("lb does not mount ./haproxy.cfg: %v", lb.Volumes)
	}
	cfgText, err := os.ReadFile(filepath.Join(dir, "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	var servers []string
	for _, m := range regexp.MustCompile(`(?m)^\s*server (\S+) (\S+)(?: port (\d+))?`).FindAllStringSubmatch(string(cfgText), -1) {
		servers = append(servers, strings.TrimSuffix(m[1]+"="+m[2]+" "+m[3], " "))
	}
	// The HTTP backend, then the Kafka backend (health-checked on the
	// HTTP port); Kafka clients bootstrap from the load balancer's
	// published Kafka port, which every agent advertises.
	var want, wantKafka []string
	for _, a := range agents {
		cfg := agentEnvConfig(t, a, mergeEnv(shared, svcs[a].Environment)).Agent
		httpPort := listenPort(t, cfg.HTTP.Listen)
		want = append(want, fmt.Sprintf("%s=%s:%d", a, a, httpPort))
		wantKafka = append(wantKafka, fmt.Sprintf("%s=%s:%d %d", a, a, listenPort(t, cfg.Kafka.Listen), httpPort))
		if lb.DependsOn[a].Condition != "service_healthy" {
			t.Errorf("lb does not wait for %s to be healthy", a)
		}
		_, adPort, _ := strings.Cut(cfg.Kafka.AdvertisedAddr, ":")
		if !slices.Contains(lb.Ports, "127.0.0.1:"+adPort+":"+adPort) {
			t.Errorf("%s advertises Kafka at %q, which the lb does not publish: %v", a, cfg.Kafka.AdvertisedAddr, lb.Ports)
		}
	}
	if want = append(want, wantKafka...); !slices.Equal(servers, want) {
		t.Errorf("haproxy.cfg servers %v, want the compose agents %v", servers, want)
	}
	if !strings.Contains(string(cfgText), "http-check send meth GET uri /readyz") {
		t.Error("haproxy.cfg does not check /readyz")
	}
}

func mergeEnv(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// checkProbeCommand finds the URL in a health check command and checks
// its path and port.
func checkProbeCommand(t *testing.T, where string, cmd []string, path string, port int) {
	t.Helper()
	for _, a := range cmd {
		if !strings.HasPrefix(a, "http://") {
			continue
		}
		u, err := url.Parse(a)
		if err != nil {
			t.Errorf("%s: probe URL %q: %v", where, a, err)
			return
		}
		if u.Path != path || u.Port() != strconv.Itoa(port) {
			t.Errorf("%s: probe %s, want path %s on port %d", where, a, path, port)
		}
		return
	}
	t.Errorf("%s: no probe URL in %q", where, cmd)
}

// --- Kubernetes -----------------------------------------------------------

type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	node *yaml.Node
	file string
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type k8sContainer struct {
	Name  string `yaml:"name"`
	Image string `yaml:"image"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	EnvFrom []struct {
		ConfigMapRef *struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
		SecretRef *struct {
			Name string `yaml:"name"`
		} `yaml:"secretRef"`
	} `yaml:"envFrom"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	StartupProbe   *k8sProbe `yaml:"startupProbe"`
	Lifecycle      struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
}

type k8sDeployment struct {
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
				SecurityContext               struct {
					RunAsNonRoot *bool `yaml:"runAsNonRoot"`
					RunAsUser    *int  `yaml:"runAsUser"`
				} `yaml:"securityContext"`
				Containers []k8sContainer `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func k8sObjects(t *testing.T) map[string][]k8sObject {
	t.Helper()
	out := map[string][]k8sObject{}
	for _, f := range deployFiles(t, isYAML) {
		if !strings.Contains(f, filepath.Join("deploy", "kubernetes")) {
			continue
		}
		for _, doc := range yamlDocs(t, f) {
			var o k8sObject
			if err := doc.Decode(&o); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.Kind == "" {
				t.Fatalf("%s: a document without a kind", f)
			}
			o.node, o.file = doc, f
			out[o.Kind] = append(out[o.Kind], o)
		}
	}
	return out
}

func one(t *testing.T, objs map[string][]k8sObject, kind string, into any) k8sObject {
	t.Helper()
	if len(objs[kind]) != 1 {
		t.Fatalf("want one %s, found %d", kind, len(objs[kind]))
	}
	o := objs[kind][0]
	if into != nil {
		if err := o.node.Decode(into); err != nil {
			t.Fatalf("%s %s: %v", kind, o.Metadata.Name, err)
		}
	}
	return o
}

// resolvePort maps a probe or target port (a number or a port name) to
// the container port number.
func resolvePort(c k8sContainer, p any) int {
	switch v := p.(type) {
	case int:
		return v
	case string:
		for _, cp := range c.Ports {
			if cp.Name == v {
				return cp.ContainerPort
			}
		}
	}
	return -1
}

func TestKubernetesManifests(t *testing.T) {
	objs := k8sObjects(t)
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	var secret struct {
		StringData map[string]string `yaml:"stringData"`
		Data       map[string]string `yaml:"data"`
	}
	var dep k8sDeployment
	cmObj := one(t, objs, "ConfigMap", &cm)
	secObj := one(t, objs, "Secret", &secret)
	depObj := one(t, objs, "Deployment", &dep)

	// Configuration: the ConfigMap, then the Secret, then the container's
	// own env, as Kubernetes layers them.
	env := mergeEnv(mergeEnv(cm.Data, secret.StringData), secret.Data)
	if len(cm.Data) < 5 {
		t.Fatalf("the ConfigMap holds %d settings", len(cm.Data))
	}
	credentials := map[string]bool{"SILT_DATABASE_URL": true, "SILT_BOOTSTRAP_ADMIN_KEY": true}
	for _, k := range []string{"SILT_DATABASE_URL", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "SILT_BOOTSTRAP_ADMIN_KEY"} {
		if _, ok := cm.Data[k]; ok {
			t.Errorf("ConfigMap holds the credential %s; it belongs in the Secret", k)
		}
	}
	if secret.StringData["SILT_DATABASE_URL"] == "" {
		t.Error("the Secret does not hold SILT_DATABASE_URL (it carries the password)")
	}
	for k := range secret.StringData {
		if strings.HasPrefix(k, "SILT_") && !credentials[k] {
			t.Errorf("the Secret holds %s, which is not a credential; put it in the ConfigMap", k)
		}
	}
	// The admin key's placeholder is not a key: agents refuse to start
	// until it is replaced with a generated one (as an operator would).
	placeholder := secret.StringData["SILT_BOOTSTRAP_ADMIN_KEY"]
	if placeholder == "" {
		t.Fatal("the Secret does not hold SILT_BOOTSTRAP_ADMIN_KEY: nothing would make the first admin key")
	}
	if _, ok := auth.ParseToken(placeholder); ok {
		t.Fatal("the Secret ships a usable admin key; it must be a placeholder")
	}
	generated, _, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	secret.StringData["SILT_BOOTSTRAP_ADMIN_KEY"] = generated
	cs := dep.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("want one container, found %d", len(cs))
	}
	c := cs[0]
	refs := map[string]bool{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil {
			refs["ConfigMap/"+ef.ConfigMapRef.Name] = true
		}
		if ef.SecretRef != nil {
			refs["Secret/"+ef.SecretRef.Name] = true
		}
	}
	if !refs["ConfigMap/"+cmObj.Metadata.Name] || !refs["Secret/"+secObj.Metadata.Name] {
		t.Errorf("the container's envFrom %v does not load ConfigMap %s and Secret %s", refs, cmObj.Metadata.Name, secObj.Metadata.Name)
	}
	for _, e := range c.Env {
		if e.Value != "" { // valueFrom entries: their names are checked by TestDeploySiltEnvNamesAreFlags
			env[e.Name] = e.Value
		}
	}
	env["SILT_BOOTSTRAP_ADMIN_KEY"] = generated
	cfg := agentEnvConfig(t, "kubernetes", env)
	if err := cfg.finish(); err != nil {
		t.Errorf("the agent would refuse this configuration: %v", err)
	}
	port := listenPort(t, cfg.Agent.HTTP.Listen)
	if cfg.Agent.HTTP.Auth != agent.AuthRequired {
		t.Errorf("the agents run with --auth=%s", cfg.Agent.HTTP.Auth)
	}
	// Prometheus scrapes the metrics listener, a port of the container.
	var ann struct {
		Spec struct {
			Template struct {
				Metadata struct {
					Annotations map[string]string `yaml:"annotations"`
				} `yaml:"metadata"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	if err := depObj.node.Decode(&ann); err != nil {
		t.Fatal(err)
	}
	if cfg.Agent.MetricsListen == "" || ann.Spec.Template.Metadata.Annotations["prometheus.io/port"] != strconv.Itoa(listenPort(t, cfg.Agent.MetricsListen)) ||
		resolvePort(c, "metrics") != listenPort(t, cfg.Agent.MetricsListen) {
		t.Errorf("metrics listen %q, scrape port %q: Prometheus must scrape the metrics listener", cfg.Agent.MetricsListen, ann.Spec.Template.Metadata.Annotations["prometheus.io/port"])
	}

	// Probes hit the agent's routes on its listen port.
	probes := map[string]*k8sProbe{"/readyz": c.ReadinessProbe, "/healthz": c.LivenessProbe}
	for path, p := range probes {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("no HTTP probe for %s", path)
			continue
		}
		if p.HTTPGet.Path != path || resolvePort(c, p.HTTPGet.Port) != port {
			t.Errorf("probe %s on port %v (%d), want %s on %d", p.HTTPGet.Path, p.HTTPGet.Port, resolvePort(c, p.HTTPGet.Port), path, port)
		}
	}
	if c.StartupProbe != nil && (c.StartupProbe.HTTPGet == nil || resolvePort(c, c.StartupProbe.HTTPGet.Port) != port) {
		t.Error("the startup probe does not reach the agent's port")
	}

	// Shutdown: the grace period covers the preStop pause and the final flush.
	if c.Lifecycle.PreStop == nil {
		t.Fatal("no preStop hook")
	}
	pause := 0
	if c.Lifecycle.PreStop.Sleep != nil {
		pause = c.Lifecycle.PreStop.Sleep.Seconds
	}
	grace := 30 // Kubernetes' default
	if g := dep.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = *g
	}
	if time.Duration(grace)*time.Second <= time.Duration(pause)*time.Second+cfg.Agent.ShutdownTimeout {
		t.Errorf("terminationGracePeriodSeconds %d must exceed the preStop pause (%ds) plus the shutdown timeout (%s)", grace, pause, cfg.Agent.ShutdownTimeout)
	}
	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
		t.Errorf("resources: %+v", c.Resources)
	}
	// Memory: the agent's limit (the runtime's soft limit, which its
	// budgets follow) sits under the container's, with the headroom
	// docs/deploy.md states; the pod is scheduled for all of it.
	if _, ok := env["GOMEMLIMIT"]; ok {
		t.Error("the manifests set GOMEMLIMIT, which would win over SILT_MEMORY_LIMIT: size the agent with SILT_MEMORY_LIMIT alone")
	}
	if _, ok := cm.Data["SILT_MEMORY_LIMIT"]; !ok {
		t.Error("the ConfigMap does not say SILT_MEMORY_LIMIT, which the container's memory is sized after")
	}
	limit, request := k8sBytes(t, c.Resources.Limits["memory"]), k8sBytes(t, c.Resources.Requests["memory"])
	if agentMem := cfg.Agent.MemoryLimit; limit < agentMem*5/4 || request < agentMem {
		t.Errorf("container memory request %s and limit %s for an agent of --memory-limit %s: want the request at least that and the limit at least 5/4 of it",
			c.Resources.Requests["memory"], c.Resources.Limits["memory"], formatBytes(agentMem))
	}
	sc := dep.Spec.Template.Spec.SecurityContext
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		t.Error("pods must run as a non-root user")
	}
	sel := dep.Spec.Selector.MatchLabels
	for k, v := range sel {
		if dep.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("the deployment's selector %s=%s does not match its pods", k, v)
		}
	}

	// The Service reaches the container's port, and selects the pods.
	var svc struct {
		Spec struct {
			Selector map[string]string `yaml:"selector"`
			Ports    []struct {
				TargetPort any `yaml:"targetPort"`
			} `yaml:"ports"`
		} `yaml:"spec"`
	}
	one(t, objs, "Service", &svc)
	if len(svc.Spec.Ports) == 0 || resolvePort(c, svc.Spec.Ports[0].TargetPort) != port {
		t.Errorf("the Service's target port does not reach the agent's port %d", port)
	}
	for k, v := range svc.Spec.Selector {
		if dep.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("the Service's selector %s=%s does not match the pods", k, v)
		}
	}

	var pdb struct {
		Spec struct {
			MaxUnavailable any `yaml:"maxUnavailable"`
			MinAvailable   any `yaml:"minAvailable"`
			Selector       struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
		} `yaml:"spec"`
	}
	one(t, objs, "PodDisruptionBudget", &pdb)
	if (pdb.Spec.MaxUnavailable == nil) == (pdb.Spec.MinAvailable == nil) || fmt.Sprint(pdb.Spec.Selector.MatchLabels) != fmt.Sprint(sel) {
		t.Errorf("PodDisruptionBudget: %+v", pdb.Spec)
	}
	var hpa struct {
		Spec struct {
			ScaleTargetRef struct {
				Kind string `yaml:"kind"`
				Name string `yaml:"name"`
			} `yaml:"scaleTargetRef"`
			MinReplicas int `yaml:"minReplicas"`
			MaxReplicas int `yaml:"maxReplicas"`
		} `yaml:"spec"`
	}
	one(t, objs, "HorizontalPodAutoscaler", &hpa)
	if hpa.Spec.ScaleTargetRef.Kind != "Deployment" || hpa.Spec.ScaleTargetRef.Name != depObj.Metadata.Name ||
		hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas < hpa.Spec.MinReplicas {
		t.Errorf("HorizontalPodAutoscaler: %+v", hpa.Spec)
	}

	// The kustomization lists every manifest.
	var kz struct {
		Resources []string `yaml:"resources"`
	}
	one(t, objs, "Kustomization", &kz)
	entries, err := os.ReadDir(repoPath("deploy", "kubernetes"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if isYAML(e.Name()) && e.Name() != "kustomization.yaml" && !slices.Contains(kz.Resources, e.Name()) {
			t.Errorf("kustomization.yaml does not list %s", e.Name())
		}
	}
	for _, r := range kz.Resources {
		if _, err := os.Stat(repoPath("deploy", "kubernetes", r)); err != nil {
			t.Errorf("kustomization.yaml: %v", err)
		}
	}
}

// --- Dockerfile -----------------------------------------------------------

// dockerInstruction is one instruction with continuation lines joined.
type dockerInstruction struct {
	Cmd, Args string
}

func parseDockerfile(t *testing.T, path string) [][]dockerInstruction {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var stages [][]dockerInstruction
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := dockerInstruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args)}
		if in.Cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) > 0 {
			stages[len(stages)-1] = append(stages[len(stages)-1], in)
		}
	}
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		flush()
	}
	flush()
	return stages
}

func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, repoPath("deploy", "Dockerfile"))
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, found %d stages", len(stages))
	}
	built := false
	for _, st := range stages[:len(stages)-1] {
		for _, in := range st {
			if in.Cmd == "RUN" && strings.Contains(in.Args, "go build") {
				for _, part := range strings.Split(in.Args, "&&") {
					if strings.Contains(part, "./cmd/silt") {
						built = strings.Contains(part, "CGO_ENABLED=0") && strings.Contains(part, "go build")
					}
				}
			}
		}
	}
	if !built {
		t.Error("no build stage runs `CGO_ENABLED=0 go build ... ./cmd/silt`")
	}
	final := stages[len(stages)-1]
	from := final[0].Args
	if !strings.Contains(from, "distroless/static") && from != "scratch" {
		t.Errorf("the final stage is FROM %s; want distroless static or scratch", from)
	}
	user, entry := "", ""
	for _, in := range final {
		switch in.Cmd {
		case "USER":
			user = in.Args
		case "ENTRYPOINT":
			entry = in.Args
		case "HEALTHCHECK":
			if !strings.Contains(in.Args, "/readyz") {
				t.Errorf("HEALTHCHECK %s does not probe /readyz", in.Args)
			}
		case "ENV":
			k, v, _ := strings.Cut(in.Args, "=")
			agentEnvConfig(t, "Dockerfile ENV", map[string]string{k: v})
		}
	}
	name, _, _ := strings.Cut(user, ":")
	if name == "" || name == "root" || name == "0" {
		t.Errorf("the final stage runs as %q; want a non-root user", user)
	}
	if !strings.Contains(entry, "silt") {
		t.Errorf("ENTRYPOINT %s does not run silt", entry)
	}
}

// --- Grafana --------------------------------------------------------------

// definedMetrics collects the silt_* metric names the Go code defines.
func definedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`"(silt_[a-z0-9_]+)"`)
	out := map[string]bool{}
	err := filepath.WalkDir(repoRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != repoRoot && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			out[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(repoPath("deploy", "grafana", "silt.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string `json:"uid"`
		Title      string `json:"title"`
		Templating struct {
			List []struct {
				Name string `json:"name"`
				Type string `json:"type"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Error("the dashboard needs a uid and a title")
	}
	hasDS := false
	for _, v := range dash.Templating.List {
		hasDS = hasDS || (v.Type == "datasource" && v.Name == "datasource")
	}
	if !hasDS {
		t.Error("the dashboard has no datasource variable; it would be tied to one Grafana")
	}
	defined := definedMetrics(t)
	metricRe := regexp.MustCompile(`\b(silt_[a-z0-9_]+|go_[a-z0-9_]+|process_[a-z0-9_]+)\b`)
	used := map[string]bool{}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, name := range metricRe.FindAllString(tg.Expr, -1) {
				if !strings.HasPrefix(name, "silt_") {
					continue // the Go and process collectors' standard names
				}
				base := name
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(name, suf); ok && defined[b] {
						base = b
					}
				}
				if !defined[base] {
					t.Errorf("panel %q queries %s, which no agent code defines", p.Title, name)
				}
				used[base] = true
			}
		}
	}
	for _, family := range []string{"silt_http_", "silt_batcher_", "silt_fetch_", "silt_objectstore_", "silt_ownership_", "silt_janitor_", "silt_group_lag_records"} {
		found := false
		for name := range used {
			found = found || strings.HasPrefix(name, family)
		}
		if !found {
			t.Errorf("no panel shows %s*", family)
		}
	}
	var unused []string
	for name := range defined {
		if !used[name] && name != "silt_commits" {
			unused = append(unused, name)
		}
	}
	slices.Sort(unused)
	if len(unused) > 0 {
		t.Logf("metrics without a panel: %v", unused)
	}
}

// k8sBytes reads a Kubernetes memory quantity in binary units (512Mi, 1Gi).
func k8sBytes(t *testing.T, q string) int64 {
	t.Helper()
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}} {
		if n, ok := strings.CutSuffix(q, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			if err != nil {
				t.Fatalf("memory quantity %q: %v", q, err)
			}
			return v * u.mult
		}
	}
	t.Fatalf("memory quantity %q: want Ki, Mi or Gi", q)
	return 0
}
