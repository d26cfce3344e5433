package muster

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client submits and follows tasks through the daemon's HTTP API.
type Client struct {
	base  string
	token string
	// HTTP is the client requests go through (default: a client with a
	// 30 s timeout).
	HTTP *http.Client
	// PollInterval is how often Wait asks (default 250 ms).
	PollInterval time.Duration
}

// NewClient makes a client of the daemon at baseURL (e.g.
// "http://127.0.0.1:8080", or "https://..." verified with the system's
// roots; NewClientTLS for a CA of your own). token, when not empty, is
// sent as "Authorization: Bearer TOKEN" (the daemon's api_token_file).
func NewClient(baseURL, token string) *Client {
	return &Client{
		base:         strings.TrimRight(baseURL, "/"),
		token:        token,
		HTTP:         &http.Client{Timeout: 30 * time.Second},
		PollInterval: 250 * time.Millisecond,
	}
}

// NewClientTLS is NewClient with cfg for https:// URLs: its RootCAs
// verify the daemon's certificate (nil: the system's roots), and its
// Certificates are presented if the daemon asks for a client
// certificate. An empty ServerName is the URL's host. cfg nil is
// NewClient. TLSConfig and TLSConfigFromEnv build one (the same
// MUSTER_TLS_CA_FILE as the worker's).
func NewClientTLS(baseURL, token string, cfg *tls.Config) *Client {
	c := NewClient(baseURL, token)
	if cfg != nil {
		tr, ok := http.DefaultTransport.(*http.Transport)
		if ok {
			tr = tr.Clone()
		} else {
			tr = &http.Transport{Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true}
		}
		tr.TLSClientConfig = cfg.Clone()
		if tr.TLSClientConfig.MinVersion == 0 {
			tr.TLSClientConfig.MinVersion = tls.VersionTLS12
		}
		c.HTTP.Transport = tr
	}
	return c
}

// SubmitOptions are the optional parts of a submission.
type SubmitOptions struct {
	// IdempotencyKey (1-255 printable ASCII): a repeat within the
	// daemon's idempotency_retention gets the first task back.
	IdempotencyKey string
	Priority       int
	// WorkerID aims the task at one worker; Labels at the workers that
	// have them.
	WorkerID    string
	Labels      map[string]string
	Timeout     time.Duration
	MaxAttempts int
	// Delay or RunAt keep the task scheduled until then.
	Delay          time.Duration
	RunAt          time.Time
	DependsOn      []string
	UniqueKey      string
	ConcurrencyKey string
	// Traceparent and Tracestate are sent as the W3C Trace Context headers.
	Traceparent string
	Tracestate  string
}

// TaskInfo is a task as the API shows it.
type TaskInfo struct {
	ID          string
	Type        string
	Payload     json.RawMessage
	Priority    int
	State       string
	Attempt     int
	MaxAttempts int
	WorkerID    string
	Result      json.RawMessage // nil when none
	Error       string
	ExitCode    *int
	CreatedAt   time.Time
	AssignedAt  time.Time
	StartedAt   time.Time
	FinishedAt  time.Time
	Progress    *TaskProgress
	// Replayed: the submission was a repeat of an earlier one with the
	// same Idempotency-Key (200 with Idempotent-Replayed).
	Replayed bool
	// Raw is the whole JSON object the daemon sent.
	Raw json.RawMessage
}

// TaskProgress is a task's last reported progress.
type TaskProgress struct {
	Fraction *float64 `json:"fraction"`
	Message  string   `json:"message"`
	At       int64    `json:"at"` // Unix ms
}

// Ended states: a task in one of them changes no more (unless retried
// through the API).
const (
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
	StateCancelled = "cancelled"
	StateTimedOut  = "timed_out"
	StateDead      = "dead"
)

// Ended says whether the task is in an ended state.
func (t *TaskInfo) Ended() bool {
	switch t.State {
	case StateSucceeded, StateFailed, StateCancelled, StateTimedOut, StateDead:
		return true
	}
	return false
}

func msTime(p *int64) time.Time {
	if p == nil {
		return time.Time{}
	}
	return time.UnixMilli(*p)
}

