package muster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// Timing the protocol leaves to the worker.
const (
	defaultInterval    = 5 * time.Second
	defaultDialTimeout = 5 * time.Second
	welcomeTimeout     = 10 * time.Second // hello sent, no welcome yet
	writeTimeout       = 30 * time.Second // one write to a daemon that does not read
	byeTimeout         = 2 * time.Second  // flushing what is owed, then bye
	closeWait          = 5 * time.Second  // Close waits this long for Run to end
	minBeatGap         = 100 * time.Millisecond
	maxPendingRuns     = 1000    // run frames kept while disconnected
	maxLogBytes        = 8 << 20 // task_log bytes queued at most
)

// HandlerFunc runs one task. ctx is cancelled when the daemon cancels
// the task, when its timeout passes, or when the worker stops. The
// returned value (any JSON-encodable value, or a json.RawMessage) is the
// task's result; an error is its failure, tried again unless wrapped
// with NonRetryable. A handler that returns after its task was
// cancelled reports it cancelled, whatever it returns.
type HandlerFunc func(ctx context.Context, t *Task) (any, error)

// Worker is one muster worker: it says hello over TCP, beats at the
// interval the daemon gives, and runs the tasks it is sent with the
// handlers registered with Handle.
type Worker struct {
	opts     Options
	maxFrame int
	maxState int
	logger   *log.Logger
	hostname string
	pid      int

	mu          sync.Mutex
	handlers    map[string]HandlerFunc
	learned     []string // heartbeat addresses from the last welcome's nodes
	addrIdx     int
	token       string
	rep         report
	seq         uint64
	dirty       bool // the report changed since the last beat
	runs        map[string]*run
	busy        int    // handlers running
	waiting     []*run // tasks waiting for a free slot, oldest first
	slots       int    // handlers at most at once: the capacity
	outbox      []*outFrame
	frameSeq    uint64
	logBytes    int
	pendingRuns int
	connected   bool
	started     bool
	closed      bool
	stopping    bool

	wake          chan struct{}
	stop          chan struct{}
	stopOnce      sync.Once
	done          chan struct{}
	handlerCtx    context.Context
	handlerCancel context.CancelFunc

	// minHealthy: a session shorter than this counts as a failed
	// attempt, so a daemon that welcomes and drops at once is not
	// reconnected to in a tight loop.
	minHealthy time.Duration
	// unconfirmedFor: on a single node, re-reported tasks are answered
	// with the welcome; one not cancelled within this long is the
	// worker's (0: one heartbeat interval).
	unconfirmedFor time.Duration
}

type outKind int

const (
	kindUpdate outKind = iota
	kindEnd
	kindLog
	kindProgress
	kindRun
)

// outFrame is a frame waiting for a connection: task updates and logs
// and runs wait across reconnects; progress is dropped with the
// connection.
type outFrame struct {
	id   uint64
	data []byte
	run  *run
	kind outKind
}

// NewWorker checks the options and makes a worker; Run starts it.
func NewWorker(opts Options) (*Worker, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if len(opts.Addrs) == 0 {
		opts.Addrs = []string{DefaultAddr}
	}
	opts.Addrs = append([]string(nil), opts.Addrs...)
	labels := make(map[string]string, len(opts.Labels))
	for k, v := range opts.Labels {
		labels[k] = v
	}
	opts.Labels = labels
	opts.TLS = opts.TLS.Clone() // nil stays nil
	w := &Worker{
		opts:       opts,
		maxFrame:   opts.MaxFrameBytes,
		logger:     opts.Logger,
		hostname:   opts.Hostname,
		pid:        opts.PID,
		handlers:   map[string]HandlerFunc{},
		token:      opts.Token,
		runs:       map[string]*run{},
		wake:       make(chan struct{}, 1),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
		minHealthy: time.Second,
	}
	if w.maxFrame == 0 {
		w.maxFrame = DefaultMaxFrameBytes
	}
	w.maxState = opts.MaxStateBytes
	if w.maxState == 0 {
		w.maxState = DefaultMaxStateBytes
	}
	if w.hostname == "" {
		w.hostname, _ = os.Hostname()
	}
	w.hostname = truncate(w.hostname, maxTextBytes)
	if w.pid == 0 {
		w.pid = os.Getpid()
	}
	if opts.TokenFile != "" {
		t, err := readToken(opts.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("muster: heartbeat token: %w", err)
		}
		w.token = t
	}
	w.handlerCtx, w.handlerCancel = context.WithCancel(context.Background())
	return w, nil
}

