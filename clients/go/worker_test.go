package muster

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const wait = 3 * time.Second

// startWorker runs w in the background; the returned channel gets Run's
// result. The worker is closed when the test ends.
func startWorker(t *testing.T, w *Worker) <-chan error {
	t.Helper()
	w.minHealthy = 0
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	t.Cleanup(func() { w.Close() })
	return done
}

func newTestWorker(t *testing.T, opts Options) *Worker {
	t.Helper()
	if opts.ID == "" {
		opts.ID = "w-test"
	}
	w, err := NewWorker(opts)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func TestHelloHeartbeatsAndSet(t *testing.T) {
	d := newFakeDaemon(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("  s3cret \nsecond line\n"), 0o600)
	w := newTestWorker(t, Options{ID: "w1", Addrs: []string{d.addr()}, TokenFile: tokenFile,
		Labels: map[string]string{"pool": "scan"}, Capacity: 3, Hostname: "h1", PID: 42})
	noop := func(ctx context.Context, t *Task) (any, error) { return nil, nil }
	w.Handle("resize", noop)
	w.Handle("crop", noop)
	startWorker(t, w)

	c := d.conn(wait)
	h := c.hello
	if h["worker_id"] != "w1" || h["token"] != "s3cret" || h["capacity"] != 3.0 ||
		h["hostname"] != "h1" || h["pid"] != 42.0 {
		t.Fatalf("hello %v", h)
	}
	if !reflect.DeepEqual(h["task_types"], []any{"crop", "resize"}) {
		t.Fatalf("task_types %v", h["task_types"])
	}
	if !reflect.DeepEqual(h["labels"], map[string]any{"pool": "scan"}) {
		t.Fatalf("labels %v", h["labels"])
	}
	if _, ok := h["running"]; ok {
		t.Fatalf("a first hello re-reports nothing: %v", h)
	}

	// Beats at the welcome's interval (50 ms), seq counting up.
	start := time.Now()
	var seqs []float64
	for i := 0; i < 4; i++ {
		hb := c.heartbeat(t, wait)
		if hb["status"] != "idle" || hb["worker_id"] != nil || hb["token"] != nil {
			t.Fatalf("heartbeat %v", hb)
		}
		seqs = append(seqs, hb["seq"].(float64))
	}
	if el := time.Since(start); el < 100*time.Millisecond || el > 2*time.Second {
		t.Fatalf("4 beats in %v at a 50 ms interval", el)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("seq %v", seqs)
		}
	}

	err := w.Set(Status(StatusWorking), QueueDepth(3), CPUUsage(12.5), MemoryUsage(40),
		CurrentJob(&Job{ID: "j1", Type: "scan", Files: 2, StartedAt: time.UnixMilli(1733808005000)}))
	if err != nil {
		t.Fatal(err)
	}
	hb := c.heartbeat(t, wait)
	for hb["status"] != "working" {
		hb = c.heartbeat(t, wait)
	}
	job := hb["current_job"].(map[string]any)
	if hb["queue_depth"] != 3.0 || hb["cpu_usage"] != 12.5 || hb["memory_usage"] != 40.0 ||
		job["id"] != "j1" || job["type"] != "scan" || job["files"] != 2.0 || job["started_at"] != 1733808005000.0 {
		t.Fatalf("heartbeat after Set %v", hb)
	}

	// Refused before sending: too large, or a bad value. Nothing changes.
	err = w.Set(Status(StatusError), CurrentJob(&Job{ID: strings.Repeat("x", 70000)}))
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized Set: %v", err)
	}
	big := json.RawMessage(`{"id":"big","files":["` + strings.Repeat("x", 70000) + `"]}`)
	if err := w.Set(CurrentJobJSON(big)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized raw job: %v", err)
	}
	mid := json.RawMessage(`{"id":"mid","tags":["` + strings.Repeat("x", 20000) + `"]}`)
	if err := w.Set(CurrentJobJSON(mid)); !errors.Is(err, ErrFrameTooLarge) || !strings.Contains(err.Error(), "max_worker_state_bytes") {
		t.Fatalf("a job over the state limit: %v", err)
	}
	if err := w.Set(CurrentJobJSON(json.RawMessage(`[1]`))); err == nil {
		t.Fatal("a job that is not an object was taken")
	}
	if err := w.Set(Status("sleepy")); err == nil {
		t.Fatal("a bad status was taken")
	}
	if err := w.Set(MemoryUsage(101)); err == nil {
		t.Fatal("memory over 100% was taken")
	}
	if err := w.Set(CurrentJob(&Job{ID: strings.Repeat("x", 300)})); err == nil {
		t.Fatal("a 300-byte job id was taken")
	}
	hb = c.heartbeat(t, wait)
	if hb["status"] != "working" {
		t.Fatalf("a refused Set changed the state: %v", hb)
	}
	// The connection is kept and takes the next Set.
	if err := w.Set(Status(StatusIdle), CurrentJob(nil)); err != nil {
		t.Fatal(err)
	}
	for hb["status"] != "idle" {
		hb = c.heartbeat(t, wait)
	}
	if v, ok := hb["current_job"]; !ok || v != nil {
		t.Fatalf("current_job not cleared: %v", hb)
	}
	d.noConn(100 * time.Millisecond)

	if err := w.Set(CurrentJobJSON(json.RawMessage(` {"id": 7, "extra": [1]} `))); err != nil {
		t.Fatal(err)
	}
	for hb["current_job"] == nil {
		hb = c.heartbeat(t, wait)
	}
	if !reflect.DeepEqual(hb["current_job"], map[string]any{"id": 7.0, "extra": []any{1.0}}) {
		t.Fatalf("raw job %v", hb["current_job"])
	}

	w.RecordRun(1500*time.Millisecond, false)
	f := c.next(t, wait)
	if f["type"] != "run" || f["duration_ms"] != 1500.0 || f["ok"] != false {
		t.Fatalf("run frame %v", f)
	}
}

