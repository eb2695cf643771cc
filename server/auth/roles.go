package auth

import (
	"slices"
	"strings"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
)

// Role is a named set of RPCs a principal may call.
type Role string

// The roles. A principal may hold several.
const (
	// RoleAdmin may call everything: define machines, cancel anything, and
	// every RPC of the other roles (it may connect as any device).
	RoleAdmin Role = "admin"
	// RoleOperator starts, signals and cancels instances, submits orders,
	// and reads everything a reader reads.
	RoleOperator Role = "operator"
	// RoleWorker leases work and reports it (Ready, Transition,
	// Heartbeat, Relinquish), on every machine or only on the principal's
	// listed machines.
	RoleWorker Role = "worker"
	// RoleDevice connects as one device: the one named like the principal.
	RoleDevice Role = "device"
	// RoleReader gets, lists and tails the changelog.
	RoleReader Role = "reader"
)

// Roles lists every role, strongest first.
var Roles = []Role{RoleAdmin, RoleOperator, RoleWorker, RoleDevice, RoleReader}

// includes says which roles a role grants besides itself. Inclusion is
// not transitive: list everything.
var includes = map[Role][]Role{
	RoleAdmin:    {RoleOperator, RoleWorker, RoleDevice, RoleReader},
	RoleOperator: {RoleReader},
}

// Grants reports whether holding r grants want.
func (r Role) Grants(want Role) bool {
	return r == want || slices.Contains(includes[r], want)
}

func (r Role) valid() bool { return slices.Contains(Roles, r) }

// The DeviceService's RPCs.
const (
	methodDeviceConnect     = "/dfsmr.v1.DeviceService/Connect"
	methodDeviceList        = "/dfsmr.v1.DeviceService/ListDevices"
	methodDeviceSubmitOrder = "/dfsmr.v1.DeviceService/SubmitOrder"
)

// methods maps every RPC of the dfsmr API to the role it needs. An RPC
// missing here is denied to everyone once authentication is on: adding an
// RPC means deciding who may call it (the server's tests fail until then).
var methods = map[string]Role{
	pb.MachineService_DefineMachine_FullMethodName: RoleAdmin,
	pb.MachineService_GetMachine_FullMethodName:    RoleReader,
	pb.MachineService_ListMachines_FullMethodName:  RoleReader,

	pb.InstanceService_StartInstance_FullMethodName:   RoleOperator,
	pb.InstanceService_GetInstance_FullMethodName:     RoleReader,
	pb.InstanceService_ListInstances_FullMethodName:   RoleReader,
	pb.InstanceService_SignalInstance_FullMethodName:  RoleOperator,
	pb.InstanceService_CancelInstance_FullMethodName:  RoleOperator,
	pb.InstanceService_RetryInstance_FullMethodName:   RoleOperator,
	pb.InstanceService_CancelInstances_FullMethodName: RoleOperator,
	pb.InstanceService_RetryInstances_FullMethodName:  RoleOperator,

	pb.WorkService_Ready_FullMethodName:           RoleWorker,
	pb.WorkService_Transition_FullMethodName:      RoleWorker,
	pb.WorkService_Heartbeat_FullMethodName:       RoleWorker,
	pb.WorkService_Relinquish_FullMethodName:      RoleWorker,
	pb.WorkService_TransitionBatch_FullMethodName: RoleWorker,

	pb.ChangesService_Changes_FullMethodName: RoleReader,

	pb.AdminService_Backup_FullMethodName: RoleAdmin,

	pb.ClusterService_Status_FullMethodName:             RoleAdmin,
	pb.ClusterService_Members_FullMethodName:            RoleAdmin,
	pb.ClusterService_AddVoter_FullMethodName:           RoleAdmin,
	pb.ClusterService_RemoveServer_FullMethodName:       RoleAdmin,
	pb.ClusterService_TransferLeadership_FullMethodName: RoleAdmin,

	methodDeviceConnect:     RoleDevice,
	methodDeviceList:        RoleReader,
	methodDeviceSubmitOrder: RoleOperator,

	pb.DeviceService_SignalDevice_FullMethodName: RoleOperator,
	pb.DeviceService_GetOrder_FullMethodName:     RoleReader,
	pb.DeviceService_ReprintJob_FullMethodName:   RoleOperator,
}

// MethodRole returns the role an RPC (a full method name,
// "/dfsmr.v1.WorkService/Ready") needs, and false when the RPC is not in
// the role map.
func MethodRole(method string) (Role, bool) {
	r, ok := methods[method]
	return r, ok
}

// openServices are callable without credentials: load balancers probe
// health, and grpcurl needs reflection (which Config can turn off).
var openServices = []string{
	"grpc.health.v1.Health",
	"grpc.reflection.v1.ServerReflection",
	"grpc.reflection.v1alpha.ServerReflection",
}

// Open reports whether service (a full service name, "grpc.health.v1.Health")
// is callable without credentials.
func Open(service string) bool {
	return slices.Contains(openServices, strings.TrimPrefix(service, "/"))
}
