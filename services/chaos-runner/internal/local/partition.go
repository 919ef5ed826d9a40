package local

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/scale-dev/scale/services/chaos-runner/internal/experiment"
)

// partition cuts each target's host off from the components in step.From
// (every other component when empty), both ways, for the step's duration.
// The cut is the kernel's to end: its nftables elements expire at the
// duration whether or not the runner is still there to heal them.
func (e *Env) partition(step experiment.Step) (func(context.Context) error, error) {
	if e.Lab == nil {
		return nil, errors.New("a network-partition needs environment.network: hosts")
	}
	var heals []func() error
	heal := func(context.Context) error {
		var errs []error
		for _, h := range heals {
			errs = append(errs, h())
		}
		return errors.Join(errs...)
	}
	for _, t := range step.Targets {
		host := e.Lab.Host(t)
		if host == nil {
			heal(context.Background()) //nolint:errcheck // undoing the cuts made
			return nil, fmt.Errorf("%s runs on no host", t)
		}
		h, err := host.Cut(e.peers(t, step.From), step.Duration.D())
		if err != nil {
			heal(context.Background()) //nolint:errcheck // undoing the cuts made
			return nil, err
		}
		heals = append(heals, h)
	}
	return heal, nil
}

// peers are the addresses of the components named (every component when
// none is): a forwarded one's address, or the hosts of a pipeline
// component's instances, but never the target's own.
func (e *Env) peers(target string, from []string) []netip.Addr {
	if len(from) == 0 {
		from = experiment.Components
	}
	var out []netip.Addr
	for _, c := range from {
		if a, ok := e.Lab.Addr(c); ok {
			out = append(out, a)
			continue
		}
		for _, h := range e.Lab.Hosts() {
			if h.Name != target && binary(h.Name) == c {
				out = append(out, h.Addr)
			}
		}
	}
	return out
}