// ID is the worker's id.
func (w *Worker) ID() string { return w.opts.ID }

// Handle registers the handler of a task type. Register every type
// before Run: hello's task_types lists them (a handler added later is
// announced at the next connect).
func (w *Worker) Handle(taskType string, h HandlerFunc) {
	if taskType == "" || len(taskType) > maxTaskType {
		panic(fmt.Sprintf("muster: task type %q: 1 to %d bytes", taskType, maxTaskType))
	}
	if h == nil {
		panic("muster: nil handler for " + taskType)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.handlers[taskType] = h
}

// Set changes the state the worker reports; the next heartbeat carries
// it (sent within 100 ms while connected). Changes apply together or
// not at all: a heartbeat that would be over the frame limit is refused
// with an error wrapping ErrFrameTooLarge before anything is sent, and
// the connection is kept.
func (w *Worker) Set(changes ...Change) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	cand := w.rep
	var first error
	for _, c := range changes {
		if c.apply == nil {
			continue
		}
		if err := c.apply(&cand); err != nil && first == nil {
			first = err
		}
	}
	// The largest the frame can be: a 20-digit seq, the longer status.
	hb := cand.heartbeat(math.MaxUint64, true)
	w.udpFields(&hb.WorkerID, &hb.Token)
	if _, err := encodeFrame(hb, w.maxFrame); err != nil {
		return fmt.Errorf("muster: state refused: %w", err)
	}
	// What the daemon keeps of a worker (labels, current job) is bounded
	// too; the JSON's length is a floor of what it weighs parsed.
	held := len(hb.CurrentJob)
	for k, v := range w.opts.Labels {
		held += len(k) + len(v)
	}
	if held > w.maxState {
		return fmt.Errorf("muster: state refused: %w: labels and current job of %d bytes, over max_worker_state_bytes=%d", ErrFrameTooLarge, held, w.maxState)
	}
	if first != nil {
		return first
	}
	w.rep = cand
	w.dirty = true
	w.signal()
	return nil
}

