package forward

import (
	"context"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionalphapb "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
)

// ReadMethods lists the full method names every server serves itself:
// the reads, which a follower answers from its own copy of the state, the
// changelog stream, whose sequence is the same on every server, and the
// health and reflection services, which describe the server called.
// Every other method writes, or may write, and goes to the leader.
func ReadMethods() []string {
	return []string{
		pb.MachineService_GetMachine_FullMethodName,
		pb.MachineService_ListMachines_FullMethodName,
		pb.InstanceService_GetInstance_FullMethodName,
		pb.InstanceService_ListInstances_FullMethodName,
		pb.DeviceService_ListDevices_FullMethodName,
		pb.DeviceService_GetOrder_FullMethodName,
		pb.ChangesService_Changes_FullMethodName,
		// Each server describes itself; Members asks every member.
		pb.ClusterService_Status_FullMethodName,
		pb.ClusterService_Members_FullMethodName,

		healthpb.Health_Check_FullMethodName,
		healthpb.Health_List_FullMethodName,
		healthpb.Health_Watch_FullMethodName,
		reflectionpb.ServerReflection_ServerReflectionInfo_FullMethodName,
		reflectionalphapb.ServerReflection_ServerReflectionInfo_FullMethodName,
	}
}

// readSet is ReadMethods as a set, the default of Options.Local.
func readSet() func(context.Context, string) bool {
	set := make(map[string]bool)
	for _, m := range ReadMethods() {
		set[m] = true
	}
	return func(_ context.Context, m string) bool { return set[m] }
}

// IsRead reports whether fullMethod is one of ReadMethods.
func IsRead(fullMethod string) bool { return readMethods(context.Background(), fullMethod) }

var readMethods = readSet()
