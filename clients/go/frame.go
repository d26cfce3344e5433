package muster

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// DefaultMaxFrameBytes is the daemon's default max_frame_bytes: the
// longest frame it reads, without its newline.
const DefaultMaxFrameBytes = 65536

// DefaultMaxStateBytes is the daemon's default max_worker_state_bytes:
// what a worker's labels, running tasks and current job may weigh.
const DefaultMaxStateBytes = 16 << 10

// Limits of muster-protocol(7) and of the daemon's decoder that the
// library holds its own frames to.
const (
	maxTextBytes     = 256    // text fields (hostname, current_job.id, ...)
	maxErrorBytes    = 4096   // task_update error
	maxProgressBytes = 1024   // task_progress message
	maxLogLines      = 1024   // lines per task_log
	maxLabels        = 64     // labels per worker
	maxLabelKey      = 128    // bytes of a label key
	maxLabelValue    = 1024   // bytes of a label value
	maxTaskTypes     = 64     // task_types in hello
	maxTaskType      = 128    // bytes of a task type
	maxRunning       = 1024   // running in hello
	maxCPUPercent    = 409600 // cpu_usage
	maxRunMillis     = 30 * 24 * 3600 * 1000
	maxWorkerID      = 128
	maxInboundLine   = 8 << 20 // longest daemon line read (a task frame with its payload)
)

// ErrFrameTooLarge is wrapped by the error a frame over the frame limit
// gives: the library refuses it before anything is sent, and the
// connection is kept.
var ErrFrameTooLarge = errors.New("muster: frame too large")

// encodeFrame renders v as one JSON line ending in "\n", or refuses it
// when the JSON (without the newline) is longer than max bytes.
func encodeFrame(v any, max int) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("muster: encoding frame: %w", err)
	}
	b := buf.Bytes() // Encode ends it with exactly one "\n"
	if n := len(b) - 1; n > max {
		return nil, fmt.Errorf("%w: %d bytes, over the limit of %d", ErrFrameTooLarge, n, max)
	}
	return b, nil
}

// errLineTooLong is what lineReader.next says of a line over its limit;
// the line is skipped and the reader can go on.
var errLineTooLong = errors.New("muster: line over the limit")

// lineReader splits a stream into newline-ended frames: a "\r" before
// the "\n" is dropped, blank lines are skipped, and a line longer than
// max is discarded without being buffered whole.
type lineReader struct {
	r   *bufio.Reader
	max int
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next non-blank line without its line ending. A last
// line without "\n" before EOF is returned too; then io.EOF.
func (lr *lineReader) next() ([]byte, error) {
	for {
		var line []byte
		tooLong := false
		for {
			chunk, err := lr.r.ReadSlice('\n')
			if !tooLong {
				if len(line)+len(chunk) > lr.max+2 {
					tooLong = true
					line = nil
				} else {
					line = append(line, chunk...)
				}
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil {
				if err == io.EOF && !tooLong && len(bytes.TrimSpace(line)) > 0 {
					return line, nil
				}
				return nil, err
			}
			break
		}
		if tooLong {
			return nil, errLineTooLong
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) > lr.max {
			return nil, errLineTooLong
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		return line, nil
	}
}

// truncate cuts s to at most n bytes, at a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Frames the worker sends.

type heldTask struct {
	TaskID string `json:"task_id"`
	Lease  uint64 `json:"lease"`
}

type helloFrame struct {
	Type      string            `json:"type"`
	WorkerID  string            `json:"worker_id"`
	PID       int               `json:"pid,omitempty"`
	Hostname  string            `json:"hostname,omitempty"`
	Capacity  int               `json:"capacity,omitempty"`
	TaskTypes []string          `json:"task_types,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Token     string            `json:"token,omitempty"`
	Running   []heldTask        `json:"running,omitempty"`
}

type heartbeatFrame struct {
	Type          string          `json:"type"`
	WorkerID      string          `json:"worker_id,omitempty"`
	Token         string          `json:"token,omitempty"`
	Seq           uint64          `json:"seq"`
	Status        string          `json:"status,omitempty"`
	CPUUsage      *float64        `json:"cpu_usage,omitempty"`
	MemoryUsage   *float64        `json:"memory_usage,omitempty"`
	GPUUsage      *float64        `json:"gpu_usage,omitempty"`
	ResourceUsage *ResourceUsage  `json:"resource_usage,omitempty"`
	QueueDepth    *uint64         `json:"queue_depth,omitempty"`
	CurrentJob    json.RawMessage `json:"current_job,omitempty"`
}

type runFrame struct {
	Type       string  `json:"type"`
	WorkerID   string  `json:"worker_id,omitempty"`
	Token      string  `json:"token,omitempty"`
	DurationMS float64 `json:"duration_ms"`
	OK         bool    `json:"ok"`
}

type byeFrame struct {
	Type     string `json:"type"`
	WorkerID string `json:"worker_id,omitempty"`
	Token    string `json:"token,omitempty"`
}

type taskUpdateFrame struct {
	Type      string          `json:"type"`
	TaskID    string          `json:"task_id"`
	State     string          `json:"state"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     string          `json:"error,omitempty"`
	Retryable *bool           `json:"retryable,omitempty"`
}

type taskLogFrame struct {
	Type   string   `json:"type"`
	TaskID string   `json:"task_id"`
	Lines  []string `json:"lines"`
}

type taskProgressFrame struct {
	Type     string   `json:"type"`
	TaskID   string   `json:"task_id"`
	Fraction *float64 `json:"fraction,omitempty"`
	Message  string   `json:"message,omitempty"`
}

// inFrame is any frame the daemon sends, its fields merged: welcome,
// task, cancel, lease, error. Unknown fields and types are ignored.
type inFrame struct {
	Type string `json:"type"`

	// welcome
	Version             int      `json:"version"`
	WorkerID            string   `json:"worker_id"`
	HeartbeatIntervalMS uint64   `json:"heartbeat_interval_ms"`
	InactivityTimeoutMS uint64   `json:"inactivity_timeout_ms"`
	Nodes               []string `json:"nodes"`

	// task, cancel, lease
	TaskID      string          `json:"task_id"`
	TaskType    string          `json:"task_type"`
	Payload     json.RawMessage `json:"payload"`
	Attempt     int             `json:"attempt"`
	TimeoutMS   uint64          `json:"timeout_ms"`
	Lease       uint64          `json:"lease"`
	Traceparent string          `json:"traceparent"`
	Tracestate  string          `json:"tracestate"`

	// error
	Code    string `json:"code"`
	Message string `json:"message"`
}

func decodeInFrame(line []byte) (*inFrame, error) {
	var f inFrame
	if err := json.Unmarshal(line, &f); err != nil {
		return nil, err
	}
	if f.Type == "" {
		return nil, errors.New("frame without a type")
	}
	return &f, nil
}