// UnmarshalJSON reads the API's task object.
func (t *TaskInfo) UnmarshalJSON(b []byte) error {
	var w struct {
		ID          string          `json:"id"`
		Type        string          `json:"type"`
		Payload     json.RawMessage `json:"payload"`
		Priority    int             `json:"priority"`
		State       string          `json:"state"`
		Attempt     int             `json:"attempt"`
		MaxAttempts int             `json:"max_attempts"`
		WorkerID    *string         `json:"worker_id"`
		Result      json.RawMessage `json:"result"`
		Error       *string         `json:"error"`
		ExitCode    *int            `json:"exit_code"`
		CreatedAt   *int64          `json:"created_at"`
		AssignedAt  *int64          `json:"assigned_at"`
		StartedAt   *int64          `json:"started_at"`
		FinishedAt  *int64          `json:"finished_at"`
		Progress    *TaskProgress   `json:"progress"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*t = TaskInfo{
		ID: w.ID, Type: w.Type, Payload: w.Payload, Priority: w.Priority,
		State: w.State, Attempt: w.Attempt, MaxAttempts: w.MaxAttempts,
		ExitCode: w.ExitCode, Progress: w.Progress,
		CreatedAt: msTime(w.CreatedAt), AssignedAt: msTime(w.AssignedAt),
		StartedAt: msTime(w.StartedAt), FinishedAt: msTime(w.FinishedAt),
		Raw: append(json.RawMessage(nil), b...),
	}
	if w.WorkerID != nil {
		t.WorkerID = *w.WorkerID
	}
	if w.Error != nil {
		t.Error = *w.Error
	}
	if len(w.Result) > 0 && string(w.Result) != "null" {
		t.Result = w.Result
	}
	return nil
}

// APIError is an error answer of the API: its status and the body's
// error code and message.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("muster: HTTP %d", e.Status)
	}
	return fmt.Sprintf("muster: HTTP %d: %s: %s", e.Status, e.Code, e.Message)
}

// ErrNotFound matches an APIError of status 404.
var ErrNotFound = errors.New("muster: not found")

// Is matches ErrNotFound for a 404.
func (e *APIError) Is(target error) bool {
	return target == ErrNotFound && e.Status == http.StatusNotFound
}

// Submit submits a task of taskType; payload is any JSON-encodable
// value (a json.RawMessage is sent as it is; nil sends none).
func (c *Client) Submit(ctx context.Context, taskType string, payload any, o SubmitOptions) (*TaskInfo, error) {
	body := map[string]any{"type": taskType}
	if payload != nil {
		b, err := json.Marshal(payload)
		if err != nil {
			return nil, fmt.Errorf("muster: payload: %w", err)
		}
		body["payload"] = json.RawMessage(b)
	}
	if o.Priority != 0 {
		body["priority"] = o.Priority
	}
	if o.WorkerID != "" {
		body["worker_id"] = o.WorkerID
	}
	if len(o.Labels) > 0 {
		body["labels"] = o.Labels
	}
	if o.Timeout > 0 {
		body["timeout_ms"] = o.Timeout.Milliseconds()
	}
	if o.MaxAttempts > 0 {
		body["max_attempts"] = o.MaxAttempts
	}
	if o.Delay > 0 {
		body["delay_ms"] = o.Delay.Milliseconds()
	}
	if !o.RunAt.IsZero() {
		body["run_at"] = o.RunAt.Format(time.RFC3339Nano)
	}
	if len(o.DependsOn) > 0 {
		body["depends_on"] = o.DependsOn
	}
	if o.UniqueKey != "" {
		body["unique_key"] = o.UniqueKey
	}
	if o.ConcurrencyKey != "" {
		body["concurrency_key"] = o.ConcurrencyKey
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if o.IdempotencyKey != "" {
		h.Set("Idempotency-Key", o.IdempotencyKey)
	}
	if o.Traceparent != "" {
		h.Set("Traceparent", o.Traceparent)
	}
	if o.Tracestate != "" {
		h.Set("Tracestate", o.Tracestate)
	}
	t, resp, err := c.do(ctx, http.MethodPost, "/api/tasks", h, b)
	if err != nil {
		return nil, err
	}
	t.Replayed = resp.Header.Get("Idempotent-Replayed") == "true"
	return t, nil
}

// Show reads one task.
func (c *Client) Show(ctx context.Context, id string) (*TaskInfo, error) {
	t, _, err := c.do(ctx, http.MethodGet, "/api/tasks/"+url.PathEscape(id), nil, nil)
	return t, err
}

// Cancel cancels a task (a queued one at once; a held one is sent
// cancel) and returns it as the daemon then shows it.
func (c *Client) Cancel(ctx context.Context, id string) (*TaskInfo, error) {
	t, _, err := c.do(ctx, http.MethodDelete, "/api/tasks/"+url.PathEscape(id), nil, nil)
	return t, err
}

// Wait polls the task until it has ended (succeeded, failed, cancelled,
// timed_out, dead) or ctx is done; then it returns the task as last
// read, with ctx's error.
func (c *Client) Wait(ctx context.Context, id string) (*TaskInfo, error) {
	every := c.PollInterval
	if every <= 0 {
		every = 250 * time.Millisecond
	}
	var last *TaskInfo
	for {
		t, err := c.Show(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return last, ctx.Err()
			}
			return last, err
		}
		last = t
		if t.Ended() {
			return t, nil
		}
		timer := time.NewTimer(every)
		select {
		case <-ctx.Done():
			timer.Stop()
			return last, ctx.Err()
		case <-timer.C:
		}
	}
}

func (c *Client) do(ctx context.Context, method, path string, h http.Header, body []byte) (*TaskInfo, *http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, resp, err
	}
	if resp.StatusCode/100 != 2 {
		e := &APIError{Status: resp.StatusCode}
		var eb struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		if json.Unmarshal(data, &eb) == nil {
			e.Code, e.Message = eb.Error, eb.Message
		}
		return nil, resp, e
	}
	var t TaskInfo
	if err := json.Unmarshal(data, &t); err != nil {
		return nil, resp, fmt.Errorf("muster: reading the task: %w", err)
	}
	return &t, resp, nil
}