// RecordRun reports one finished run (a run frame): its duration (0 to
// 30 days; outside, it is clamped) and whether it went well. Runs wait
// for a connection, 1,000 at most.
func (w *Worker) RecordRun(d time.Duration, ok bool) {
	ms := float64(d) / float64(time.Millisecond)
	if ms < 0 || math.IsNaN(ms) {
		ms = 0
	}
	if ms > maxRunMillis {
		ms = maxRunMillis
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	f := &runFrame{Type: "run", DurationMS: ms, OK: ok}
	w.udpFields(&f.WorkerID, &f.Token)
	b, err := encodeFrame(f, w.maxFrame)
	if err != nil {
		return
	}
	if w.pendingRuns >= maxPendingRuns {
		for i, o := range w.outbox {
			if o.kind == kindRun {
				w.removeAtLocked(i)
				break
			}
		}
	}
	w.enqueueLocked(b, nil, kindRun)
}

// udpFields fills the worker_id and token a UDP frame must carry.
func (w *Worker) udpFields(id, token *string) {
	if w.opts.UDP {
		*id = w.opts.ID
		*token = w.token
	}
}

// Close says bye and stops Run (waiting up to 5 s for it to end).
// Handlers still running have their contexts cancelled; what they
// report after is dropped. Close before Run makes Run return at once.
func (w *Worker) Close() error {
	w.stopOnce.Do(func() { close(w.stop) })
	w.mu.Lock()
	w.closed = true
	started := w.started
	w.mu.Unlock()
	if started {
		select {
		case <-w.done:
		case <-time.After(closeWait):
		}
	}
	return nil
}

// Run connects and keeps the worker connected until ctx is done or
// Close is called (then it says bye and returns nil). It returns an
// error only when the worker cannot go on: the daemon refused its token
// (errors.Is(err, ErrUnauthorized)), another connection took its id
// over (ErrSuperseded), its client certificate names another worker
// (ErrWorkerMismatch), or the daemon refused its hello as malformed. A
// connect that fails, TLS handshake included, is not such an error: it
// is logged and tried again.
func (w *Worker) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.started {
		w.mu.Unlock()
		return errors.New("muster: Run called twice")
	}
	w.started = true
	if w.closed {
		w.mu.Unlock()
		close(w.done)
		return nil
	}
	n := len(w.handlers)
	if n > 0 && w.opts.UDP {
		w.mu.Unlock()
		close(w.done)
		return errors.New("muster: a UDP worker takes no tasks: use TCP to register handlers")
	}
	if n > maxTaskTypes {
		w.mu.Unlock()
		close(w.done)
		return fmt.Errorf("muster: %d task types, at most %d", n, maxTaskTypes)
	}
	w.slots = w.capacityLocked()
	w.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-w.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer w.finish()
	if w.opts.UDP {
		return w.runUDP(ctx)
	}
	return w.runTCP(ctx)
}

// capacityLocked is the capacity hello says.
func (w *Worker) capacityLocked() int {
	if len(w.handlers) == 0 {
		return 0
	}
	if w.opts.Capacity == 0 {
		return 1
	}
	return w.opts.Capacity
}

// finish: Run is over. The daemon gave the tasks back (bye, or the
// session is gone): stop the handlers and forget what they would say.
func (w *Worker) finish() {
	w.mu.Lock()
	w.stopping = true
	w.connected = false
	for id, r := range w.runs {
		r.dropped = true
		r.cancel()
		delete(w.runs, id)
	}
	w.outbox = nil
	w.waiting = nil
	w.logBytes, w.pendingRuns = 0, 0
	w.mu.Unlock()
	w.handlerCancel()
	close(w.done)
}

func (w *Worker) logf(format string, args ...any) {
	if w.logger != nil {
		w.logger.Printf(format, args...)
	}
}

func (w *Worker) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// addrsLocked is the address list: the given ones, then the nodes the
// last welcome named.
func (w *Worker) addrsLocked() []string {
	list := append([]string(nil), w.opts.Addrs...)
	seen := map[string]bool{}
	for _, a := range list {
		seen[a] = true
	}
	for _, a := range w.learned {
		if !seen[a] {
			seen[a] = true
			list = append(list, a)
		}
	}
	return list
}

// Addrs is the worker's address list now: the given ones, then in
// cluster mode the nodes the last welcome named.
func (w *Worker) Addrs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.addrsLocked()
}

func (w *Worker) currentAddr() (string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	list := w.addrsLocked()
	if w.addrIdx >= len(list) {
		w.addrIdx = 0
	}
	return list[w.addrIdx], len(list)
}

