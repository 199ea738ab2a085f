package main_test

// BenchmarkWSRelay is the WebSocket part of `make bench` (issue 3). The same request/response
// stream of OpenClaw protocol frames goes through a plain frame copy (coder/websocket on both
// sides, no decisions) and through `moltgate serve` (Clerk-identified owner, every frame
// decided by the policy engine), to the same stand-in gateway, in one run; then 10,000 idle
// sockets are held open through moltgate and its RSS is read. The stand-in gateway and the
// plain copy are this test binary re-executed in a role, so each process has its own
// runtime. Figures are printed on lines starting with "bench ". Run it without -race (the
// race detector allows 8128 goroutines).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/moltgate/moltgate/proxy/authn/clerktest"
)

// wsBenchRole runs this binary as the stand-in WebSocket gateway ("wsgateway") or the plain
// frame copy ("wscopy") when asked to, and reports whether it did.
func wsBenchRole() bool {
	var h http.Handler
	switch os.Getenv(benchRoleEnv) {
	case "wsgateway":
		h = http.HandlerFunc(serveBenchGateway)
	case "wscopy":
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			serveFrameCopy(w, r, "ws"+strings.TrimPrefix(os.Getenv("MOLTGATE_BENCH_UPSTREAM"), "http"))
		})
	default:
		return false
	}
	raiseFileLimit()
	ln, err := net.Listen("tcp", os.Getenv("MOLTGATE_BENCH_ADDR"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	(&http.Server{Handler: h}).Serve(ln)
	return true
}

// serveBenchGateway speaks the part of the OpenClaw protocol the bench uses: the challenge,
// then a res for every req.
func serveBenchGateway(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") == "" {
		w.Write([]byte("ok"))
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := r.Context()
	if c.Write(ctx, websocket.MessageText, []byte(`{"type":"event","event":"connect.challenge","payload":{"nonce":"n"}}`)) != nil {
		return
	}
	var f struct {
		ID json.RawMessage `json:"id"`
	}
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		f.ID = nil
		if json.Unmarshal(data, &f) != nil {
			return
		}
		res := append(append([]byte(`{"type":"res","id":`), f.ID...), `,"ok":true,"payload":{"sessions":[]}}`...)
		if c.Write(ctx, websocket.MessageText, res) != nil {
			return
		}
	}
}

// serveFrameCopy is the baseline: accept, dial the gateway, copy frames both ways.
func serveFrameCopy(w http.ResponseWriter, r *http.Request, upstream string) {
	if r.Header.Get("Upgrade") == "" {
		w.Write([]byte("ok"))
		return
	}
	up, _, err := websocket.Dial(r.Context(), upstream, &websocket.DialOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer up.CloseNow()
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true, CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	copyFrames := func(dst, src *websocket.Conn) {
		defer cancel()
		buf := make([]byte, 16<<10)
		for {
			typ, rd, err := src.Reader(ctx)
			if err != nil {
				return
			}
			wr, err := dst.Writer(ctx, typ)
			if err != nil {
				return
			}
			if _, err := io.CopyBuffer(wr, rd, buf); err != nil || wr.Close() != nil {
				return
			}
		}
	}
	go copyFrames(up, c)
	copyFrames(c, up)
}

// raiseFileLimit lifts the open-file limit as far as it may go (the hard limit, unless the
// process may raise that too): 10,000 sockets need more than the usual 1,024 descriptors.
// Children inherit it. It returns the soft limit in force.
func raiseFileLimit() uint64 {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil {
		return 1024
	}
	want := syscall.Rlimit{Cur: 1 << 17, Max: max(l.Max, 1<<17)}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	return l.Cur
}

// wsLoad is one measured run: msgs request/response pairs, with their round-trip times.
type wsLoad struct {
	msgs     int
	rate     float64 // messages per second (a request and its response count as one)
	p50, p99 time.Duration
}

// benchDialer dials from loopback source address 127.0.0.(2+i%100), so that tens of
// thousands of sockets do not run out of ephemeral ports on one address.
func benchDialer(i int) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%100))}, Timeout: 10 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// dialRelayed opens a socket through url with header and completes connect.
func dialRelayed(ctx context.Context, i int, url string, header http.Header) (*websocket.Conn, error) {
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: benchDialer(i), HTTPHeader: header,
		Host: header.Get("Host"), CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return nil, err
	}
	if err := handshakeWS(ctx, c); err != nil {
		c.CloseNow()
		return nil, err
	}
	return c, nil
}

