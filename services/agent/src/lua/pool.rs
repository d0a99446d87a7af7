//! A pool of sandboxed VMs. Creating a Lua state and its sandbox costs far more than running a
//! payment, so calls borrow an idle VM and give it back.

use parking_lot::Mutex;

use super::vm::{Limits, Vm};
use crate::runner::RunError;

/// Idle VMs kept at most; more than the process ever runs at once in practice, few enough
/// that a burst does not pin memory forever.
const MAX_IDLE_VMS: usize = 1024;

pub(super) struct VmPool {
    limits: Limits,
    idle: Mutex<Vec<Vm>>,
}

impl VmPool {
    pub(super) fn new(limits: Limits) -> Self {
        VmPool {
            limits,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn limits(&self) -> Limits {
        self.limits
    }

    /// How many VMs are idle.
    #[cfg(test)]
    pub(super) fn idle_len(&self) -> usize {
        self.idle.lock().len()
    }

    /// An idle VM, or a new one. The caller owns it until [`VmPool::check_in`]; dropping it
    /// instead (a cancelled call, a VM in doubt) simply discards it.
    pub(super) fn check_out(&self) -> Result<Vm, RunError> {
        // Pop in its own statement so that the lock is not held while a VM is built.
        let idle = self.idle.lock().pop();
        match idle {
            Some(vm) => Ok(vm),
            None => Vm::new(self.limits)
                .map_err(|e| RunError::Internal(format!("cannot create a Lua VM: {e}"))),
        }
    }

    /// Returns a VM after a call. `reusable` is false after a call that hit a limit: such a VM
    /// may hold a lot of garbage, and dropping it is the simplest way to be sure nothing of
    /// that call survives.
    pub(super) fn check_in(&self, mut vm: Vm, reusable: bool) {
        if !reusable || vm.end_call().is_err() {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE_VMS {
            idle.push(vm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> VmPool {
        VmPool::new(Limits {
            instruction_budget: 1000,
            memory_limit: 1 << 20,
        })
    }

    #[test]
    fn vms_are_reused_unless_in_doubt() {
        let pool = pool();
        let vm = pool.check_out().expect("new vm");
        vm.begin_call().expect("begin");
        pool.check_in(vm, true);
        assert_eq!(pool.idle_len(), 1);

        let vm = pool.check_out().expect("pooled vm");
        assert_eq!(pool.idle_len(), 0);
        pool.check_in(vm, false);
        assert_eq!(pool.idle_len(), 0);
    }
}