// advance moves to the address after addr.
func (w *Worker) advance(addr string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	list := w.addrsLocked()
	for i, a := range list {
		if a == addr {
			w.addrIdx = (i + 1) % len(list)
			return
		}
	}
	w.addrIdx = 0
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// runTCP: connect, run the session, and when it ends try the next
// address at once; after every address failed, back off.
func (w *Worker) runTCP(ctx context.Context) error {
	bo := newBackoff(time.Now().UnixNano() ^ int64(os.Getpid())<<32)
	failed := 0
	for {
		if ctx.Err() != nil {
			return nil
		}
		addr, n := w.currentAddr()
		began := time.Now()
		welcomed, err := w.session(ctx, addr)
		if ctx.Err() != nil {
			return nil
		}
		var de *DaemonError
		if errors.As(err, &de) {
			if fatalCode(de.Code) || !welcomed && fatalHello(de.Code) {
				w.logf("muster: %s: %v; stopping", addr, err)
				return de
			}
		}
		w.logf("muster: %s: %v", addr, err)
		w.advance(addr)
		if welcomed && time.Since(began) >= w.minHealthy {
			failed = 0
			bo.reset()
			continue
		}
		failed++
		if failed >= n {
			failed = 0
			d := bo.next()
			w.logf("muster: every address failed; retrying in %v", d.Round(time.Millisecond))
			sleepCtx(ctx, d)
		}
	}
}

// sessionEnd wraps the reason the read side of a session ended.
type sessionEnd struct{ err error }

// session runs one connection: hello, welcome, then beats and frames
// until it ends. welcomed says whether the daemon welcomed it.
func (w *Worker) session(ctx context.Context, addr string) (welcomed bool, err error) {
	if w.opts.TokenFile != "" {
		if t, err := readToken(w.opts.TokenFile); err == nil {
			w.mu.Lock()
			w.token = t
			w.mu.Unlock()
		} else {
			w.logf("muster: heartbeat token: %v (using the last one read)", err)
		}
	}
	timeout := w.opts.DialTimeout
	if timeout == 0 {
		timeout = defaultDialTimeout
	}
	// The timeout covers the connect and the TLS handshake together.
	dialCtx, cancelDial := context.WithTimeout(ctx, timeout)
	d := net.Dialer{KeepAlive: 15 * time.Second}
	conn, err := d.DialContext(dialCtx, "tcp", addr)
	if err == nil && w.opts.TLS != nil {
		conn, err = dialTLS(dialCtx, conn, w.opts.TLS, addr)
	}
	cancelDial()
	if err != nil {
		return false, err
	}
	defer conn.Close()

	// Until the welcome, ctx ends the connection.
	handshook := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			conn.Close()
		case <-handshook:
		}
	}()
	welcome, lr, err := w.handshake(conn)
	close(handshook)
	if err != nil {
		if w.opts.TLS != nil && remoteAlert(err) {
			err = &tlsError{err}
		}
		return false, err
	}
	interval, cluster := w.onWelcome(welcome, addr)

	w.mu.Lock()
	w.connected = true
	w.mu.Unlock()
	w.signal()
	w.logf("muster: connected to %s, heartbeat every %v", addr, interval)

	readerDone := make(chan error, 1)
	go func() { readerDone <- w.readLoop(lr) }()
	err = w.writeLoop(ctx, conn, interval, cluster, readerDone)
	conn.Close()
	var end sessionEnd
	if errors.As(err, &end) {
		err = end.err
	} else {
		<-readerDone
	}
	w.disconnected()
	if err == nil || errors.Is(err, io.EOF) {
		err = errors.New("connection closed by the daemon")
	}
	return true, err
}

func (e sessionEnd) Error() string { return e.err.Error() }

// handshake says hello and reads up to the welcome.
func (w *Worker) handshake(conn net.Conn) (*inFrame, *lineReader, error) {
	b, err := w.helloLine()
	if err != nil {
		return nil, nil, err
	}
	_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := conn.Write(b); err != nil {
		return nil, nil, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(welcomeTimeout))
	lr := newLineReader(conn, maxInboundLine)
	for {
		line, err := lr.next()
		if err == errLineTooLong {
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("closed before welcome")
			}
			return nil, nil, err
		}
		f, err := decodeInFrame(line)
		if err != nil {
			w.logf("muster: unreadable line from the daemon: %v", err)
			continue
		}
		switch f.Type {
		case "welcome":
			_ = conn.SetReadDeadline(time.Time{})
			return f, lr, nil
		case "error":
			return nil, nil, &DaemonError{Code: f.Code, Message: f.Message}
		}
	}
}

