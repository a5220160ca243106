package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"silt/partitioner"
)

// NATSServer is a private nats-server with JetStream on a loopback port.
type NATSServer struct {
	URL    string
	cmd    *exec.Cmd
	dir    string
	exited chan struct{}
}

// StartNATS runs bin (nats-server) with JetStream, file storage in a fresh
// temporary directory, on a free loopback port, and waits until it
// accepts connections.
func StartNATS(ctx context.Context, bin string) (*NATSServer, error) {
	dir, err := os.MkdirTemp("", "silt-bench-nats-")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 3 { // the free port may be taken between probe and start
		port, err := freePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", dir)
		cmd.Stdout, cmd.Stderr = nil, nil
		if err := cmd.Start(); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("start %s: %w", bin, err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		s := &NATSServer{URL: fmt.Sprintf("nats://127.0.0.1:%d", port), cmd: cmd, dir: dir, exited: exited}
		if lastErr = s.waitReady(ctx, exited); lastErr == nil {
			return s, nil
		}
		_ = cmd.Process.Kill()
		<-exited
	}
	os.RemoveAll(dir)
	return nil, fmt.Errorf("nats-server did not start: %w", lastErr)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls until JetStream answers, the process exits, or 20s.
func (s *NATSServer) waitReady(ctx context.Context, exited <-chan struct{}) error {
	deadline := time.Now().Add(20 * time.Second)
	backoff := 10 * time.Millisecond
	for {
		nc, err := nats.Connect(s.URL, nats.Timeout(time.Second))
		if err == nil {
			js, jerr := jetstream.New(nc)
			if jerr == nil {
				actx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, jerr = js.AccountInfo(actx)
				cancel()
			}
			nc.Close()
			if jerr == nil {
				return nil
			}
			err = jerr
		}
		select {
		case <-exited:
			return fmt.Errorf("nats-server exited: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		if time.Now().After(deadline) {
			return err
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

// Stop ends the server and removes its store.
func (s *NATSServer) Stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	os.RemoveAll(s.dir)
}

// RunNATS runs the workload against NATS JetStream: one stream (file
// storage, one replica) with a subject per partition, producers publishing
// asynchronously with acknowledgements (at most Inflight x Batch messages
// outstanding each, the records Silt's producers keep in flight), tailing
// consumers sharing a pull consumer, and a catch-up read of the whole
// stream by a second pull consumer shared the same way.
func RunNATS(ctx context.Context, url string, o Options, pr *Progress) (*RunResult, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Idempotent {
		return nil, errors.New("nats baseline: idempotent producers are not modelled")
	}
	pr.Logf("nats: %s", o.Describe())
	admin, err := nats.Connect(url)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	js, err := jetstream.New(admin)
	if err != nil {
		return nil, err
	}
	name := "BENCH" + stamp()
	subj := "bench." + name
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{subj + ".>"}, Storage: jetstream.FileStorage, Replicas: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("nats: create stream: %w", err)
	}
	defer func() { _ = js.DeleteStream(context.WithoutCancel(ctx), name) }()
	subjects := make([]string, o.Topics*o.Partitions)
	for t := range o.Topics {
		for p := range o.Partitions {
			subjects[t*o.Partitions+p] = fmt.Sprintf("%s.%d.%d", subj, t, p)
		}
	}

	var lv live
	win := newWindow(o)
	res := &RunResult{System: "nats", Options: o}

	// Tailing consumers share one pull consumer created before producing.
	var tailHist *Histogram
	var stopTail func()
	if o.Consumers > 0 {
		cons, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
			Durable: "tail", AckPolicy: jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverNewPolicy,
		})
		if err != nil {
			return nil, fmt.Errorf("nats: tail consumer: %w", err)
		}
		tailHist = NewHistogram()
		var mu sync.Mutex
		stopTail, err = consumeAll(url, cons, o.Consumers, func(data []byte, now time.Time) {
			lv.consumed.Add(1)
			if ts, ok := sendTime(data); ok && win.measuredNanos(ts) {
				mu.Lock()
				tailHist.Record(now.Sub(time.Unix(0, ts)))
				mu.Unlock()
			}
		})
		if err != nil {
			return nil, err
		}
	}

	var last [3]int64
	lastAt := time.Now()
	stopTrack := pr.Track(func() string {
		phase := "nats measure"
		if time.Now().Before(win.from) {
			phase = "nats warmup "
		}
		return lv.status(phase, win.start, &last, &lastAt)
	})
	stats, published, err := natsProduce(ctx, url, o, subjects, win, &lv)
	if err != nil {
		stopTrack()
		if stopTail != nil {
			stopTail()
		}
		return nil, err
	}
	// Let the tail catch up with what was published, within bounds.
	if o.Consumers > 0 {
		deadline := time.Now().Add(30 * time.Second)
		for lv.consumed.Load() < published && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		stopTail()
	}
	stopTrack()

	res.setProduce(stats, o.Duration, tailHist)
	res.Produce.Requests = res.Produce.Records // one publish per record

	if o.CatchUp && o.Consumers > 0 {
		info, err := stream.Info(ctx)
		if err != nil {
			return res, err
		}
		total := int64(info.State.Msgs)
		cons, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
			Durable: "catchup", AckPolicy: jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		if err != nil {
			return res, fmt.Errorf("nats: catch-up consumer: %w", err)
		}
		var n, nbytes atomic.Int64
		all := make(chan struct{})
		var once sync.Once
		start := time.Now()
		stopRead, err := consumeAll(url, cons, o.Consumers, func(data []byte, _ time.Time) {
			nbytes.Add(int64(len(data)))
			if n.Add(1) >= total {
				once.Do(func() { close(all) })
			}
		})
		if err != nil {
			return res, err
		}
		stopTrack := pr.Track(func() string {
			return fmt.Sprintf("nats catch-up %5.0fs  %d of %d records", time.Since(start).Seconds(), n.Load(), total)
		})
		tctx, cancel := context.WithTimeout(ctx, o.CatchUpTimeout)
		select {
		case <-all:
		case <-tctx.Done():
		}
		cancel()
		elapsed := time.Since(start)
		stopTrack()
		stopRead()
		res.CatchUp = &CatchUpFigures{
			Records:       n.Load(),
			Bytes:         nbytes.Load(),
			Seconds:       elapsed.Seconds(),
			RecordsPerSec: perSec(float64(n.Load()), elapsed),
			MBPerSec:      perSec(float64(nbytes.Load()), elapsed) / mb,
			Complete:      n.Load() >= total,
		}
	}
	return res, nil
}

// consumeAll starts n connections consuming from cons; stop ends them.
func consumeAll(url string, cons jetstream.Consumer, n int, fn func(data []byte, now time.Time)) (stop func(), err error) {
	var ccs []jetstream.ConsumeContext
	var conns []*nats.Conn
	stop = func() {
		for _, cc := range ccs {
			cc.Stop()
		}
		for _, nc := range conns {
			nc.Close()
		}
	}
	for range n {
		nc, err := nats.Connect(url)
		if err != nil {
			stop()
			return nil, err
		}
		conns = append(conns, nc)
		js, err := jetstream.New(nc)
		if err != nil {
			stop()
			return nil, err
		}
		c, err := js.Consumer(context.Background(), cons.CachedInfo().Stream, cons.CachedInfo().Name)
		if err != nil {
			stop()
			return nil, err
		}
		cc, err := c.Consume(func(m jetstream.Msg) { fn(m.Data(), time.Now()) }, jetstream.PullMaxMessages(10000))
		if err != nil {
			stop()
			return nil, err
		}
		ccs = append(ccs, cc)
	}
	return stop, nil
}

// natsProduce publishes until the window ends and every publish is
// acknowledged or failed; it returns one stats per producer and the
// number of messages acknowledged.
func natsProduce(ctx context.Context, url string, o Options, subjects []string, win window, lv *live) ([]*producerStats, int64, error) {
	var interval time.Duration
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(o.Batch) * float64(o.Producers) / o.Rate)
	}
	stats := make([]*producerStats, o.Producers)
	var published atomic.Int64
	var wg sync.WaitGroup
	errCh := make(chan error, o.Producers)
	for pi := range o.Producers {
		s := &producerStats{hist: NewHistogram()}
		stats[pi] = s
		var mu sync.Mutex // guards s against the ack handler
		nc, err := nats.Connect(url)
		if err != nil {
			return nil, 0, err
		}
		js, err := jetstream.New(nc,
			jetstream.WithPublishAsyncMaxPending(o.Inflight*o.Batch),
			jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
				now := time.Now()
				published.Add(1)
				lv.acked.Add(1)
				lv.ackedBytes.Add(int64(len(m.Data)))
				ts, _ := sendTime(m.Data)
				if win.measuredNanos(ts) {
					mu.Lock()
					s.hist.Record(now.Sub(time.Unix(0, ts)))
					s.records++
					s.bytes += int64(len(m.Data))
					mu.Unlock()
				}
			}),
			jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
				lv.errors.Add(1)
				mu.Lock()
				s.errors++
				if s.firstErr == nil {
					s.firstErr = err
				}
				mu.Unlock()
			}),
		)
		if err != nil {
			nc.Close()
			return nil, 0, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer nc.Close()
			g := newGenerator(o)
			rr := pi
			for seq := 0; ctx.Err() == nil; seq++ {
				var sched time.Time
				if interval > 0 {
					sched = win.start.Add(time.Duration(seq) * interval)
					if !sched.Before(win.end) || !time.Now().Before(win.end) {
						break
					}
					if d := time.Until(sched); d > 0 {
						select {
						case <-time.After(d):
						case <-ctx.Done():
							return
						}
					}
				} else if sched = time.Now(); !sched.Before(win.end) {
					break
				}
				g.arena = nil // the client keeps each message until its ack
				g.reset(o.Batch)
				sticky := subjects[rr%len(subjects)]
				rr++
				for range o.Batch {
					key := g.key()
					sub := sticky
					if key != nil {
						t := rr % o.Topics
						sub = subjects[t*o.Partitions+int(partitioner.ForKey(key, int32(o.Partitions)))]
					}
					msg := &nats.Msg{Subject: sub, Data: g.value(sched)}
					for {
						_, err := js.PublishMsgAsync(msg, jetstream.WithStallWait(5*time.Second))
						if err == nil {
							break
						}
						if ctx.Err() != nil {
							return
						}
						if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
							errCh <- fmt.Errorf("nats publish: %w", err)
							return
						}
					}
				}
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(60 * time.Second):
				errCh <- errors.New("nats: publishes not acknowledged within 60s")
			case <-ctx.Done():
			}
		}()
	}
	wg.Wait()
	close(errCh)
	if err := <-errCh; err != nil {
		return nil, 0, err
	}
	return stats, published.Load(), ctx.Err()
}
