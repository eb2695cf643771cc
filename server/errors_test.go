package server

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/dfsmr/dfsmr/server/changes"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestLaggingWatcherGetsResumePoint: the status a lagging watcher ends with
// carries the sequence to resume from, as the README and client.Follow rely.
func TestLaggingWatcherGetsResumePoint(t *testing.T) {
	err := toStatus(slog.Default(), "/dfsmr.v1.ChangesService/Changes", fmt.Errorf("stream: %w", &changes.LaggingError{ResumeFrom: 42}))
	st := status.Convert(err)
	if st.Code() != codes.Aborted {
		t.Fatalf("code = %s, want ABORTED", st.Code())
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetMetadata()["resume_from_seq"] == "42" {
			return
		}
	}
	t.Fatalf("no resume_from_seq=42 in %v", st.Details())
}
