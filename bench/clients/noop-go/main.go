// A Go worker of the muster library with a no-op handler, for
// bench/clients.sh: capacity, id and addresses from MUSTER_* variables.
package main

import (
	"context"
	"log"
	"os"
	"os/signal"
	"syscall"

	"muster.dev/muster"
)

func main() {
	o, err := muster.OptionsFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	w, err := muster.NewWorker(o)
	if err != nil {
		log.Fatal(err)
	}
	w.Handle("noop", func(ctx context.Context, t *muster.Task) (any, error) { return nil, nil })
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := w.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
