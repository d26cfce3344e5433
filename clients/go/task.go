package muster

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"time"
)

// Task is one task the daemon sent, as its handler sees it.
type Task struct {
	ID      string
	Type    string
	Payload json.RawMessage // "null" when the submission had none
	Attempt int             // 1 for the first
	// Timeout is the task's timeout_ms (0: none); the handler's context
	// ends when it passes.
	Timeout time.Duration
	// Traceparent and Tracestate are the submission's W3C Trace Context,
	// when it had one.
	Traceparent string
	Tracestate  string

	w *Worker
	r *run
}

// run is one attempt of a task on this worker.
type run struct {
	task   *Task
	lease  uint64
	ctx    context.Context
	cancel context.CancelFunc
	// cancelled: the daemon said cancel; the end is reported cancelled.
	cancelled bool
	// dropped: the task is not this worker's any more; nothing more is
	// said of it.
	dropped bool
	// reported: listed in the current session's hello and neither
	// confirmed (lease) nor cancelled yet.
	reported bool
	ended    bool
	// handler runs it; queued: waiting for a free slot.
	handler HandlerFunc
	queued  bool
}

// Log appends lines to the task's log (task_log frames, at most 1,024
// lines and one frame's size each; a line too long for a frame is cut).
// They wait for a reconnect like the task's end.
func (t *Task) Log(lines ...string) {
	if t.w == nil || len(lines) == 0 {
		return
	}
	t.w.taskLog(t.r, lines)
}

// Progress says how far the task has come: fraction from 0 to 1 (a
// negative or NaN fraction is left out, one over 1 is sent as 1) and a
// message (at most 1,024 bytes; "" is left out). Only the latest unsent
// progress is kept, and none while disconnected.
func (t *Task) Progress(fraction float64, message string) {
	if t.w == nil {
		return
	}
	t.w.taskProgress(t.r, fraction, message)
}

// live says whether r may still report.
func (w *Worker) liveLocked(r *run) bool {
	return r != nil && !r.dropped && !r.ended && w.runs[r.task.ID] == r
}

func (w *Worker) taskLog(r *run, lines []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.liveLocked(r) {
		return
	}
	overhead := len(`{"type":"task_log","task_id":"","lines":[]}`) + len(r.task.ID) + 1
	budget := w.maxFrame - overhead
	var batch []string
	size := 0
	flush := func() {
		if len(batch) == 0 {
			return
		}
		b, err := encodeFrame(&taskLogFrame{Type: "task_log", TaskID: r.task.ID, Lines: batch}, w.maxFrame)
		if err == nil && w.logBytes+len(b) <= maxLogBytes {
			w.enqueueLocked(b, r, kindLog)
		} else if err == nil {
			w.logf("muster: task %s: %d log lines dropped (%d bytes wait already)", r.task.ID, len(batch), w.logBytes)
		}
		batch, size = nil, 0
	}
	for _, line := range lines {
		cost := jsonLen(line) + 1
		if cost > budget {
			line = fitLine(line, budget-1)
			cost = jsonLen(line) + 1
		}
		if len(batch) == maxLogLines || size+cost > budget {
			flush()
		}
		batch = append(batch, line)
		size += cost
	}
	flush()
}

// jsonLen is how long s is as a JSON string.
func jsonLen(s string) int {
	b, _ := json.Marshal(s)
	return len(b)
}

// fitLine cuts s until it fits in n bytes as a JSON string.
func fitLine(s string, n int) string {
	for len(s) > 0 && jsonLen(s) > n {
		over := jsonLen(s) - n
		cut := len(s) - over
		if cut >= len(s) {
			cut = len(s) - 1
		}
		if cut < 0 {
			cut = 0
		}
		s = truncate(s, cut)
	}
	return s
}

func (w *Worker) taskProgress(r *run, fraction float64, message string) {
	var fr *float64
	if !math.IsNaN(fraction) && fraction >= 0 {
		if fraction > 1 {
			fraction = 1
		}
		fr = &fraction
	}
	message = truncate(message, maxProgressBytes)
	if fr == nil && message == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.liveLocked(r) || !w.connected {
		return
	}
	b, err := encodeFrame(&taskProgressFrame{Type: "task_progress", TaskID: r.task.ID, Fraction: fr, Message: message}, w.maxFrame)
	if err != nil {
		return
	}
	for _, o := range w.outbox {
		if o.run == r && o.kind == kindProgress {
			o.data = b // only the latest is worth sending
			return
		}
	}
	w.enqueueLocked(b, r, kindProgress)
}

// onTask: the daemon sent a task.
func (w *Worker) onTask(f *inFrame) {
	if f.TaskID == "" {
		return
	}
	payload := f.Payload
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	}
	t := &Task{
		ID:          f.TaskID,
		Type:        f.TaskType,
		Payload:     payload,
		Attempt:     f.Attempt,
		Timeout:     time.Duration(f.TimeoutMS) * time.Millisecond,
		Traceparent: f.Traceparent,
		Tracestate:  f.Tracestate,
		w:           w,
	}
	w.mu.Lock()
	if w.stopping {
		w.mu.Unlock()
		return
	}
	if old := w.runs[t.ID]; old != nil {
		// Sent again: the daemon gave the old attempt up. Updates carry
		// no attempt, so the old one must say nothing more.
		w.dropLocked(old)
	}
	ctx, cancel := context.WithCancel(w.handlerCtx)
	r := &run{task: t, lease: f.Lease, ctx: ctx, cancel: cancel, handler: w.handlers[t.Type]}
	t.r = r
	w.runs[t.ID] = r
	if r.handler == nil {
		w.mu.Unlock()
		w.finishRun(r, nil, NonRetryable(fmt.Errorf("no handler for task type %q", t.Type)))
		return
	}
	r.queued = true
	w.waiting = append(w.waiting, r)
	w.pumpLocked()
	w.mu.Unlock()
}

