package demo

import (
	"testing"
	"time"
)

func TestContainsField(t *testing.T) {
	line := `level=ERROR msg="handoff: upgrade failed; this process carries on" pid=123 err="child exited"`
	for field, want := range map[string]bool{"pid=123": true, "pid=12": false, "pid=1234": false} {
		if got := containsField(line, field); got != want {
			t.Errorf("containsField(%q) = %v, want %v", field, got, want)
		}
	}
}

func TestMinSettle(t *testing.T) {
	base := MinSettle(200, 4000, 4)
	if base < 10*time.Second || base > 12*time.Second {
		t.Errorf("MinSettle(200, 4000, 4) = %v, want about 11s", base)
	}
	if slower := MinSettle(200, 2000, 4); slower <= base {
		t.Errorf("half the rate: %v, not longer than %v", slower, base)
	}
	if fast := MinSettle(10, 100000, 4); fast != minSettleFloor {
		t.Errorf("a fast load: %v, want the floor %v", fast, minSettleFloor)
	}
}