func TestTasks(t *testing.T) {
	d := newFakeDaemon(t)
	w := newTestWorker(t, Options{Addrs: []string{d.addr()}, Capacity: 4})
	w.Handle("echo", func(ctx context.Context, task *Task) (any, error) {
		task.Log("one", "two")
		task.Progress(0.5, "halfway")
		return map[string]any{"echo": task.Payload, "attempt": task.Attempt}, nil
	})
	w.Handle("fail", func(ctx context.Context, task *Task) (any, error) {
		return nil, NonRetryable(errors.New("boom"))
	})
	w.Handle("flaky", func(ctx context.Context, task *Task) (any, error) {
		return nil, errors.New("try again")
	})
	w.Handle("panic", func(ctx context.Context, task *Task) (any, error) {
		panic("oops")
	})
	startWorker(t, w)
	c := d.conn(wait)

	c.send(map[string]any{"type": "task", "task_id": "t1", "task_type": "echo", "payload": map[string]any{"a": 1}, "attempt": 2})
	want := []string{"running", "log", "progress", "succeeded"}
	for _, step := range want {
		f := c.next(t, wait)
		switch step {
		case "running":
			if f["type"] != "task_update" || f["state"] != "running" || f["task_id"] != "t1" {
				t.Fatalf("want running, got %v", f)
			}
		case "log":
			if f["type"] != "task_log" || !reflect.DeepEqual(f["lines"], []any{"one", "two"}) {
				t.Fatalf("want log, got %v", f)
			}
		case "progress":
			if f["type"] != "task_progress" || f["fraction"] != 0.5 || f["message"] != "halfway" {
				t.Fatalf("want progress, got %v", f)
			}
		case "succeeded":
			res, _ := f["result"].(map[string]any)
			if f["state"] != "succeeded" || res == nil || res["attempt"] != 2.0 ||
				!reflect.DeepEqual(res["echo"], map[string]any{"a": 1.0}) {
				t.Fatalf("want succeeded, got %v", f)
			}
		}
	}

	ends := map[string]map[string]any{}
	for _, typ := range []string{"fail", "flaky", "panic", "nobody"} {
		c.send(map[string]any{"type": "task", "task_id": "t-" + typ, "task_type": typ, "payload": nil, "attempt": 1})
	}
	for len(ends) < 4 {
		f := c.next(t, wait)
		if f["type"] == "task_update" && f["state"] != "running" {
			ends[f["task_id"].(string)] = f
		}
	}
	check := func(id, errText string, retryable bool) {
		f := ends[id]
		if f["state"] != "failed" || !strings.Contains(f["error"].(string), errText) || f["retryable"] != retryable {
			t.Errorf("%s: %v", id, f)
		}
	}
	check("t-fail", "boom", false)
	check("t-flaky", "try again", true)
	check("t-panic", "panic: oops", true)
	check("t-nobody", "no handler", false)
}

