package server

import (
	"strings"
	"testing"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"github.com/dfsmr/dfsmr/server/fsm"
)

// TestEnumsMirrorTheCore guards the casts in convert.go: every proto enum
// value has the core value of the same number and name, and back.
func TestEnumsMirrorTheCore(t *testing.T) {
	check := func(t *testing.T, prefix string, names map[int32]string, core func(int32) string) {
		t.Helper()
		for n, name := range names {
			if want := prefix + strings.ToUpper(core(n)); name != want {
				t.Errorf("proto %s = %d, core has %s", name, n, want)
			}
		}
	}
	check(t, "CHANGE_KIND_", pb.ChangeKind_name, func(n int32) string { return fsm.ChangeKind(n).String() })
	check(t, "INSTANCE_STATUS_", pb.InstanceStatus_name, func(n int32) string { return fsm.Status(n).String() })
	check(t, "MACHINE_KIND_", pb.MachineKind_name, func(n int32) string { return fsm.Kind(n).String() })
	check(t, "UPGRADE_STRATEGY_", pb.UpgradeStrategy_name, func(n int32) string { return fsm.UpgradeStrategy(n).String() })
	check(t, "BACKOFF_", pb.Backoff_name, func(n int32) string { return fsm.Backoff(n).String() })
	check(t, "BREAKER_STATE_", pb.BreakerState_name, func(n int32) string { return fsm.BreakerState(n).String() })
	// The core has no value the proto lacks.
	if k := fsm.ChangeKind(len(pb.ChangeKind_name)); k.String() != "UNKNOWN" {
		t.Errorf("core change kind %d (%s) is missing from the proto", k, k)
	}
}
