package muster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// Worker statuses a heartbeat reports.
const (
	StatusIdle    = "idle"
	StatusWorking = "working"
	StatusError   = "error"
)

// Job is the worker's current job, shown with it (current_job).
type Job struct {
	ID        string    // at most 256 bytes
	Type      string    // at most 256 bytes
	Files     uint64    // 0: not said
	StartedAt time.Time // zero: not said
}

// MarshalJSON renders the job as the protocol has it, started_at in Unix
// milliseconds.
func (j Job) MarshalJSON() ([]byte, error) {
	type wire struct {
		ID        string `json:"id,omitempty"`
		Type      string `json:"type,omitempty"`
		Files     uint64 `json:"files,omitempty"`
		StartedAt int64  `json:"started_at,omitempty"`
	}
	w := wire{ID: j.ID, Type: j.Type, Files: j.Files}
	if !j.StartedAt.IsZero() {
		w.StartedAt = j.StartedAt.UnixMilli()
	}
	return json.Marshal(w)
}

// ResourceUsage is the worker's resource_usage; zero fields are not sent.
type ResourceUsage struct {
	RSSMB        float64 `json:"rss_mb,omitempty"`
	HeapUsedMB   float64 `json:"heap_used_mb,omitempty"`
	HeapTotalMB  float64 `json:"heap_total_mb,omitempty"`
	ExternalMB   float64 `json:"external_mb,omitempty"`
	PeakRSSMB    float64 `json:"peak_rss_mb,omitempty"`
	Threads      uint64  `json:"threads,omitempty"`
	FDs          uint64  `json:"fds,omitempty"`
	IOReadBytes  uint64  `json:"io_read_bytes,omitempty"`
	IOWriteBytes uint64  `json:"io_write_bytes,omitempty"`
}

// report is what the worker's heartbeats carry: every beat carries all
// of it, so a daemon that restarted learns it again at the next beat.
type report struct {
	status     string // "" : automatic (working while a handler runs, else idle)
	cpu        *float64
	memory     *float64
	gpu        *float64
	resources  *ResourceUsage
	queueDepth *uint64
	jobSet     bool // current_job was set (or cleared) at least once
	job        *Job
	jobJSON    json.RawMessage // set with CurrentJobJSON: sent as it is
}

// A Change is one field of the worker's state, for Worker.Set.
type Change struct {
	apply func(*report) error
}

// Status sets the reported status: StatusIdle, StatusWorking or
// StatusError. "" goes back to the automatic status (working while a
// handler runs, idle otherwise), which is the default.
func Status(s string) Change {
	return Change{func(r *report) error {
		switch s {
		case "", StatusIdle, StatusWorking, StatusError:
			r.status = s
			return nil
		}
		return fmt.Errorf("muster: status %q: idle, working or error", s)
	}}
}

// QueueDepth sets the reported queue depth.
func QueueDepth(n int) Change {
	return Change{func(r *report) error {
		if n < 0 {
			return fmt.Errorf("muster: queue depth %d is negative", n)
		}
		v := uint64(n)
		r.queueDepth = &v
		return nil
	}}
}

// CurrentJob sets the current job; nil clears it.
func CurrentJob(j *Job) Change {
	return Change{func(r *report) error {
		r.jobSet = true
		r.job, r.jobJSON = nil, nil
		if j == nil {
			return nil
		}
		c := *j
		r.job = &c
		if len(j.ID) > maxTextBytes || len(j.Type) > maxTextBytes {
			return fmt.Errorf("muster: current job id and type are at most %d bytes", maxTextBytes)
		}
		return nil
	}}
}

// CurrentJobJSON sets the current job to a JSON object as it is given,
// for fields Job does not have; null (or nothing) clears it. Only the
// frame's size and that it is an object are checked here: the daemon
// refuses a field it cannot read (bad_field).
func CurrentJobJSON(obj json.RawMessage) Change {
	return Change{func(r *report) error {
		t := bytes.TrimSpace(obj)
		r.jobSet = true
		r.job, r.jobJSON = nil, nil
		if len(t) == 0 || string(t) == "null" {
			return nil
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, t); err != nil {
			return fmt.Errorf("muster: current job: %v", err)
		}
		r.jobJSON = buf.Bytes()
		if t[0] != '{' {
			return errors.New("muster: current job: not a JSON object")
		}
		return nil
	}}
}

func percent(name string, v, max float64) (*float64, error) {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > max {
		return nil, fmt.Errorf("muster: %s %v: from 0 to %v", name, v, max)
	}
	return &v, nil
}

// CPUUsage sets cpu_usage: percent of one core, 0 to 409600.
func CPUUsage(pct float64) Change {
	return Change{func(r *report) (err error) {
		r.cpu, err = percent("cpu usage", pct, maxCPUPercent)
		return err
	}}
}

// MemoryUsage sets memory_usage: percent of host memory, 0 to 100.
func MemoryUsage(pct float64) Change {
	return Change{func(r *report) (err error) {
		r.memory, err = percent("memory usage", pct, 100)
		return err
	}}
}

// GPUUsage sets gpu_usage, 0 to 100.
func GPUUsage(pct float64) Change {
	return Change{func(r *report) (err error) {
		r.gpu, err = percent("gpu usage", pct, 100)
		return err
	}}
}

// Resources sets resource_usage.
func Resources(u ResourceUsage) Change {
	return Change{func(r *report) error {
		for _, f := range []float64{u.RSSMB, u.HeapUsedMB, u.HeapTotalMB, u.ExternalMB, u.PeakRSSMB} {
			if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
				return fmt.Errorf("muster: resource usage %v: a finite number from 0", f)
			}
		}
		c := u
		r.resources = &c
		return nil
	}}
}

// heartbeat renders the report as a heartbeat frame.
func (r *report) heartbeat(seq uint64, busy bool) *heartbeatFrame {
	f := &heartbeatFrame{
		Type:          "heartbeat",
		Seq:           seq,
		Status:        r.status,
		CPUUsage:      r.cpu,
		MemoryUsage:   r.memory,
		GPUUsage:      r.gpu,
		ResourceUsage: r.resources,
		QueueDepth:    r.queueDepth,
	}
	if f.Status == "" {
		f.Status = StatusIdle
		if busy {
			f.Status = StatusWorking
		}
	}
	if r.jobSet {
		if r.jobJSON != nil {
			f.CurrentJob = r.jobJSON
		} else if r.job == nil {
			f.CurrentJob = json.RawMessage("null")
		} else if b, err := json.Marshal(r.job); err == nil {
			f.CurrentJob = b
		}
	}
	return f
}
