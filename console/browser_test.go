package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"silt/agent"
	"silt/auth"
	"silt/internal/agentd"
	"silt/internal/agenttest"
)

// The console, driven in a real headless Chromium against a real agent
// (real Postgres, MinIO, keys required): the walk through every
// page. It fails on any error the browser's console shows.
func TestConsoleInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("drives a browser against a real agent")
	}
	a, admin := startAgent(t)
	b := newBrowser(t)
	api := &apiClient{t: t, base: a.URL, token: admin}
	topic := fmt.Sprintf("console-%d", time.Now().UnixNano()%1e9)

	// The page asks for a key first, and keeps it for the tab's session.
	b.do(chromedp.Navigate(a.URL + "/ui/"))
	b.wait(`document.querySelector('#login').open`)
	b.do(chromedp.SendKeys(chromedp.ID("login-key"), admin), chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`)))
	b.wait(`document.querySelectorAll('.cards .card').length >= 6`)

	// Topics: create one through the form; the page then shows it.
	b.do(chromedp.Navigate(a.URL + "/ui/#/topics"))
	b.wait(`!!document.querySelector('#create-topic')`)
	b.do(chromedp.SendKeys(chromedp.CSS(`#create-topic input[name=name]`), topic))
	b.set(`#create-topic input[name=partitions]`, "2")
	b.do(chromedp.Click(chromedp.CSS(`#create-topic button[type=submit]`)))
	b.wait(fmt.Sprintf(`location.hash === '#/topics/%s' && document.querySelector('#tail-status')?.dataset.state === 'live'`, topic))
	b.wait(`document.querySelectorAll('[data-partition]').length === 2`)

	// Records produced through the API show up in the live tail.
	old := time.Now().Add(-10 * time.Minute).UnixMilli()
	api.produce(topic, old, "old", 3)
	produced := time.Now()
	b.wait(`document.querySelectorAll('#tail-list .row').length === 3`)
	t.Logf("records produced through the API appeared in the live tail %v after the produce was acknowledged", time.Since(produced).Round(time.Millisecond))
	api.produce(topic, time.Now().UnixMilli(), "new", 3)
	b.wait(`document.querySelectorAll('#tail-list .row').length === 6`)

	// The filter, pause and resume.
	b.do(chromedp.SendKeys(chromedp.ID("tail-filter"), "new"))
	b.wait(`document.querySelectorAll('#tail-list .row').length === 3 && [...document.querySelectorAll('#tail-list .row')].every(r => r.textContent.includes('new'))`)
	b.set("#tail-filter", "")
	b.wait(`document.querySelectorAll('#tail-list .row').length === 6`)
	b.do(chromedp.Click(chromedp.ID("tail-pause")))
	b.wait(`document.querySelector('#tail-status').dataset.state === 'paused'`)
	api.produce(topic, time.Now().UnixMilli(), "while-paused", 1)
	b.do(chromedp.Click(chromedp.ID("tail-pause")))
	b.wait(`document.querySelectorAll('#tail-list .row').length === 7 && document.querySelector('#tail-status').dataset.state === 'live'`)

	// Seek by timestamp: five minutes ago is after the old records.
	seekTo := time.Now().Add(-5 * time.Minute).UTC().Format("2006-01-02T15:04:05")
	b.set("#tail-from", "time")
	b.set("#tail-time", seekTo)
	b.do(chromedp.Click(chromedp.ID("tail-seek")))
	b.wait(`(() => { const rows = [...document.querySelectorAll('#tail-list .row')];
		return rows.length === 4 && rows.every(r => !r.textContent.includes('old')); })()`)
	// A record, pretty-printed.
	b.do(chromedp.Click(chromedp.CSS(`#tail-list .row`)))
	b.wait(`document.querySelector('#tail-detail-value')?.textContent.includes('\n  "batch": "new"')`)
	b.scrollTo("#h-tail")
	b.shot("topic-tail")

	// Alter the topic's retention, confirmed.
	b.do(chromedp.Evaluate[chromedp.Void](`(() => { const i = [...document.querySelectorAll('#h-alter ~ form input')][1];
		i.value = '3600000'; i.dispatchEvent(new Event('input', {bubbles: true})); })()`),
		chromedp.Click(chromedp.CSS(`#h-alter ~ form button[type=submit]`)))
	b.wait(`document.querySelector('#confirm').open && document.querySelector('#confirm-body').textContent.includes('retention.ms 604800000 → 3600000')`)
	b.do(chromedp.Click(chromedp.ID("confirm-ok")))
	b.wait(`document.querySelector('#h-config').parentElement.textContent.includes('3600000')`)

	// The produce form.
	b.do(chromedp.SendKeys(chromedp.CSS(`#produce-form textarea`), `{"from":"the form"}`),
		chromedp.Click(chromedp.CSS(`#produce-form button[type=submit]`)))
	b.wait(`document.querySelector('#produce-form .status').textContent.startsWith('Written to partition')`)
	b.wait(`[...document.querySelectorAll('#tail-list .row')].some(r => r.textContent.includes('the form'))`)

	// A burst larger than the tail keeps: the page holds the last 5,000
	// records and draws only the rows in view.
	api.produce(topic, time.Now().UnixMilli(), "burst", 6000)
	b.wait(`document.querySelector('#tail-status').textContent.includes('5,000 records') &&
		document.querySelectorAll('#tail-list .row').length < 60 &&
		[...document.querySelectorAll('#tail-list .row')].some(r => r.textContent.includes('"n":5999') || r.textContent.includes('"n":5998'))`)

	// A group with lag: its chart has data.
	group := topic + "-readers"
	api.call("POST", "/v1/groups/"+group+"/offsets", map[string]any{"offsets": []map[string]any{{"topic": topic, "partition": 0, "offset": 0}}}, http.StatusNoContent)
	b.do(chromedp.Navigate(a.URL + "/ui/#/groups/" + group))
	b.wait(`Number(document.querySelector('#lag-chart')?.dataset.points) > 0 && /total lag [1-9]/.test(document.querySelector('#group-total-lag').textContent)`)
	b.scrollTo("#main")
	b.shot("group")
	// Reset the empty group's offsets to the end, after a preview.
	b.set("#reset-to", "latest")
	b.do(chromedp.Click(chromedp.CSS(`#h-reset ~ div button[type=submit]`)))
	b.wait(`document.querySelector('#confirm').open && document.querySelector('#confirm-body').textContent.includes('→')`)
	b.do(chromedp.Click(chromedp.ID("confirm-ok")))
	b.wait(`/total lag 0$/.test(document.querySelector('#group-total-lag').textContent)`)

	// The overview once rates are known, the janitor and the keys.
	b.do(chromedp.Navigate(a.URL + "/ui/#/"))
	stop := api.produceInBackground(topic)
	b.wait(`document.querySelector('.cards .card .v')?.textContent.endsWith('/s') && document.querySelectorAll('#main table').length >= 2`)
	b.wait(`Number(document.querySelector('#throughput-chart').dataset.points) >= 6`)
	stop()
	b.shot("overview")
	b.do(chromedp.Navigate(a.URL + "/ui/#/janitor"))
	b.wait(`document.querySelectorAll('#main table tbody tr').length >= 1 && /\d+ \(\d+(\.\d+)? (B|KiB|MiB|GiB)\)/.test(document.querySelector('#main').innerText)`)
	b.shot("janitor")
	b.do(chromedp.Navigate(a.URL + "/ui/#/keys"))
	b.wait(`document.querySelectorAll('#main table').length === 2`)
	b.do(chromedp.SendKeys(chromedp.CSS(`#main form input`), topic+"-reader"),
		chromedp.SendKeys(chromedp.CSS(`#main form textarea`), "consume:topic:"+topic),
		chromedp.Click(chromedp.CSS(`#main form button[type=submit]`)))
	b.wait(`/^silt_[0-9a-f]{16}_[0-9a-f]{64}$/.test(document.querySelector('#new-key')?.textContent)`)
	reader, err := b.run(chromedp.Evaluate[string](`document.querySelector('#new-key').textContent`))
	if err != nil {
		t.Fatal(err)
	}
	b.shot("keys")

	// A key that may only consume sees what it may not do as disabled.
	b.do(chromedp.Click(chromedp.CSS(`#who button`)))
	b.wait(`document.querySelector('#login').open`)
	b.do(chromedp.SendKeys(chromedp.ID("login-key"), reader), chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`)))
	b.do(chromedp.Navigate(a.URL + "/ui/#/topics/" + topic))
	b.wait(`document.querySelector('#tail-status')?.dataset.state === 'live'`)
	b.wait(`document.querySelector('#produce-form button[type=submit]').disabled &&
		document.querySelector('button[aria-label^="Delete topic"]').disabled && !!document.querySelector('.denied')`)
	b.shot("topic-limited-key")
	b.do(chromedp.Click(chromedp.CSS(`#who button`)))
	b.wait(`document.querySelector('#login').open`)
	b.do(chromedp.SendKeys(chromedp.ID("login-key"), admin), chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`)))

	// Delete the topic, confirming by its name.
	b.do(chromedp.Navigate(a.URL + "/ui/#/topics/" + topic))
	b.wait(`!document.querySelector('button[aria-label^="Delete topic"]')?.disabled`)
	b.do(chromedp.Click(chromedp.CSS(`button[aria-label^="Delete topic"]`)))
	b.wait(`document.querySelector('#confirm').open`)
	b.do(chromedp.SendKeys(chromedp.ID("confirm-input"), topic), chromedp.Click(chromedp.ID("confirm-ok")))
	b.wait(`location.hash === '#/topics'`)
	api.call("GET", "/v1/topics/"+topic, nil, http.StatusNotFound)

	// A phone's width: nothing wider than the screen.
	b.do(chromedp.EmulateViewport(390, 844), chromedp.Navigate(a.URL+"/ui/#/topics"))
	b.wait(`!!document.querySelector('#topic-list table') && document.documentElement.scrollWidth <= window.innerWidth`)
	b.shot("topics-phone")
	b.do(chromedp.Navigate(a.URL + "/ui/#/"))
	b.wait(`document.querySelectorAll('#main table').length >= 2 && document.documentElement.scrollWidth <= window.innerWidth`)
	b.shot("overview-phone")
	b.do(chromedp.EmulateViewport(1280, 800))

	// The topic list with 1,000 topics: the first page renders without
	// reading every topic.
	api.createTopics(topic+"-many-", 1000)
	start := time.Now()
	b.do(chromedp.Navigate(a.URL + "/ui/?reload=1#/topics")) // a new page load, not a hash change
	b.wait(`document.querySelectorAll('#topic-list tbody tr').length === 50`)
	t.Logf("topics page with 1,000 topics: first render %v after navigation (page's own count %s ms)",
		time.Since(start).Round(time.Millisecond), b.eval(`document.querySelector('#main').dataset.renderMs`))
	b.shot("topics-1000")
	b.checkConsole()
}

// Under --auth=none the console asks for no key and allows everything.
func TestConsoleAnonymous(t *testing.T) {
	if testing.Short() {
		t.Skip("drives a browser against a real agent")
	}
	a := agenttest.Start(t, agenttest.Options{}) // anonymous
	b := newBrowser(t)
	b.do(chromedp.Navigate(a.URL + "/ui"))
	b.wait(`document.querySelectorAll('.cards .card').length >= 6 && !document.querySelector('#login').open &&
		document.querySelector('#who').textContent.includes('no auth')`)
	b.do(chromedp.Navigate(a.URL + "/ui/#/keys"))
	b.wait(`document.querySelectorAll('#main table').length === 2`)
	b.do(chromedp.Navigate(a.URL + "/ui/#/nowhere"))
	b.wait(`document.querySelector('#main h1')?.textContent === 'Not found'`)
	b.checkConsole()
}

func startAgent(t *testing.T) (*agenttest.Agent, string) {
	t.Helper()
	admin, _, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	a := agenttest.Start(t, agenttest.Options{Bucket: agenttest.MinIOBucket(t), Configure: func(c *agentd.Config) {
		c.HTTP.Auth = agent.AuthRequired
		c.BootstrapAdminKey = admin
		c.Groups.LagHistoryInterval = time.Second
	}})
	return a, admin
}

// browser is a headless Chromium tab; every failure fails the test.
type browser struct {
	t        *testing.T
	ctx      context.Context
	dir      string // screenshots
	mu       sync.Mutex
	problems []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (make test installs Debian's package): %v", err)
	}
	dir := os.Getenv("SILT_CONSOLE_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("lang", "en-US"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx, dir: dir}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException {
				b.mu.Lock()
				b.problems = append(b.problems, fmt.Sprintf("%s %s:%d: %s", m.Type, m.URL, m.Line+1, m.Text))
				b.mu.Unlock()
			}
		}
	}()
	// UTC, so that the times the test types mean what it means.
	if _, err := chromedp.Call(ctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "UTC"}); err != nil {
		t.Fatalf("browser: %v", err)
	}
	t.Cleanup(b.checkConsole)
	return b
}

func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail("browser: %v", err)
	}
}

func (b *browser) run(a chromedp.Action[string]) (string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	return chromedp.Run(ctx, a)
}

func (b *browser) eval(expr string) string {
	b.t.Helper()
	s, err := b.run(chromedp.Evaluate[string](expr))
	if err != nil {
		b.fail("evaluate %s: %v", expr, err)
	}
	return s
}

// set sets a control's value as a person's typing would: input and
// change events follow.
func (b *browser) set(sel, value string) {
	b.t.Helper()
	js, _ := json.Marshal([]string{sel, value})
	b.do(chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(([s, v]) => { const el = document.querySelector(s); el.value = v;
		el.dispatchEvent(new Event('input', {bubbles: true})); el.dispatchEvent(new Event('change', {bubbles: true})); })(%s)`, js)))
}

