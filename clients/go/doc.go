// Package muster is the Go worker library of muster: a worker that
// reports to musterd over its heartbeat protocol (muster-protocol(7),
// version 1) and runs the tasks the daemon hands it, and a small client
// of the daemon's HTTP task API.
//
// A worker:
//
//	w, err := muster.NewWorker(muster.Options{ID: "resizer-1", Addrs: []string{"127.0.0.1:8090"}, Capacity: 4})
//	if err != nil {
//		log.Fatal(err)
//	}
//	w.Handle("resize", func(ctx context.Context, t *muster.Task) (any, error) {
//		t.Log("resizing")
//		t.Progress(0.5, "halfway")
//		return map[string]any{"ok": true}, nil
//	})
//	if err := w.Run(ctx); err != nil {
//		log.Fatal(err) // the token refused, or the id taken over
//	}
//
// Run says hello over TCP, beats at the interval the daemon's welcome
// gives, and reconnects when the connection is lost: the next address at
// once, and once every address failed, after 250 ms doubling up to 5 s
// (each wait between half and one and a half of that). Tasks keep
// running meanwhile; their updates and logs wait for the new connection,
// whose hello re-reports them.
package muster