// pumpLocked starts waiting tasks, in the order they came, while fewer
// than Capacity handlers run.
func (w *Worker) pumpLocked() {
	for len(w.waiting) > 0 && w.busy < w.slots {
		r := w.waiting[0]
		copy(w.waiting, w.waiting[1:])
		w.waiting[len(w.waiting)-1] = nil
		w.waiting = w.waiting[:len(w.waiting)-1]
		r.queued = false
		if !w.liveLocked(r) {
			continue
		}
		b, err := encodeFrame(&taskUpdateFrame{Type: "task_update", TaskID: r.task.ID, State: "running"}, w.maxFrame)
		if err == nil {
			w.enqueueLocked(b, r, kindUpdate)
		}
		w.busy++
		if w.rep.status == "" {
			w.dirty = true
		}
		go w.execute(r)
	}
}

// unqueueLocked takes r out of the waiting line.
func (w *Worker) unqueueLocked(r *run) {
	if !r.queued {
		return
	}
	r.queued = false
	for i, q := range w.waiting {
		if q == r {
			copy(w.waiting[i:], w.waiting[i+1:])
			w.waiting[len(w.waiting)-1] = nil
			w.waiting = w.waiting[:len(w.waiting)-1]
			return
		}
	}
}

// execute runs the handler of a started task (its running is queued).
func (w *Worker) execute(r *run) {
	ctx := r.ctx
	if r.task.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.task.Timeout)
		defer cancel()
	}
	result, herr := call(ctx, r.handler, r.task)

	w.finishRun(r, result, herr)
	w.mu.Lock()
	w.busy--
	if w.rep.status == "" {
		w.dirty = true
		w.signal()
	}
	if !w.stopping {
		w.pumpLocked()
	}
	w.mu.Unlock()
}

func call(ctx context.Context, h HandlerFunc, t *Task) (result any, err error) {
	defer func() {
		if p := recover(); p != nil {
			result, err = nil, fmt.Errorf("panic: %v", p)
		}
	}()
	return h(ctx, t)
}

// finishRun reports the run's end: cancelled when the daemon cancelled
// it, failed with the error, or succeeded with the result.
func (w *Worker) finishRun(r *run, result any, herr error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.finishRunLocked(r, result, herr)
}

func (w *Worker) finishRunLocked(r *run, result any, herr error) {
	if !w.liveLocked(r) {
		return
	}
	r.ended = true
	r.cancel()
	id := r.task.ID
	u := &taskUpdateFrame{Type: "task_update", TaskID: id}
	switch {
	case r.cancelled:
		u.State = "cancelled"
	case herr != nil:
		u.State = "failed"
		u.Error = truncate(herr.Error(), maxErrorBytes)
		if u.Error == "" {
			u.Error = "failed"
		}
		retry := !IsNonRetryable(herr)
		u.Retryable = &retry
	default:
		u.State = "succeeded"
		if result != nil {
			b, err := json.Marshal(result)
			if err != nil {
				u.State, u.Error = "failed", truncate("result is not JSON: "+err.Error(), maxErrorBytes)
				no := false
				u.Retryable = &no
			} else {
				u.Result = b
			}
		}
	}
	b, err := encodeFrame(u, w.maxFrame)
	if err != nil {
		no := false
		u = &taskUpdateFrame{Type: "task_update", TaskID: id, State: "failed",
			Error: fmt.Sprintf("the task's end does not fit in a frame: %v", err), Retryable: &no}
		if b, err = encodeFrame(u, w.maxFrame); err != nil {
			return
		}
	}
	w.enqueueLocked(b, r, kindEnd)
}

// onCancel: stop the task and, when it returns, say cancelled. A task
// this session's hello re-reported and that the daemon cancels is not
// the worker's there: it is stopped and nothing more is said of it (the
// daemon may already have sent it again, and a report carries no
// attempt).
func (w *Worker) onCancel(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.runs[id]
	if r == nil {
		return
	}
	if r.reported {
		w.dropLocked(r)
		return
	}
	r.cancelled = true
	r.cancel()
	if r.queued {
		// Never started: it ends now.
		w.unqueueLocked(r)
		w.finishRunLocked(r, nil, context.Canceled)
	}
}

// onLease: cluster mode, the task is this node's now under a new lease.
func (w *Worker) onLease(id string, lease uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if r := w.runs[id]; r != nil {
		r.lease = lease
		r.reported = false
		w.signal()
	}
}

// onNotHeld: the daemon does not have this worker holding the task any
// more (requeued, cancelled, timed out): drop its reports and stop it.
func (w *Worker) onNotHeld(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if r := w.runs[id]; r != nil {
		w.logf("muster: task %s is not this worker's any more; its reports are dropped", id)
		w.dropLocked(r)
	}
}

// dropLocked forgets r: its waiting frames go, its handler is stopped,
// and what it says later is not sent.
func (w *Worker) dropLocked(r *run) {
	r.dropped = true
	r.cancel()
	w.unqueueLocked(r)
	for i := 0; i < len(w.outbox); {
		if w.outbox[i].run == r {
			w.removeAtLocked(i)
			continue
		}
		i++
	}
	if w.runs[r.task.ID] == r {
		delete(w.runs, r.task.ID)
	}
}

// Running is the ids of the tasks the worker holds now, sorted: their
// handlers run, or their end waits to be sent.
func (w *Worker) Running() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	ids := make([]string, 0, len(w.runs))
	for id := range w.runs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}