func handshakeWS(ctx context.Context, c *websocket.Conn) error {
	if _, _, err := c.Read(ctx); err != nil {
		return err
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"req","id":"c","method":"connect","params":{}}`)); err != nil {
		return err
	}
	_, data, err := c.Read(ctx)
	if err == nil && !bytes.Contains(data, []byte(`"ok":true`)) {
		err = fmt.Errorf("connect: %s", data)
	}
	return err
}

// runWSLoad drives conns sockets through url for d, each with one request in flight.
func runWSLoad(b *testing.B, url string, header http.Header, conns int, d time.Duration) wsLoad {
	b.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), d+30*time.Second)
	defer cancel()
	socks := make([]*websocket.Conn, conns)
	for i := range socks {
		c, err := dialRelayed(ctx, i, url, header)
		if err != nil {
			b.Fatalf("socket %d to %s: %v", i, url, err)
		}
		socks[i] = c
	}
	var (
		mu    sync.Mutex
		rtts  []time.Duration
		wg    sync.WaitGroup
		stop  atomic.Bool
		fails atomic.Value
	)
	begin := time.Now()
	for _, c := range socks {
		wg.Go(func() {
			defer c.CloseNow()
			local := make([]time.Duration, 0, 1<<14)
			for n := 0; !stop.Load(); n++ {
				id := strconv.Itoa(n)
				req := []byte(`{"type":"req","id":"` + id + `","method":"sessions.list","params":{"limit":20}}`)
				t0 := time.Now()
				if err := c.Write(ctx, websocket.MessageText, req); err != nil {
					fails.Store(err)
					return
				}
				_, data, err := c.Read(ctx)
				if err != nil {
					fails.Store(err)
					return
				}
				local = append(local, time.Since(t0))
				if !bytes.Contains(data, []byte(`"ok":true`)) {
					fails.Store(fmt.Errorf("refused: %s", data))
					return
				}
			}
			mu.Lock()
			rtts = append(rtts, local...)
			mu.Unlock()
		})
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(begin)
	if err, _ := fails.Load().(error); err != nil {
		b.Fatalf("load through %s: %v", url, err)
	}
	slices.Sort(rtts)
	return wsLoad{msgs: len(rtts), rate: float64(len(rtts)) / elapsed.Seconds(),
		p50: rtts[len(rtts)/2], p99: rtts[len(rtts)*99/100]}
}

// rssKiB is the resident set of process pid.
func rssKiB(b *testing.B, pid int) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

func BenchmarkWSRelay(b *testing.B) {
	duration := 5 * time.Second
	if v, err := time.ParseDuration(os.Getenv("MOLTGATE_BENCH_DURATION")); err == nil {
		duration = v
	}
	idle := 10_000
	if v, err := strconv.Atoi(os.Getenv("MOLTGATE_BENCH_WS_IDLE")); err == nil {
		idle = v
	}
	const conns = 32
	// moltgate holds two descriptors per socket (client and gateway side): a machine whose
	// hard limit is lower measures fewer sockets, and says so.
	limit := raiseFileLimit()
	if fit := (int(limit) - 512) / 2; idle > fit {
		fmt.Printf("bench ws_idle_sockets %d, not %d: open-file limit %d, 2 descriptors per socket in moltgate\n", fit, idle, limit)
		idle = fit
	}
	gateway := startRole(b, "wsgateway", "")
	plain := startRole(b, "wscopy", gateway)

	clerk := clerktest.New(b)
	dir := b.TempDir()
	gwTok := filepath.Join(dir, "gw.token")
	os.WriteFile(gwTok, []byte(strings.Repeat("5e", 32)), 0o600)
	// The per-socket message rate limit (default 50/s) would measure the limit, not the
	// relay; the connection limit must admit the idle sockets.
	listen, adminListen, cmd, logs := startBenchServe(b, dir, filepath.Join(dir, "data"),
		fmt.Sprintf("websocket: {messages_per_second: 1000000000, burst: 1000000000, max_conns_per_subject: %d, idle_timeout: 1h}\n", idle+conns+10)+
			clerkConfig(b, clerk))
	add := exec.Command(binary, "gateway", "--admin-url", "http://"+adminListen, "add", "--id", "gwbench", "--tenant", "t-bench",
		"--owner", "user_bench", "--upstream", gateway, "--token-file", gwTok)
	add.Env = append(os.Environ(), "MOLTGATE_ADMIN_TOKEN="+benchAdminToken)
	if out, err := add.CombinedOutput(); err != nil {
		b.Fatalf("gateway add: %v\n%s", err, out)
	}

	jwt := clerk.Mint(clerktest.Claims{Subject: "user_bench", Expiry: time.Now().Add(time.Hour)})
	mgHeader := http.Header{"Host": {"gwbench.gw.localhost"}, "Authorization": {"Bearer " + jwt}}
	plainURL, mgURL := "ws"+strings.TrimPrefix(plain, "http")+"/", "ws://"+listen+"/"
	b.ResetTimer()
	runWSLoad(b, plainURL, http.Header{}, conns, time.Second) // warm both
	runWSLoad(b, mgURL, mgHeader, conns, time.Second)
	var base, mg wsLoad
	for range 2 { // interleaved, the better run of each: the machine's noise hits both alike
		if r := runWSLoad(b, plainURL, http.Header{}, conns, duration); r.rate > base.rate {
			base = r
		}
		if r := runWSLoad(b, mgURL, mgHeader, conns, duration); r.rate > mg.rate {
			mg = r
		}
	}

	// Idle sockets: RSS of moltgate before and after opening them, each settled, and where
	// it goes by moltgate's own Go metrics.
	settle := func() float64 {
		time.Sleep(2 * time.Second)
		return rssKiB(b, cmd.Process.Pid)
	}
	before, goBefore := settle(), goMetrics(b, "http://"+adminListen+"/metrics")
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	defer cancel()
	held := make([]*websocket.Conn, idle)
	defer func() {
		for _, c := range held {
			if c != nil {
				c.CloseNow()
			}
		}
	}()
	next := make(chan int)
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 8 {
		wg.Go(func() {
			for i := range next {
				dctx, dcancel := context.WithTimeout(ctx, 20*time.Second)
				c, err := dialRelayed(dctx, i, mgURL, mgHeader)
				dcancel()
				if err != nil {
					failed.Store(fmt.Errorf("idle socket %d: %w", i, err))
					continue
				}
				c.CloseRead(ctx) // answers moltgate's pings, as an idle client does
				held[i] = c
			}
		})
	}
	for i := range idle {
		next <- i
	}
	close(next)
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatalf("%v\nmoltgate log:\n%s", err, tail(logs.String(), 20))
	}
	after, goAfter := settle(), goMetrics(b, "http://"+adminListen+"/metrics")
	b.StopTimer()
	perSocket := (after - before) / float64(idle)
	per := func(name string) float64 { return (goAfter[name] - goBefore[name]) / float64(idle) }
	for _, l := range []string{
		fmt.Sprintf("bench ws_plain_copy_msgs_per_s %.0f (%d sockets, one request in flight each)", base.rate, conns),
		fmt.Sprintf("bench ws_moltgate_msgs_per_s %.0f (every request decided)", mg.rate),
		fmt.Sprintf("bench ws_msgs_ratio %.2f (target >= 0.70)", mg.rate/base.rate),
		fmt.Sprintf("bench ws_plain_copy_p50_us %.0f p99_us %.0f", us(base.p50), us(base.p99)),
		fmt.Sprintf("bench ws_moltgate_p50_us %.0f p99_us %.0f", us(mg.p50), us(mg.p99)),
		fmt.Sprintf("bench ws_added_p99_us %.0f (per message round trip)", us(mg.p99-base.p99)),
		fmt.Sprintf("bench ws_moltgate_rss_kib %.0f before, %.0f with %d idle sockets", before, after, idle),
		fmt.Sprintf("bench ws_rss_per_idle_socket_kib %.1f (target < 40)", perSocket),
		fmt.Sprintf("bench ws_per_idle_socket goroutines %.2f, stack_kib %.1f, heap_inuse_kib %.1f",
			per("go_goroutines"), per("go_memstats_stack_inuse_bytes")/1024, per("go_memstats_heap_inuse_bytes")/1024),
	} {
		fmt.Println(l)
	}
	b.ReportMetric(mg.rate/base.rate, "ratio")
	b.ReportMetric(us(mg.p99-base.p99), "added-p99-us")
	b.ReportMetric(perSocket, "KiB/idle-socket")
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }

// goMetrics reads the Go runtime gauges from a Prometheus text endpoint.
func goMetrics(b *testing.B, url string) map[string]float64 {
	b.Helper()
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if f := strings.Fields(line); len(f) == 2 && strings.HasPrefix(f[0], "go_") {
			out[f[0]], _ = strconv.ParseFloat(f[1], 64)
		}
	}
	return out
}