// helloLine renders hello, listing the tasks still running; they count
// as re-reported until the daemon answers lease or cancel.
func (w *Worker) helloLine() ([]byte, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	h := &helloFrame{
		Type:     "hello",
		WorkerID: w.opts.ID,
		PID:      w.pid,
		Hostname: w.hostname,
		Capacity: w.capacityLocked(),
		Labels:   w.opts.Labels,
		Token:    w.token,
	}
	for t := range w.handlers {
		h.TaskTypes = append(h.TaskTypes, t)
	}
	sort.Strings(h.TaskTypes)
	ids := make([]string, 0, len(w.runs))
	for id, r := range w.runs {
		if !r.dropped {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		if len(h.Running) == maxRunning {
			break
		}
		r := w.runs[id]
		r.reported = true
		h.Running = append(h.Running, heldTask{TaskID: id, Lease: r.lease})
	}
	return encodeFrame(h, w.maxFrame)
}

// onWelcome takes the interval and, in cluster mode, the nodes.
func (w *Worker) onWelcome(f *inFrame, addr string) (time.Duration, bool) {
	if f.Version != 0 && f.Version != 1 {
		w.logf("muster: the daemon speaks protocol version %d; this library speaks 1", f.Version)
	}
	interval := time.Duration(f.HeartbeatIntervalMS) * time.Millisecond
	if interval <= 0 {
		interval = defaultInterval
	}
	if interval < 10*time.Millisecond {
		interval = 10 * time.Millisecond
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var nodes []string
	for _, n := range f.Nodes {
		if n = strings.TrimSpace(n); n != "" {
			nodes = append(nodes, n)
		}
	}
	w.learned = nodes
	for i, a := range w.addrsLocked() {
		if a == addr {
			w.addrIdx = i
		}
	}
	return interval, len(f.Nodes) > 0
}

// disconnected: the session is over; progress is not worth keeping.
func (w *Worker) disconnected() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.connected = false
	kept := w.outbox[:0]
	for _, f := range w.outbox {
		if f.kind != kindProgress {
			kept = append(kept, f)
		}
	}
	for i := len(kept); i < len(w.outbox); i++ {
		w.outbox[i] = nil
	}
	w.outbox = kept
	for _, r := range w.runs {
		r.reported = false
	}
}

// readLoop handles what the daemon sends until the connection ends.
// unauthorized, superseded and worker_mismatch end it at once; after other error lines
// the daemon may close the connection, and the last such error is what
// the end is put down to.
func (w *Worker) readLoop(lr *lineReader) error {
	var last error
	for {
		line, err := lr.next()
		if err == errLineTooLong {
			w.logf("muster: skipped a line over %d bytes from the daemon", maxInboundLine)
			continue
		}
		if err != nil {
			if last != nil && errors.Is(err, io.EOF) {
				return last
			}
			return err
		}
		f, err := decodeInFrame(line)
		if err != nil {
			w.logf("muster: unreadable line from the daemon: %v", err)
			continue
		}
		switch f.Type {
		case "task":
			w.onTask(f)
		case "cancel":
			w.onCancel(f.TaskID)
		case "lease":
			w.onLease(f.TaskID, f.Lease)
		case "error":
			de := &DaemonError{Code: f.Code, Message: f.Message}
			switch f.Code {
			case "task_not_held":
				w.onNotHeld(notHeldTask(f))
			case "unauthorized", "superseded", "worker_mismatch":
				return de
			default:
				// A refused frame (the session goes on), or why the
				// daemon is closing the connection (shutting_down,
				// idle_timeout, worker_cap, ...).
				w.logf("muster: %v", de)
				last = de
			}
		}
	}
}

// notHeldTask is the task a task_not_held error is about: its task_id
// field if it has one, else the id its message names ("task ID is not
// held by WORKER").
func notHeldTask(f *inFrame) string {
	if f.TaskID != "" {
		return f.TaskID
	}
	rest := strings.TrimPrefix(f.Message, "task ")
	if rest == f.Message {
		return ""
	}
	id, _, _ := strings.Cut(rest, " ")
	return id
}

func resetTimer(t *time.Timer, d time.Duration) {
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
	t.Reset(d)
}

// writeLoop sends the beats and what waits in the outbox, in order,
// until the read side ends, a write fails, or ctx is done (then it
// flushes, says bye and returns ctx's error).
func (w *Worker) writeLoop(ctx context.Context, conn net.Conn, interval time.Duration, cluster bool, readerDone <-chan error) error {
	beat := time.NewTimer(0)
	defer beat.Stop()
	// A single node answers re-reported tasks with the welcome: those
	// it did not cancel within an interval are this worker's still (its
	// older connection had not closed yet). A cluster node answers lease
	// or cancel once the database did; three intervals at most.
	confirm := w.unconfirmedFor
	if confirm == 0 {
		confirm = interval
		if cluster {
			confirm = 3 * interval
		}
	}
	confirmT := time.NewTimer(confirm)
	defer confirmT.Stop()
	confirmC := confirmT.C
	var lastBeat time.Time
	for {
		if err := w.flushOutbox(conn); err != nil {
			return err
		}
		select {
		case <-beat.C:
			if err := w.beatAt(conn, beat, &lastBeat, interval, false); err != nil {
				return err
			}
		case <-w.wake:
			if err := w.beatAt(conn, beat, &lastBeat, interval, true); err != nil {
				return err
			}
		case <-confirmC:
			w.confirmReported()
			confirmC = nil
		case err := <-readerDone:
			return sessionEnd{err}
		case <-ctx.Done():
			w.goodbye(conn)
			return ctx.Err()
		}
	}
}

// beatAt sends a beat and sets the timer for the next one, interval on.
// On a wake (a change to send) it beats only if the state is dirty, and
// no sooner than minBeatGap after the last beat: until then the timer
// waits out the gap.
func (w *Worker) beatAt(conn net.Conn, beat *time.Timer, last *time.Time, interval time.Duration, wake bool) error {
	if wake {
		if !w.isDirty() {
			return nil
		}
		if since := time.Since(*last); since < minBeatGap {
			resetTimer(beat, minBeatGap-since)
			return nil
		}
	}
	if err := w.beat(conn); err != nil {
		return err
	}
	*last = time.Now()
	resetTimer(beat, interval)
	return nil
}

func (w *Worker) isDirty() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dirty
}

