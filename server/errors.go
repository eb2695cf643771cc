package server

import (
	"context"
	"errors"
	"log/slog"
	"strconv"

	"github.com/dfsmr/dfsmr/machines"
	"github.com/dfsmr/dfsmr/server/changes"
	"github.com/dfsmr/dfsmr/server/cluster"
	"github.com/dfsmr/dfsmr/server/device"
	"github.com/dfsmr/dfsmr/server/engine"
	"github.com/dfsmr/dfsmr/server/fsm"
	"github.com/dfsmr/dfsmr/server/store"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// toStatus is the one place where errors become gRPC statuses. Known domain
// errors keep their message; anything else is INTERNAL with a generic
// message, and the detail goes to the log.
func toStatus(log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var (
		verrs   machines.ValidationErrors
		verr    *machines.ValidationError
		inv     *fsm.InvalidError
		lagging *changes.LaggingError
		oor     *changes.OutOfRangeError
		ioErr   *store.IOError
		leader  *cluster.NotLeaderError
	)
	switch {
	case errors.As(err, &verrs):
		return badRequest(err.Error(), validationViolations(verrs)...)
	case errors.As(err, &verr):
		return badRequest(err.Error(), validationViolations(machines.ValidationErrors{verr})...)
	case errors.As(err, &inv):
		return badRequest(err.Error(), &errdetails.BadRequest_FieldViolation{Field: inv.Field, Description: inv.Reason})
	case errors.Is(err, store.ErrCorrupt):
		// The store logged the record and counted it.
		return status.Error(codes.DataLoss, err.Error())
	case errors.As(err, &ioErr):
		// Nothing was acknowledged: the client retries, reads go on.
		return status.Error(codes.Unavailable, ioErr.Error())
	case errors.Is(err, store.ErrFileReplaced):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, fsm.ErrStaleLease):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, fsm.ErrNotHolder):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, fsm.ErrIllegalTransition), errors.Is(err, fsm.ErrFinal), errors.Is(err, fsm.ErrNotRetryable),
		errors.Is(err, engine.ErrCountChanged), errors.Is(err, engine.ErrBulkTooLarge):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, engine.ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, device.ErrReplaced):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, device.ErrShutdown):
		return status.Error(codes.Unavailable, "server is shutting down; reconnect")
	case errors.As(err, &lagging):
		st, _ := status.New(codes.Aborted, err.Error()).WithDetails(&errdetails.ErrorInfo{
			Reason:   "WATCHER_LAGGING",
			Domain:   "dfsmr",
			Metadata: map[string]string{"resume_from_seq": strconv.FormatUint(lagging.ResumeFrom, 10)},
		})
		return st.Err()
	case errors.As(err, &oor) && oor.Compacted():
		st, _ := status.New(codes.OutOfRange, oor.Error()).WithDetails(&errdetails.ErrorInfo{
			Reason:   "CHANGES_COMPACTED",
			Domain:   "dfsmr",
			Metadata: map[string]string{"oldest_seq": strconv.FormatUint(oor.Oldest, 10)},
		})
		return st.Err()
	case errors.As(err, &oor):
		return status.Error(codes.OutOfRange, err.Error())
	case errors.As(err, &leader):
		// The call reached a server that cannot forward it (or was
		// forwarded to one that lost the lead): the client retries,
		// at the leader when the message names one.
		st, _ := status.New(codes.Unavailable, err.Error()).WithDetails(&errdetails.ErrorInfo{
			Reason:   "NOT_LEADER",
			Domain:   "dfsmr",
			Metadata: map[string]string{"leader_id": leader.LeaderID, "leader_raft_address": leader.LeaderAddr},
		})
		return st.Err()
	case errors.Is(err, cluster.ErrNotLeader), errors.Is(err, cluster.ErrNoLeader), errors.Is(err, cluster.ErrShutdown),
		errors.Is(err, errNoCluster), errors.Is(err, store.ErrStale):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, cluster.ErrUnknownOutcome):
		// Retrying is safe for calls with a request id (Transition) or
		// an id (StartInstance): a repeat of an applied call is a no-op.
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, cluster.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, cluster.ErrNoSuchMember):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, errNotMember):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, errMemberExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, errNoTransfer):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, store.ErrClosed), errors.Is(err, changes.ErrClosed), errors.Is(err, errShuttingDown):
		return status.Error(codes.Unavailable, "server is shutting down; retry on another connection")
	}
	log.Error("internal error", "method", method, "err", err)
	return status.Error(codes.Internal, "internal error")
}

func badRequest(msg string, violations ...*errdetails.BadRequest_FieldViolation) error {
	st := status.New(codes.InvalidArgument, msg)
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: violations}); err == nil {
		st = d
	}
	return st.Err()
}

func validationViolations(errs machines.ValidationErrors) []*errdetails.BadRequest_FieldViolation {
	out := make([]*errdetails.BadRequest_FieldViolation, 0, len(errs))
	for _, e := range errs {
		out = append(out, &errdetails.BadRequest_FieldViolation{Field: "source", Description: e.Error()})
	}
	return out
}