func TestCancel(t *testing.T) {
	d := newFakeDaemon(t)
	w := newTestWorker(t, Options{Addrs: []string{d.addr()}, Capacity: 1})
	saw := make(chan error, 1)
	w.Handle("wait", func(ctx context.Context, task *Task) (any, error) {
		<-ctx.Done()
		task.Log("cancel seen")
		saw <- ctx.Err()
		return map[string]any{"ignored": true}, nil
	})
	startWorker(t, w)
	c := d.conn(wait)
	c.send(map[string]any{"type": "task", "task_id": "t1", "task_type": "wait", "attempt": 1})
	if f := c.next(t, wait); f["state"] != "running" {
		t.Fatalf("%v", f)
	}
	c.send(map[string]any{"type": "cancel", "task_id": "t1"})
	if f := c.next(t, wait); f["type"] != "task_log" || !reflect.DeepEqual(f["lines"], []any{"cancel seen"}) {
		t.Fatalf("%v", f)
	}
	if f := c.next(t, wait); f["type"] != "task_update" || f["state"] != "cancelled" || f["result"] != nil {
		t.Fatalf("%v", f)
	}
	if err := <-saw; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

func TestCapacityAndTimeout(t *testing.T) {
	d := newFakeDaemon(t)
	w := newTestWorker(t, Options{Addrs: []string{d.addr()}, Capacity: 1})
	release := make(chan struct{})
	var running int32
	w.Handle("block", func(ctx context.Context, task *Task) (any, error) {
		if atomic.AddInt32(&running, 1) > 1 {
			t.Error("two handlers at once with capacity 1")
		}
		defer atomic.AddInt32(&running, -1)
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return "done", nil
	})
	startWorker(t, w)
	c := d.conn(wait)
	c.send(map[string]any{"type": "task", "task_id": "a", "task_type": "block", "attempt": 1})
	c.send(map[string]any{"type": "task", "task_id": "b", "task_type": "block", "attempt": 1})
	if f := c.next(t, wait); f["task_id"] != "a" || f["state"] != "running" {
		t.Fatalf("%v", f)
	}
	c.quiet(t, 150*time.Millisecond) // b waits for a's slot
	release <- struct{}{}
	if f := c.next(t, wait); f["task_id"] != "a" || f["state"] != "succeeded" || f["result"] != "done" {
		t.Fatalf("%v", f)
	}
	if f := c.next(t, wait); f["task_id"] != "b" || f["state"] != "running" {
		t.Fatalf("%v", f)
	}
	// cancelled while waiting for a slot: reported cancelled, never run
	c.send(map[string]any{"type": "task", "task_id": "c", "task_type": "block", "attempt": 1})
	c.send(map[string]any{"type": "cancel", "task_id": "c"})
	if f := c.next(t, wait); f["task_id"] != "c" || f["state"] != "cancelled" {
		t.Fatalf("%v", f)
	}
	release <- struct{}{}
	if f := c.next(t, wait); f["task_id"] != "b" || f["state"] != "succeeded" {
		t.Fatalf("%v", f)
	}
	// timeout_ms ends the handler's context
	c.send(map[string]any{"type": "task", "task_id": "d", "task_type": "block", "attempt": 1, "timeout_ms": 50})
	if f := c.next(t, wait); f["task_id"] != "d" || f["state"] != "running" {
		t.Fatalf("%v", f)
	}
	if f := c.next(t, wait); f["task_id"] != "d" || f["state"] != "failed" || !strings.Contains(f["error"].(string), "deadline") {
		t.Fatalf("%v", f)
	}
}

func TestReconnectReReportsAndDelivers(t *testing.T) {
	d := newFakeDaemon(t)
	w := newTestWorker(t, Options{Addrs: []string{d.addr()}, Capacity: 2})
	step := make(chan struct{})
	w.Handle("long", func(ctx context.Context, task *Task) (any, error) {
		<-step
		task.Log("while away")
		task.Progress(0.9, "dropped while away")
		<-step
		return "ok", nil
	})
	w.unconfirmedFor = 300 * time.Millisecond
	startWorker(t, w)
	c1 := d.conn(wait)
	c1.send(map[string]any{"type": "task", "task_id": "t1", "task_type": "long", "attempt": 1, "lease": 7})
	c1.send(map[string]any{"type": "task", "task_id": "t2", "task_type": "long", "attempt": 1})
	c1.next(t, wait)
	c1.next(t, wait)
	c1.send(map[string]any{"type": "lease", "task_id": "t2", "lease": 9})
	time.Sleep(50 * time.Millisecond)

	// The connection drops; the next one is held before its hello.
	gate := make(chan struct{})
	d.mu.Lock()
	d.gate = gate
	d.mu.Unlock()
	c1.c.Close()
	time.Sleep(100 * time.Millisecond)
	step <- struct{}{}
	step <- struct{}{} // both tasks log while disconnected
	step <- struct{}{}
	step <- struct{}{} // and end
	time.Sleep(50 * time.Millisecond)
	d.mu.Lock()
	d.gate = nil
	d.mu.Unlock()
	close(gate)

	c2 := d.conn(wait)
	running := c2.hello["running"]
	want := []any{
		map[string]any{"task_id": "t1", "lease": 7.0},
		map[string]any{"task_id": "t2", "lease": 9.0},
	}
	if !reflect.DeepEqual(running, want) {
		t.Fatalf("hello running %v", running)
	}
	// Held until the daemon had its chance to cancel them.
	c2.quiet(t, 200*time.Millisecond)
	logs, ends := 0, 0
	for logs < 2 || ends < 2 {
		f := c2.next(t, wait)
		switch {
		case f["type"] == "task_log":
			logs++
		case f["type"] == "task_update" && f["state"] == "succeeded":
			ends++
		case f["type"] == "task_progress":
			t.Fatalf("progress kept across the reconnect: %v", f)
		}
	}
	// Once their ends are sent, the tasks are not re-reported again.
	time.Sleep(50 * time.Millisecond)
	if r := w.Running(); len(r) != 0 {
		t.Fatalf("still running %v", r)
	}
}

func TestClusterLeaseReleasesWhatWaited(t *testing.T) {
	d := newFakeDaemon(t)
	d.mu.Lock()
	d.nodes = []string{d.addr()} // cluster mode
	d.mu.Unlock()
	w := newTestWorker(t, Options{Addrs: []string{d.addr()}, Capacity: 2})
	step := make(chan struct{})
	w.Handle("long", func(ctx context.Context, task *Task) (any, error) {
		<-step
		task.Log("after the reconnect")
		<-step
		return "ok", nil
	})
	w.unconfirmedFor = 10 * time.Second
	startWorker(t, w)
	c1 := d.conn(wait)
	c1.send(map[string]any{"type": "task", "task_id": "t1", "task_type": "long", "attempt": 1, "lease": 5})
	c1.next(t, wait)
	c1.c.Close()
	c2 := d.conn(wait)
	if want := []any{map[string]any{"task_id": "t1", "lease": 5.0}}; !reflect.DeepEqual(c2.hello["running"], want) {
		t.Fatalf("hello %v", c2.hello)
	}
	step <- struct{}{}
	c2.quiet(t, 150*time.Millisecond) // waits for the node's answer
	c2.send(map[string]any{"type": "lease", "task_id": "t1", "lease": 11})
	if f := c2.next(t, wait); f["type"] != "task_log" {
		t.Fatalf("%v", f)
	}
	// The new lease is what the next hello re-reports.
	c2.c.Close()
	c3 := d.conn(wait)
	if want := []any{map[string]any{"task_id": "t1", "lease": 11.0}}; !reflect.DeepEqual(c3.hello["running"], want) {
		t.Fatalf("hello %v", c3.hello)
	}
	c3.send(map[string]any{"type": "lease", "task_id": "t1", "lease": 12})
	step <- struct{}{}
	if f := c3.next(t, wait); f["state"] != "succeeded" {
		t.Fatalf("%v", f)
	}
}

func TestReReportedTaskCancelledIsDropped(t *testing.T) {
	d := newFakeDaemon(t)
	w := newTestWorker(t, Options{Addrs: []string{d.addr()}, Capacity: 2})
	stopped := make(chan struct{})
	w.Handle("long", func(ctx context.Context, task *Task) (any, error) {
		<-ctx.Done()
		task.Log("cancel seen")
		close(stopped)
		return nil, ctx.Err()
	})
	startWorker(t, w)
	c1 := d.conn(wait)
	c1.send(map[string]any{"type": "task", "task_id": "t1", "task_type": "long", "attempt": 1})
	c1.next(t, wait)
	c1.c.Close()
	c2 := d.conn(wait)
	if r, _ := c2.hello["running"].([]any); len(r) != 1 {
		t.Fatalf("hello %v", c2.hello)
	}
	// A single node does not hold it any more: cancel. Nothing more is
	// said of that attempt, and the daemon may send the task again.
	c2.send(map[string]any{"type": "cancel", "task_id": "t1"})
	select {
	case <-stopped:
	case <-time.After(wait):
		t.Fatal("the handler was not stopped")
	}
	c2.quiet(t, 200*time.Millisecond)
	if r := w.Running(); len(r) != 0 {
		t.Fatalf("still running %v", r)
	}
}

func TestSameTaskSentAgainSupersedesTheOldAttempt(t *testing.T) {
	d := newFakeDaemon(t)
	w := newTestWorker(t, Options{Addrs: []string{d.addr()}, Capacity: 2})
	release := make(chan struct{})
	w.Handle("job", func(ctx context.Context, task *Task) (any, error) {
		if task.Attempt == 1 {
			<-ctx.Done()
			<-release
			task.Log("old attempt")
			return "old", nil
		}
		return "new", nil
	})
	startWorker(t, w)
	c := d.conn(wait)
	c.send(map[string]any{"type": "task", "task_id": "t1", "task_type": "job", "attempt": 1})
	c.next(t, wait)
	c.send(map[string]any{"type": "task", "task_id": "t1", "task_type": "job", "attempt": 2})
	if f := c.next(t, wait); f["state"] != "running" {
		t.Fatalf("%v", f)
	}
	if f := c.next(t, wait); f["state"] != "succeeded" || f["result"] != "new" {
		t.Fatalf("%v", f)
	}
	close(release)
	c.quiet(t, 150*time.Millisecond)
}

func TestTaskNotHeldDropsReports(t *testing.T) {
	d := newFakeDaemon(t)
	w := newTestWorker(t, Options{Addrs: []string{d.addr()}, Capacity: 1})
	next := make(chan struct{})
	ctxErr := make(chan error, 1)
	w.Handle("job", func(ctx context.Context, task *Task) (any, error) {
		<-next
		ctxErr <- ctx.Err()
		task.Log("late")
		task.Progress(1, "late")
		return "late", nil
	})
	startWorker(t, w)
	c := d.conn(wait)
	c.send(map[string]any{"type": "task", "task_id": "t9", "task_type": "job", "attempt": 1})
	c.next(t, wait)
	c.send(map[string]any{"type": "error", "code": "task_not_held", "message": "task t9 is not held by w-test"})
	time.Sleep(50 * time.Millisecond)
	close(next)
	if err := <-ctxErr; err == nil {
		t.Fatal("the handler's context was not ended")
	}
	c.quiet(t, 200*time.Millisecond)
	// Another refusal leaves the session alone.
	c.send(map[string]any{"type": "error", "code": "bad_field", "message": "status: must be idle, working or error"})
	d.noConn(100 * time.Millisecond)
}

func TestUnauthorizedIsFatal(t *testing.T) {
	d := newFakeDaemon(t)
	d.mu.Lock()
	d.reply = `{"type":"error","code":"unauthorized","message":"hello needs the heartbeat token"}`
	d.mu.Unlock()
	w := newTestWorker(t, Options{Addrs: []string{d.addr()}, Token: "wrong"})
	done := startWorker(t, w)
	select {
	case err := <-done:
		if !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("Run: %v", err)
		}
		var de *DaemonError
		if !errors.As(err, &de) || de.Code != "unauthorized" {
			t.Fatalf("Run: %#v", err)
		}
	case <-time.After(wait):
		t.Fatal("Run kept retrying")
	}
}