func (w *Worker) confirmReported() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.runs {
		r.reported = false
	}
	w.signal()
}

// beat sends one heartbeat with the whole report.
func (w *Worker) beat(conn net.Conn) error {
	w.mu.Lock()
	w.seq++
	hb := w.rep.heartbeat(w.seq, w.busy > 0)
	w.udpFields(&hb.WorkerID, &hb.Token)
	w.dirty = false
	w.mu.Unlock()
	b, err := encodeFrame(hb, w.maxFrame)
	if err != nil {
		w.logf("muster: heartbeat not sent: %v", err)
		return nil
	}
	_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err = conn.Write(b)
	return err
}

// flushOutbox writes the waiting frames in order; each leaves the
// outbox once written.
func (w *Worker) flushOutbox(conn net.Conn) error {
	return w.flushUntil(conn, time.Time{})
}

// flushUntil writes what may be sent now, each write within its own
// writeTimeout, or all before deadline when one is given.
func (w *Worker) flushUntil(conn net.Conn, deadline time.Time) error {
	for {
		w.mu.Lock()
		f := w.sendableLocked()
		w.mu.Unlock()
		if f == nil {
			return nil
		}
		d := deadline
		if d.IsZero() {
			d = time.Now().Add(writeTimeout)
		}
		_ = conn.SetWriteDeadline(d)
		if _, err := conn.Write(f.data); err != nil {
			return err
		}
		w.mu.Lock()
		w.sentLocked(f)
		w.mu.Unlock()
	}
}