// wait polls a JavaScript condition until it holds (30 s at most).
func (b *browser) wait(cond string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 40*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		b.fail("waiting for %s: %v", strings.Join(strings.Fields(cond), " "), err)
	}
}

func (b *browser) fail(format string, args ...any) {
	b.t.Helper()
	b.shot("failure")
	text, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.querySelector('#main')?.innerText.slice(0, 2000) ?? ''`))
	b.t.Fatalf(format+"\npage: %s", append(args, text)...)
}

// scrollTo brings an element to the top of the viewport.
func (b *browser) scrollTo(sel string) {
	b.t.Helper()
	js, _ := json.Marshal(sel)
	b.do(chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.querySelector(%s).scrollIntoView()`, js)))
}

// shot saves a screenshot of the viewport as a test artifact, once the
// page's status messages are gone.
func (b *browser) shot(name string) {
	b.t.Helper()
	if name != "failure" {
		b.wait(`document.querySelectorAll('.toast').length === 0`)
	}
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(b.dir, name+".png")
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	b.t.Logf("screenshot %s", path)
}

// checkConsole fails the test if the browser's console showed an error.
func (b *browser) checkConsole() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		b.t.Errorf("browser console: %s", p)
	}
	b.problems = nil
}

// apiClient calls the agent's API with a key.
type apiClient struct {
	t     *testing.T
	base  string
	token string
}