func TestSupersededIsFatal(t *testing.T) {
	d := newFakeDaemon(t)
	w := newTestWorker(t, Options{Addrs: []string{d.addr()}})
	done := startWorker(t, w)
	c := d.conn(wait)
	c.send(map[string]any{"type": "error", "code": "superseded", "message": "another connection said hello for this worker"})
	select {
	case err := <-done:
		if !errors.Is(err, ErrSuperseded) {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Run went on")
	}
}

func TestShuttingDownReconnects(t *testing.T) {
	d := newFakeDaemon(t)
	w := newTestWorker(t, Options{Addrs: []string{d.addr()}})
	startWorker(t, w)
	c := d.conn(wait)
	c.heartbeat(t, wait)
	c.send(map[string]any{"type": "error", "code": "shutting_down", "message": "bye"})
	c.c.Close()
	c2 := d.conn(wait)
	hb := c2.heartbeat(t, wait)
	if hb["seq"].(float64) < 2 {
		t.Fatalf("seq starts again after a reconnect: %v", hb)
	}
}

func TestFailoverAndClusterNodes(t *testing.T) {
	d1 := newFakeDaemon(t)
	d2 := newFakeDaemon(t)
	d1.mu.Lock()
	d1.nodes = []string{d1.addr(), d2.addr()}
	d1.mu.Unlock()
	dead := deadAddr(t)
	w := newTestWorker(t, Options{Addrs: []string{dead, d1.addr()}})
	startWorker(t, w)
	c := d1.conn(wait) // the dead first address is skipped at once
	c.heartbeat(t, wait)
	if got := w.Addrs(); !reflect.DeepEqual(got, []string{dead, d1.addr(), d2.addr()}) {
		t.Fatalf("addresses %v", got)
	}
	// d1 goes away: the next address is the node its welcome named.
	d1.close()
	c2 := d2.conn(wait)
	c2.heartbeat(t, wait)
}

func TestBackoffAfterEveryAddressFailed(t *testing.T) {
	var accepts int32
	var lns []net.Listener
	for i := 0; i < 2; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				atomic.AddInt32(&accepts, 1)
				c.Close() // no welcome: a failed attempt
			}
		}()
		defer ln.Close()
	}
	w := newTestWorker(t, Options{Addrs: []string{lns[0].Addr().String(), lns[1].Addr().String()}})
	startWorker(t, w)
	time.Sleep(1 * time.Second)
	n := atomic.LoadInt32(&accepts)
	// Rounds of two at once, then waits of 125-375 ms, 250-750 ms,
	// 0.5-1.5 s: at most 4 rounds in a second, at least 2.
	if n < 4 || n > 8 {
		t.Fatalf("%d attempts in 1 s", n)
	}
}

