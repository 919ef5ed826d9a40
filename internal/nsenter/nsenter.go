// Package nsenter runs a function with the calling thread inside another
// network namespace: what a socket opened there, or a child forked there,
// needs. Sockets keep their namespace and children inherit their forking
// thread's, so both outlive the call.
package nsenter

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Net runs fn on a thread that has entered the network namespace at path
// (such as /proc/PID/ns/net) and returns it to its own afterwards. A thread
// that cannot return is never unlocked, so Go ends it instead of reusing it.
func Net(path string, fn func() error) error {
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("network namespace: %w", err)
	}
	defer target.Close()
	runtime.LockOSThread()
	own, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("network namespace: %w", err)
	}
	defer own.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering the network namespace %s: %w", path, err)
	}
	fnErr := fn()
	if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("leaving the network namespace %s: %w", path, err)
	}
	runtime.UnlockOSThread()
	return fnErr
}
