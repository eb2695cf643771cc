package reportdemo

import (
	"testing"
	"time"

	pb "github.com/dfsmr/dfsmr/gen/dfsmr/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestRetryPolicyFollowsTheMachine: the serial loop waits as the machine's
// download node would, whatever its growth: a linear policy grows
// linearly (it used to be read as fixed) and the jitter is kept.
func TestRetryPolicyFollowsTheMachine(t *testing.T) {
	for _, tt := range []struct {
		growth pb.Backoff
		want   time.Duration // before the third retry, without jitter
	}{
		{pb.Backoff_BACKOFF_FIXED, time.Second},
		{pb.Backoff_BACKOFF_LINEAR, 3 * time.Second},
		{pb.Backoff_BACKOFF_EXPONENTIAL, 4 * time.Second},
	} {
		m := &pb.Machine{Nodes: []*pb.Node{{Name: "downloadable", Retry: &pb.Retry{
			MaxAttempts: 5, Backoff: tt.growth, Initial: durationpb.New(time.Second), Jitter: 0.5,
		}}}}
		p := retryPolicy(m)
		if got := p.delay(3, 0.5); got != tt.want || p.MaxAttempts != 5 {
			t.Errorf("%s: delay %v, max attempts %d; want %v and 5", tt.growth, got, p.MaxAttempts, tt.want)
		}
		if lo := p.delay(3, 0); lo != tt.want/2 {
			t.Errorf("%s: lowest jittered delay %v, want %v", tt.growth, lo, tt.want/2)
		}
	}
}
