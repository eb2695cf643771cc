package web

import (
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The RPCs of retrying and of bulk actions.
const (
	methodRetryInstance   = "/dfsmr.v1.InstanceService/RetryInstance"
	methodCancelInstances = "/dfsmr.v1.InstanceService/CancelInstances"
	methodRetryInstances  = "/dfsmr.v1.InstanceService/RetryInstances"
)

func (h *Handler) retry(r *http.Request, id string, v *viewer) error {
	return status.Error(codes.Unimplemented, "retry is not available yet")
}

func (h *Handler) bulk(r *http.Request, action string, q instanceQuery, dryRun bool, expected int, v *viewer) (int, error) {
	return 0, status.Error(codes.Unimplemented, "bulk actions are not available yet")
}
