package muster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAPI keeps tasks the way the daemon's /api/tasks shows them.
type fakeAPI struct {
	mu    sync.Mutex
	tasks map[string]map[string]any
	keys  map[string]string
	polls int
	auth  string
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auth = r.Header.Get("Authorization")
	w.Header().Set("Content-Type", "application/json")
	id := strings.TrimPrefix(r.URL.Path, "/api/tasks/")
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/api/tasks":
		var body map[string]any
		b, _ := io.ReadAll(r.Body)
		if json.Unmarshal(b, &body) != nil || body["type"] == "" || body["type"] == nil {
			w.WriteHeader(400)
			fmt.Fprint(w, `{"error":"bad_task","message":"type: 1-128 bytes of text"}`)
			return
		}
		if key := r.Header.Get("Idempotency-Key"); key != "" {
			if old, ok := f.keys[key]; ok {
				w.Header().Set("Idempotent-Replayed", "true")
				json.NewEncoder(w).Encode(f.tasks[old])
				return
			}
			defer func() { f.keys[key] = fmt.Sprint(len(f.tasks)) }()
		}
		t := map[string]any{"id": fmt.Sprint(len(f.tasks) + 1), "type": body["type"], "payload": body["payload"],
			"state": "queued", "attempt": 1, "created_at": 1796311398053, "worker_id": nil, "result": nil,
			"timeout_ms": body["timeout_ms"], "priority": body["priority"]}
		f.tasks[t["id"].(string)] = t
		w.WriteHeader(201)
		json.NewEncoder(w).Encode(t)
	case r.Method == http.MethodGet && f.tasks[id] != nil:
		f.polls++
		t := f.tasks[id]
		if f.polls >= 3 && t["state"] == "queued" {
			t["state"], t["result"], t["worker_id"] = "succeeded", map[string]any{"ok": true}, "w1"
			t["progress"] = map[string]any{"fraction": 1, "message": "done", "at": 1796311398099}
		}
		json.NewEncoder(w).Encode(t)
	case r.Method == http.MethodDelete && f.tasks[id] != nil:
		f.tasks[id]["state"] = "cancelled"
		json.NewEncoder(w).Encode(f.tasks[id])
	default:
		w.WriteHeader(404)
		fmt.Fprint(w, `{"error":"not_found","message":"no such task"}`)
	}
}

func TestClient(t *testing.T) {
	api := &fakeAPI{tasks: map[string]map[string]any{}, keys: map[string]string{}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	c := NewClient(srv.URL+"/", "api-token")
	c.PollInterval = 10 * time.Millisecond
	ctx := context.Background()

	t1, err := c.Submit(ctx, "resize", map[string]any{"file": "a.png"}, SubmitOptions{IdempotencyKey: "k1", Timeout: 2 * time.Second, Priority: 5})
	if err != nil {
		t.Fatal(err)
	}
	if t1.ID != "1" || t1.Type != "resize" || t1.State != "queued" || t1.Replayed || string(t1.Payload) != `{"file":"a.png"}` {
		t.Fatalf("%+v", t1)
	}
	if api.auth != "Bearer api-token" {
		t.Fatalf("Authorization %q", api.auth)
	}
	if api.tasks["1"]["timeout_ms"] != 2000.0 || api.tasks["1"]["priority"] != 5.0 {
		t.Fatalf("body %v", api.tasks["1"])
	}
	t2, err := c.Submit(ctx, "resize", json.RawMessage(`{"file":"b.png"}`), SubmitOptions{IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if t2.ID != t1.ID || !t2.Replayed {
		t.Fatalf("a repeat with the key: %+v", t2)
	}
	if t1.CreatedAt.UnixMilli() != 1796311398053 || !t1.StartedAt.IsZero() {
		t.Fatalf("times %v %v", t1.CreatedAt, t1.StartedAt)
	}

	done, err := c.Wait(ctx, t1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if done.State != StateSucceeded || !done.Ended() || string(done.Result) != `{"ok":true}` || done.WorkerID != "w1" ||
		done.Progress == nil || *done.Progress.Fraction != 1 {
		t.Fatalf("%+v", done)
	}
	var raw map[string]any
	if err := json.Unmarshal(done.Raw, &raw); err != nil || raw["id"] != "1" {
		t.Fatalf("raw %s", done.Raw)
	}

	t3, _ := c.Submit(ctx, "x", nil, SubmitOptions{})
	cancelled, err := c.Cancel(ctx, t3.ID)
	if err != nil || cancelled.State != StateCancelled {
		t.Fatalf("%+v %v", cancelled, err)
	}

	_, err = c.Show(ctx, "nope")
	var ae *APIError
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &ae) || ae.Code != "not_found" {
		t.Fatalf("missing task: %v", err)
	}
	if _, err := c.Submit(ctx, "", nil, SubmitOptions{}); err == nil || !strings.Contains(err.Error(), "bad_task") {
		t.Fatalf("bad submission: %v", err)
	}

	// Wait gives up with ctx, returning the task as last seen.
	api.mu.Lock()
	api.tasks["9"] = map[string]any{"id": "9", "type": "x", "state": "running"}
	api.polls = -1 << 30
	api.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Millisecond)
	defer cancel()
	last, err := c.Wait(wctx, "9")
	if !errors.Is(err, context.DeadlineExceeded) || last == nil || last.State != "running" {
		t.Fatalf("%+v %v", last, err)
	}
}