// sendableLocked is the first frame that may be sent now. What is said
// of a task the hello re-reported waits until the daemon confirms it
// (lease, or no cancel in time) or cancels it (then it is dropped), so
// that nothing of the old attempt lands on a new one.
func (w *Worker) sendableLocked() *outFrame {
	for _, f := range w.outbox {
		if f.run == nil || !f.run.reported {
			return f
		}
	}
	return nil
}

// goodbye: flush what is owed and say bye, within byeTimeout.
func (w *Worker) goodbye(conn net.Conn) {
	deadline := time.Now().Add(byeTimeout)
	w.mu.Lock()
	w.stopping = true
	w.mu.Unlock()
	if err := w.flushUntil(conn, deadline); err != nil {
		return
	}
	b, _ := encodeFrame(&byeFrame{Type: "bye"}, w.maxFrame)
	_ = conn.SetWriteDeadline(deadline)
	_, _ = conn.Write(b)
}

func (w *Worker) enqueueLocked(data []byte, r *run, kind outKind) {
	w.frameSeq++
	w.outbox = append(w.outbox, &outFrame{id: w.frameSeq, data: data, run: r, kind: kind})
	switch kind {
	case kindLog:
		w.logBytes += len(data)
	case kindRun:
		w.pendingRuns++
	}
	w.signal()
}

func (w *Worker) removeAtLocked(i int) {
	f := w.outbox[i]
	switch f.kind {
	case kindLog:
		w.logBytes -= len(f.data)
	case kindRun:
		w.pendingRuns--
	}
	copy(w.outbox[i:], w.outbox[i+1:])
	w.outbox[len(w.outbox)-1] = nil
	w.outbox = w.outbox[:len(w.outbox)-1]
}

// sentLocked: f was written. A task's end written, the task is done.
func (w *Worker) sentLocked(f *outFrame) {
	for i, o := range w.outbox {
		if o == f {
			w.removeAtLocked(i)
			break
		}
	}
	if f.kind == kindEnd && f.run != nil && w.runs[f.run.task.ID] == f.run {
		delete(w.runs, f.run.task.ID)
	}
}

// runUDP beats over UDP, fire-and-forget, until ctx is done.
func (w *Worker) runUDP(ctx context.Context) error {
	interval := w.opts.HeartbeatInterval
	if interval <= 0 {
		interval = defaultInterval
	}
	bo := newBackoff(time.Now().UnixNano() ^ int64(os.Getpid())<<32)
	for ctx.Err() == nil {
		addr, _ := w.currentAddr()
		conn, err := net.Dial("udp", addr)
		if err != nil {
			w.logf("muster: %s: %v", addr, err)
			w.advance(addr)
			sleepCtx(ctx, bo.next())
			continue
		}
		bo.reset()
		err = w.udpLoop(ctx, conn, interval)
		conn.Close()
		if err != nil {
			w.logf("muster: %s: %v", addr, err)
			w.advance(addr)
		}
	}
	return nil
}

func (w *Worker) udpLoop(ctx context.Context, conn net.Conn, interval time.Duration) error {
	w.mu.Lock()
	w.connected = true
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.connected = false
		w.mu.Unlock()
	}()
	beat := time.NewTimer(0)
	defer beat.Stop()
	var lastBeat time.Time
	for {
		if err := w.flushOutbox(conn); err != nil {
			return err
		}
		select {
		case <-beat.C:
			if err := w.beatAt(conn, beat, &lastBeat, interval, false); err != nil {
				return err
			}
		case <-w.wake:
			if err := w.beatAt(conn, beat, &lastBeat, interval, true); err != nil {
				return err
			}
		case <-ctx.Done():
			w.mu.Lock()
			f := &byeFrame{Type: "bye"}
			w.udpFields(&f.WorkerID, &f.Token)
			w.mu.Unlock()
			_ = w.flushOutbox(conn)
			if b, err := encodeFrame(f, w.maxFrame); err == nil {
				_, _ = conn.Write(b)
			}
			return nil
		}
	}
}
