package muster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// DefaultAddr is the daemon's default heartbeat address.
const DefaultAddr = "127.0.0.1:8090"

// Options configure a Worker.
type Options struct {
	// ID is the worker id: 1 to 128 bytes of A-Za-z0-9._:@-, not
	// "registry", "scale" or "snapshot". Required.
	ID string
	// Addrs are the daemon's heartbeat addresses (host:port), tried in
	// order. Empty: DefaultAddr.
	Addrs []string
	// Token is the heartbeat token, for a daemon with
	// heartbeat_token_file set. TokenFile, when set, is read instead
	// (its first line, trimmed) at every connect.
	Token     string
	TokenFile string
	// Labels are sent in hello; tasks can be aimed at them.
	Labels map[string]string
	// Capacity is how many tasks the worker runs at once. 0 with
	// handlers registered means 1; without handlers the worker takes no
	// tasks whatever it says.
	Capacity int
	// Hostname and PID go in hello; empty or 0: this host's and process's.
	Hostname string
	PID      int
	// UDP sends heartbeats, runs and bye as UDP datagrams to the first
	// address, fire-and-forget, with no TCP session: such a worker
	// takes no tasks and beats every HeartbeatInterval.
	UDP bool
	// HeartbeatInterval is the beat interval in UDP mode (default 5 s).
	// Over TCP the daemon's welcome says it.
	HeartbeatInterval time.Duration
	// MaxFrameBytes is the daemon's max_frame_bytes (default 65536): a
	// frame longer than it is refused before it is sent.
	MaxFrameBytes int
	// MaxStateBytes is the daemon's max_worker_state_bytes (default 16
	// KiB): a Set whose labels and current job are plainly over it is
	// refused.
	MaxStateBytes int
	// DialTimeout bounds each connect, the TLS handshake included
	// (default 5 s).
	DialTimeout time.Duration
	// TLS, when not nil, wraps the heartbeat connection in TLS (1.2 at
	// least) with this configuration: RootCAs verify the daemon's
	// certificate (nil: the system's roots), Certificates hold the
	// client certificate for a daemon that requires one (its subject's
	// CN is then the worker's identity). An empty ServerName is set, for
	// each connect, to the host part of the address dialled, so that the
	// certificate is checked against that address's name or IP (the
	// addresses rotate; a ServerName given is used for all). TLSConfig
	// builds one from PEM files. A failed handshake is a failed connect:
	// logged, and tried again after the usual backoff. nil: plain TCP.
	// A UDP worker cannot use TLS: NewWorker refuses both together.
	TLS *tls.Config
	// Logger, when set, is told of reconnects and of frames the daemon
	// refused.
	Logger *log.Logger
}

// OptionsFromEnv reads the environment the conformance runner and the
// daemon's pool use:
//
//	MUSTER_ADDRS        comma-separated host:port (else MUSTER_HEARTBEAT_ADDR)
//	MUSTER_WORKER_ID    the worker id
//	MUSTER_HEARTBEAT_TOKEN_FILE  the heartbeat token's file (as muster agent reads it;
//	                    MUSTER_TOKEN_FILE is the API token's, for the muster CLI)
//	MUSTER_LABELS       k=v,k=v
//	MUSTER_CAPACITY     tasks at once
//	MUSTER_TLS          1 or true: TLS on the heartbeat connection (0, false or
//	                    unset: plain TCP), configured by TLSConfigFromEnv from
//	                    MUSTER_TLS_CA_FILE, MUSTER_TLS_CERT_FILE and MUSTER_TLS_KEY_FILE
//
// Unset variables leave their fields zero; a malformed one is an error
// (so is a TLS file that cannot be read). Without MUSTER_TLS the
// MUSTER_TLS_* files are not read here.
func OptionsFromEnv() (Options, error) {
	var o Options
	addrs := os.Getenv("MUSTER_ADDRS")
	if addrs == "" {
		addrs = os.Getenv("MUSTER_HEARTBEAT_ADDR")
	}
	for _, a := range strings.Split(addrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			o.Addrs = append(o.Addrs, a)
		}
	}
	o.ID = os.Getenv("MUSTER_WORKER_ID")
	o.TokenFile = os.Getenv("MUSTER_HEARTBEAT_TOKEN_FILE")
	if s := os.Getenv("MUSTER_LABELS"); strings.TrimSpace(s) != "" {
		labels, err := parseLabels(s)
		if err != nil {
			return o, fmt.Errorf("muster: MUSTER_LABELS: %w", err)
		}
		o.Labels = labels
	}
	if s := strings.TrimSpace(os.Getenv("MUSTER_CAPACITY")); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return o, fmt.Errorf("muster: MUSTER_CAPACITY: %q is not a whole number", s)
		}
		o.Capacity = n
	}
	on, err := envBool("MUSTER_TLS")
	if err != nil {
		return o, err
	}
	if on {
		cfg, err := TLSConfigFromEnv()
		if err != nil {
			return o, err
		}
		o.TLS = cfg
	}
	return o, nil
}

// envBool reads a switch: 1 or true is on; 0, false or unset is off.
func envBool(name string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(os.Getenv(name))) {
	case "1", "true":
		return true, nil
	case "", "0", "false":
		return false, nil
	}
	return false, fmt.Errorf("muster: %s: %q is not 1, true, 0 or false", name, os.Getenv(name))
}

// parseLabels reads k=v,k=v.
func parseLabels(s string) (map[string]string, error) {
	labels := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value", kv)
		}
		labels[k] = strings.TrimSpace(v)
	}
	return labels, nil
}

// ValidWorkerID says whether id can name a worker.
func ValidWorkerID(id string) bool {
	if id == "" || len(id) > maxWorkerID {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == ':' || c == '@' || c == '-'
		if !ok {
			return false
		}
	}
	switch id {
	case "registry", "scale", "snapshot":
		return false
	}
	return true
}

func (o *Options) check() error {
	if !ValidWorkerID(o.ID) {
		return fmt.Errorf("muster: worker id %q: 1-128 bytes of A-Za-z0-9._:@-, not registry, scale or snapshot", o.ID)
	}
	if len(o.Labels) > maxLabels {
		return fmt.Errorf("muster: %d labels, at most %d", len(o.Labels), maxLabels)
	}
	keys := make([]string, 0, len(o.Labels))
	for k := range o.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "" || len(k) > maxLabelKey {
			return fmt.Errorf("muster: label key %q: 1 to %d bytes", k, maxLabelKey)
		}
		if len(o.Labels[k]) > maxLabelValue {
			return fmt.Errorf("muster: label %q: value over %d bytes", k, maxLabelValue)
		}
	}
	if o.Capacity < 0 {
		return errors.New("muster: negative capacity")
	}
	for _, a := range o.Addrs {
		if !strings.Contains(a, ":") {
			return fmt.Errorf("muster: address %q is not host:port", a)
		}
	}
	if o.UDP && o.TLS != nil {
		return errors.New("muster: UDP heartbeats cannot use TLS: use TCP (UDP false) with TLS, or UDP without it")
	}
	if o.MaxFrameBytes < 0 || o.MaxStateBytes < 0 || o.HeartbeatInterval < 0 || o.DialTimeout < 0 {
		return errors.New("muster: negative limit")
	}
	return nil
}

// readToken reads a token file as the daemon does: its first line, trimmed.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	t := strings.TrimSpace(line)
	if t == "" {
		return "", fmt.Errorf("muster: token file %s is empty", path)
	}
	return t, nil
}
