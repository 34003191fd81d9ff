package vcsimtest

import (
	"fmt"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// CloneVMTask is the clone gap filler. vcsim's CloneVM_Task makes the
// clone's disks anew and leaves them empty (it ignores DiskMoveType and
// Spec.Snapshot); vSphere's full clone copies the data. The handler points
// CloneVM_Task calls at the doubles, which run vcsim's clone and then copy
// each source disk's data into the clone's disk of the same position,
// before the task reports success:
//
//   - from the snapshot named in Spec.Snapshot, on a site with
//     Options.RevertData (the snapshot's frozen copy: vSphere reads the
//     snapshot's disk chain, which ESXi's writes never changed);
//   - otherwise from the VM's current disks: on a direct-lane site the
//     base disks are written behind vSphere's back, and every snapshot's
//     empty delta reads the current base, so that is what vSphere's clone
//     of any snapshot holds.
//
// vcsim's clone also drops Spec.Config.Annotation; the filler sets it.
func (d *doubles) CloneVMTask(ctx *simulator.Context, req *types.CloneVM_Task) soap.HasFault {
	body := &methods.CloneVM_TaskBody{}
	vm, ok := ctx.Map.Get(req.This).(*simulator.VirtualMachine)
	if !ok {
		body.Fault_ = simulator.Fault("vcsimtest: clone of an unknown VM", &types.ManagedObjectNotFound{Obj: req.This})
		return body
	}
	var inner soap.HasFault
	ctx.WithLock(vm, func() { inner = vm.CloneVMTask(ctx, req) })
	if inner.Fault() != nil {
		return inner
	}
	innerRef := inner.(*methods.CloneVM_TaskBody).Res.Returnval
	task := simulator.CreateTask(vm, "cloneVm", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		it := ctx.Map.Get(innerRef).(*simulator.Task)
		it.Wait()
		if it.Info.Error != nil {
			return nil, it.Info.Error.Fault
		}
		clone, ok := it.Info.Result.(types.ManagedObjectReference)
		if !ok {
			return nil, &types.RuntimeFault{}
		}
		if c := req.Spec.Config; c != nil && c.Annotation != "" {
			if obj, ok := ctx.Map.Get(clone).(*simulator.VirtualMachine); ok {
				ctx.WithLock(obj, func() {
					ctx.Update(obj, []types.PropertyChange{{Name: "config.annotation", Val: c.Annotation}})
				})
			}
		}
		if err := d.cloneData(ctx, vm, req.Spec.Snapshot, clone); err != nil {
			d.fail(fmt.Errorf("copy the disks of %s into its clone %s: %w", req.This.Value, clone.Value, err))
			return nil, &types.RuntimeFault{}
		}
		return clone, nil
	})
	body.Res = &types.CloneVM_TaskResponse{Returnval: task.Run(ctx)}
	return body
}

// cloneData copies the data of vm's disks (or of snap's frozen copies)
// into the clone's disks, by position.
func (d *doubles) cloneData(ctx *simulator.Context, vm *simulator.VirtualMachine, snap *types.ManagedObjectReference, ref types.ManagedObjectReference) error {
	clone, ok := ctx.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		return fmt.Errorf("no clone %s", ref.Value)
	}
	var frozen map[int32]snapped
	if snap != nil && d.revertData {
		d.mu.Lock()
		frozen = d.snaps[snap.Value]
		d.mu.Unlock()
	}
	var srcs []string
	var err error
	ctx.WithLock(vm, func() {
		for _, disk := range disks(vm) {
			if st, ok := frozen[disk.Key]; ok {
				srcs = append(srcs, st.flat)
				continue
			}
			var flat string
			if flat, err = d.site.flatPath(disk); err != nil {
				return
			}
			srcs = append(srcs, flat)
		}
	})
	if err != nil {
		return err
	}
	ctx.WithLock(clone, func() {
		dst := disks(clone)
		if len(dst) != len(srcs) {
			err = fmt.Errorf("the clone has %d disks, its source %d", len(dst), len(srcs))
			return
		}
		for i, disk := range dst {
			var flat string
			if flat, err = d.site.flatPath(disk); err != nil {
				return
			}
			if err = sparseCopy(srcs[i], flat, diskSize(disk)); err != nil {
				return
			}
		}
	})
	return err
}
