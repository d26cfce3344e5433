package muster

import (
	"reflect"
	"testing"
)

func TestOptionsFromEnv(t *testing.T) {
	t.Setenv("MUSTER_ADDRS", " 10.0.0.1:8090, 10.0.0.2:8090 ,")
	t.Setenv("MUSTER_WORKER_ID", "w-7")
	t.Setenv("MUSTER_TOKEN_FILE", "/etc/muster/api.token")
	t.Setenv("MUSTER_HEARTBEAT_TOKEN_FILE", "/etc/muster/hb.token")
	t.Setenv("MUSTER_LABELS", "pool=scan, zone = a,empty=")
	t.Setenv("MUSTER_CAPACITY", "4")
	t.Setenv("MUSTER_TLS", "") // plain: TLS nil (tls_test.go has the rest)
	o, err := OptionsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	want := Options{
		ID:        "w-7",
		Addrs:     []string{"10.0.0.1:8090", "10.0.0.2:8090"},
		TokenFile: "/etc/muster/hb.token",
		Labels:    map[string]string{"pool": "scan", "zone": "a", "empty": ""},
		Capacity:  4,
	}
	if !reflect.DeepEqual(o, want) {
		t.Fatalf("got %+v", o)
	}
	t.Setenv("MUSTER_HEARTBEAT_TOKEN_FILE", "/run/hb")
	if o, _ := OptionsFromEnv(); o.TokenFile != "/run/hb" {
		t.Fatalf("MUSTER_HEARTBEAT_TOKEN_FILE: %q", o.TokenFile)
	}
	t.Setenv("MUSTER_ADDRS", "")
	t.Setenv("MUSTER_HEARTBEAT_ADDR", "127.0.0.1:9999")
	if o, _ := OptionsFromEnv(); !reflect.DeepEqual(o.Addrs, []string{"127.0.0.1:9999"}) {
		t.Fatalf("MUSTER_HEARTBEAT_ADDR: %v", o.Addrs)
	}
	for _, bad := range [][2]string{{"MUSTER_CAPACITY", "four"}, {"MUSTER_CAPACITY", "-1"}, {"MUSTER_LABELS", "novalue"}, {"MUSTER_LABELS", "=x"}} {
		t.Setenv("MUSTER_CAPACITY", "")
		t.Setenv("MUSTER_LABELS", "")
		t.Setenv(bad[0], bad[1])
		if _, err := OptionsFromEnv(); err == nil {
			t.Errorf("%s=%q was taken", bad[0], bad[1])
		}
	}
}

func TestValidWorkerID(t *testing.T) {
	for id, ok := range map[string]bool{
		"w1": true, "w.1_x:y@z-2": true, "": false, "a b": false, "w/1": false,
		"registry": false, "scale": false, "snapshot": false,
	} {
		if ValidWorkerID(id) != ok {
			t.Errorf("%q: want %v", id, ok)
		}
	}
}
