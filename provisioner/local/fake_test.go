package local_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain runs the test binary as a fake OpenClaw gateway when the driver starts it
// ("openclaw gateway run --port N"), and as the tests otherwise.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "gateway" && os.Args[2] == "run" {
		os.Exit(fakeOpenClaw(os.Args[3:]))
	}
	os.Exit(m.Run())
}

// fakeOpenClaw behaves as much like the real gateway as the driver can see: it refuses a
// second process on the same state directory (OpenClaw's state lock), answers /readyz and
// /startupz once "started", reads its token from its config on every request (the real one
// applies a changed token by itself) and refuses any other on /control-ui-config.json,
// and stops on SIGTERM. GET /_fake/env tells what its environment holds: the SHA-256 of
// each *_API_KEY, and the names of every variable.
func fakeOpenClaw(args []string) int {
	port := ""
	for i, a := range args {
		if a == "--port" && i+1 < len(args) {
			port = args[i+1]
		}
	}
	cfgPath := os.Getenv("OPENCLAW_CONFIG_PATH")
	lock, err := os.OpenFile(filepath.Join(os.Getenv("OPENCLAW_STATE_DIR"), "gateway.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake openclaw:", err)
		return 1
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		fmt.Fprintln(os.Stderr, "fake openclaw: gateway already running (state lock held)")
		return 1
	}
	type fakeCfg struct {
		Gateway struct {
			Auth struct {
				Token string `json:"token"`
			} `json:"auth"`
		} `json:"gateway"`
		Fake struct {
			StartMs int `json:"startMs"`
		} `json:"fake"`
	}
	read := func() fakeCfg {
		var c fakeCfg
		b, _ := os.ReadFile(cfgPath)
		json.Unmarshal(b, &c)
		return c
	}
	start := time.Now()
	startAfter := time.Duration(read().Fake.StartMs) * time.Millisecond
	mux := http.NewServeMux()
	for _, p := range []string{"/readyz", "/startupz"} {
		mux.HandleFunc("GET "+p, func(w http.ResponseWriter, _ *http.Request) {
			if time.Since(start) < startAfter {
				http.Error(w, `{"ok":false,"status":"starting"}`, http.StatusServiceUnavailable)
				return
			}
			w.Write([]byte(`{"ok":true}`))
		})
	}
	mux.HandleFunc("GET /control-ui-config.json", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+read().Gateway.Auth.Token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		w.Write([]byte(`{}`))
	})
	mux.HandleFunc("GET /_fake/env", func(w http.ResponseWriter, _ *http.Request) {
		out := map[string]string{}
		for _, kv := range os.Environ() {
			k, v, _ := strings.Cut(kv, "=")
			out[k] = ""
			if strings.HasSuffix(k, "_API_KEY") {
				h := sha256.Sum256([]byte(v))
				out[k] = hex.EncodeToString(h[:])
			}
		}
		json.NewEncoder(w).Encode(out)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake openclaw: EADDRINUSE:", err)
		return 1
	}
	srv := &http.Server{Handler: mux}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	go srv.Serve(ln)
	<-ctx.Done()
	srv.Close()
	return 0
}
