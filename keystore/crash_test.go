package keystore_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moltgate/moltgate/store"
)

const crashDirEnv = "MOLTGATE_TEST_ROTATION_CRASH_DIR"

// TestRotationCrashHelper is the process the crash test kills: it resumes the unfinished
// rotation or starts a new master rotation on the store in $MOLTGATE_TEST_ROTATION_CRASH_DIR,
// printing a line per re-encrypted record. Outside the crash test it does nothing.
func TestRotationCrashHelper(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		return
	}
	kv, err := store.OpenBolt(filepath.Join(dir, "kv.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	w := openWorld(t, kv, filepath.Join(dir, "keyring"), func(n int) { fmt.Fprintf(os.Stdout, "resealed %d\n", n) })
	fmt.Println("started")
	if _, err := w.rot.StartMaster(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := w.rot.RunJob(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	fmt.Println("finished")
}

// TestRotationCrashResume kills the rotating process (SIGKILL) at random points across many
// runs; after every kill, every record still opens from the store, and a final run completes
// the rotation and retires every old master version (issue 4: "kill it and rerun: no record
// lost or left unreadable").
func TestRotationCrashResume(t *testing.T) {
	dir := t.TempDir()
	keyring := writeKeyring(t, dir)
	kvPath := filepath.Join(dir, "kv.db")
	const nKeys, nGateways = 150, 10
	kv, err := store.OpenBolt(kvPath)
	if err != nil {
		t.Fatal(err)
	}
	want := seed(t, openWorld(t, kv, keyring, nil), nKeys, nGateways)
	kv.Close()

	seed := rand.Uint64()
	t.Logf("kill points seeded with %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	run := func(killAt int) (killed bool) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRotationCrashHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		var log []string
		for sc.Scan() {
			line := sc.Text()
			log = append(log, line)
			if !killed && killAt >= 0 && (line == fmt.Sprintf("resealed %d", killAt) || killAt == 0 && line == "started") {
				_ = cmd.Process.Kill()
				killed = true
			}
		}
		err = cmd.Wait()
		if !killed && err != nil {
			t.Fatalf("helper failed: %v\n%s\n%s", err, strings.Join(log, "\n"), stderr.String())
		}
		return killed
	}
	kills, runs := 0, 0
	for ; kills < 10 && runs < 40; runs++ {
		if run(rng.IntN(nKeys + nGateways + 20)) {
			kills++
		}
		kv, err := store.OpenBolt(kvPath)
		if err != nil {
			t.Fatal(err)
		}
		checkAll(t, kv, keyring, want, nGateways)
		kv.Close()
	}
	if kills < 10 {
		t.Fatalf("only %d of %d runs were killed mid-rotation; the test did not test", kills, runs)
	}
	// One uninterrupted run finishes the last (or a new) rotation; then only the current
	// master version is in use and left in the keyring.
	run(-1)
	kv, err = store.OpenBolt(kvPath)
	if err != nil {
		t.Fatal(err)
	}
	defer kv.Close()
	use := checkAll(t, kv, keyring, want, nGateways)
	w := openWorld(t, kv, keyring, nil)
	if job, _, _ := w.rot.Job(""); job.Phase != "done" {
		t.Fatalf("final job: %+v", job)
	}
	cur := w.ks.Ring().Current()
	// Every key record, gateway token and the 4 tenants' fingerprint keys.
	if len(use) != 1 || use[cur] != nKeys+nGateways+4 || len(w.ks.Ring().Versions()) != 1 {
		t.Fatalf("after final run: in use %v, loaded %v, current %d", use, w.ks.Ring().Versions(), cur)
	}
	t.Logf("%d kills in %d runs; master version now %d", kills, runs, cur)
}
