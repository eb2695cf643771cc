package forward

import (
	"slices"
	"strings"
	"testing"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// forwarded is the reviewed list of the methods that go to the leader,
// each with the reason. A new RPC must be added here or to ReadMethods.
var forwarded = map[string]string{
	pb.MachineService_DefineMachine_FullMethodName: "writes a machine",

	pb.InstanceService_StartInstance_FullMethodName:   "writes an instance",
	pb.InstanceService_SignalInstance_FullMethodName:  "writes an instance",
	pb.InstanceService_CancelInstance_FullMethodName:  "writes an instance",
	pb.InstanceService_RetryInstance_FullMethodName:   "writes an instance",
	pb.InstanceService_CancelInstances_FullMethodName: "writes instances",
	pb.InstanceService_RetryInstances_FullMethodName:  "writes instances",

	pb.WorkService_Ready_FullMethodName:           "leases an instance, after a long poll the leader's scheduler wakes",
	pb.WorkService_Transition_FullMethodName:      "writes an instance",
	pb.WorkService_TransitionBatch_FullMethodName: "writes instances",
	pb.WorkService_Heartbeat_FullMethodName:       "extends a lease",
	pb.WorkService_Relinquish_FullMethodName:      "ends a lease",

	pb.DeviceService_Connect_FullMethodName:      "the device session writes reports and sends the leader's commands",
	pb.DeviceService_SubmitOrder_FullMethodName:  "writes an order and its jobs",
	pb.DeviceService_SignalDevice_FullMethodName: "writes a device",
	pb.DeviceService_ReprintJob_FullMethodName:   "writes a job",

	pb.AdminService_Backup_FullMethodName: "the leader's copy is the newest: a follower's may lag",

	pb.ClusterService_AddVoter_FullMethodName:           "only the leader changes the configuration",
	pb.ClusterService_RemoveServer_FullMethodName:       "only the leader changes the configuration",
	pb.ClusterService_TransferLeadership_FullMethodName: "only the leader hands leadership over",
}

// TestEveryMethodClassified fails when a method of a dfsmr service is
// neither a read nor a reviewed forwarded method, or when a listed method
// does not exist.
func TestEveryMethodClassified(t *testing.T) {
	reads := ReadMethods()
	exists := map[string]bool{}
	protoregistry.GlobalFiles.RangeFilesByPackage(pb.File_dfsmr_v1_instance_service_proto.Package(), func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			svc := fd.Services().Get(i)
			for j := range svc.Methods().Len() {
				m := "/" + string(svc.FullName()) + "/" + string(svc.Methods().Get(j).Name())
				exists[m] = true
				read, write := slices.Contains(reads, m), forwarded[m] != ""
				switch {
				case read && write:
					t.Errorf("%s is both a read and forwarded", m)
				case !read && !write:
					t.Errorf("%s is neither a read (ReadMethods) nor forwarded (the table above): classify it", m)
				}
			}
		}
		return true
	})
	if len(exists) == 0 {
		t.Fatal("found no dfsmr methods")
	}
	for _, m := range append(slices.Clone(reads), keys(forwarded)...) {
		if !methodExists(m) {
			t.Errorf("%s is listed but no service has it", m)
		}
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// methodExists reports whether the full method name "/svc/Method" names a
// method of a registered service.
func methodExists(full string) bool {
	svc, method, ok := strings.Cut(strings.TrimPrefix(full, "/"), "/")
	if !ok {
		return false
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return false
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	return ok && sd.Methods().ByName(protoreflect.Name(method)) != nil
}

func TestDefaultLocalIsReadMethods(t *testing.T) {
	local := New(Options{Leader: func() (string, bool, error) { return "", true, nil }}).local
	for _, m := range ReadMethods() {
		if !local(t.Context(), m) {
			t.Errorf("%s is not local by default", m)
		}
	}
	for m := range forwarded {
		if local(t.Context(), m) {
			t.Errorf("%s is local by default", m)
		}
	}
}