func TestCloseSaysByeAfterWhatIsOwed(t *testing.T) {
	d := newFakeDaemon(t)
	w := newTestWorker(t, Options{Addrs: []string{d.addr()}})
	done := startWorker(t, w)
	c := d.conn(wait)
	c.heartbeat(t, wait)
	w.RecordRun(time.Second, true)
	w.Close()
	if f := c.next(t, wait); f["type"] != "run" {
		t.Fatalf("%v", f)
	}
	if f := c.next(t, wait); f["type"] != "bye" {
		t.Fatalf("%v", f)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Close before Run: Run returns at once.
	w2 := newTestWorker(t, Options{Addrs: []string{d.addr()}})
	w2.Close()
	if err := w2.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestContextEndsRun(t *testing.T) {
	d := newFakeDaemon(t)
	w := newTestWorker(t, Options{Addrs: []string{d.addr()}})
	w.minHealthy = 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	c := d.conn(wait)
	c.heartbeat(t, wait)
	cancel()
	if f := c.next(t, wait); f["type"] != "bye" {
		t.Fatalf("%v", f)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestUDPHeartbeats(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	w := newTestWorker(t, Options{ID: "u1", Addrs: []string{pc.LocalAddr().String()}, UDP: true,
		Token: "tk", HeartbeatInterval: 50 * time.Millisecond})
	startWorker(t, w)
	buf := make([]byte, 70000)
	pc.SetReadDeadline(time.Now().Add(wait))
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	got := string(buf[:n])
	if !strings.Contains(got, `"type":"heartbeat"`) || !strings.Contains(got, `"worker_id":"u1"`) ||
		!strings.Contains(got, `"token":"tk"`) || !strings.HasSuffix(got, "\n") {
		t.Fatalf("datagram %q", got)
	}
	if err := w.Set(CurrentJob(&Job{ID: strings.Repeat("y", 70000)})); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized Set over UDP: %v", err)
	}
}

func TestNewWorkerChecksOptions(t *testing.T) {
	for _, o := range []Options{
		{},
		{ID: "bad id"},
		{ID: "registry"},
		{ID: strings.Repeat("a", 129)},
		{ID: "ok", Capacity: -1},
		{ID: "ok", Addrs: []string{"nocolon"}},
		{ID: "ok", Labels: map[string]string{"": "x"}},
		{ID: "ok", TokenFile: "/nonexistent/token"},
	} {
		if _, err := NewWorker(o); err == nil {
			t.Errorf("%+v was taken", o)
		}
	}
	w, err := NewWorker(Options{ID: "w.1_x:y@z-2"})
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Addrs(); !reflect.DeepEqual(got, []string{DefaultAddr}) {
		t.Fatalf("default addrs %v", got)
	}
}
