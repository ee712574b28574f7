package floor

import (
	"os"
	"testing"
)

// TestMain lets the test binary play the three roles, as upgradebench does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && IsRole(os.Args[1]) {
		os.Exit(Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestMeasure runs the three processes for real with about a thousand
// connections (more than one SCM_RIGHTS batch, and of records frames) and
// checks that every part was measured and adds up.
func TestMeasure(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r, err := Measure(self, 1100, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Conns != 1100 || r.Interrupt <= 0 || r.Pass <= 0 || r.Convert <= 0 || r.Convert > r.Pass || r.Resume <= 0 {
		t.Fatalf("%+v: want 1100 conns, every part measured, convert within pass", r)
	}
	if r.Floor() != r.Interrupt+r.Pass || r.PauseFloor() != r.Interrupt+r.Resume {
		t.Fatalf("floor %v, pause floor %v: want interrupt + pass, interrupt + resume", r.Floor(), r.PauseFloor())
	}
}

// TestBadRole refuses what is not a role.
func TestBadRole(t *testing.T) {
	if IsRole("client") || Main([]string{"nonsense"}) != 1 || Main([]string{RoleSender, "-n", "0"}) != 1 {
		t.Fatal("a bad role or count was accepted")
	}
}
