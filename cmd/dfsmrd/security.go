package main

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/dfsmr/dfsmr/server"
)

// reloadOnHangup re-reads the tokens file on every SIGHUP until the
// returned function is called.
func reloadOnHangup(s *server.Server, log *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-hup:
				if err := s.Reload(); err != nil {
					log.Error("reload on SIGHUP failed; keeping the previous tokens", "err", err)
				} else {
					log.Info("reloaded on SIGHUP")
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-finished
	}
}