func (c *apiClient) call(method, path string, body any, want int) []byte {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	if resp.StatusCode != want {
		c.t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, b, want)
	}
	return b
}

// produce writes n records with the timestamp to partitions 0 and 1 in
// turn, each a JSON object naming its batch.
func (c *apiClient) produce(topic string, ts int64, batch string, n int) {
	c.t.Helper()
	recs := make([]map[string]any, n)
	for i := range recs {
		recs[i] = map[string]any{"key": fmt.Sprintf("k%d", i), "value": map[string]any{"batch": batch, "n": i},
			"timestamp": ts, "partition": i % 2, "headers": []map[string]any{{"key": "source", "value": "test"}}}
	}
	c.call("POST", "/v1/topics/"+topic+"/records", map[string]any{"records": recs}, http.StatusOK)
}

// produceInBackground produces small batches until stopped, so that the
// overview has rates to show.
func (c *apiClient) produceInBackground(topic string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 600; i++ {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			body, _ := json.Marshal(map[string]any{"records": []map[string]any{{"value": map[string]any{"tick": i}}, {"value": map[string]any{"tick": i}}}})
			req, _ := http.NewRequest("POST", c.base+"/v1/topics/"+topic+"/records", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+c.token)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// createTopics creates n topics named prefix0, prefix1, … eight at a time.
func (c *apiClient) createTopics(prefix string, n int) {
	c.t.Helper()
	var wg sync.WaitGroup
	next := make(chan int)
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				b, _ := json.Marshal(map[string]any{"name": fmt.Sprintf("%s%04d", prefix, i), "partitions": 1})
				req, _ := http.NewRequest("POST", c.base+"/v1/topics", bytes.NewReader(b))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+c.token)
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusCreated {
						err = fmt.Errorf("create topic %d: %s", i, resp.Status)
					}
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		c.t.Fatal(err)
	}
}
