//! Each function process on the CPU its `MemorySize` buys on Lambda, for the benchmark's cold starts
//! (`cargo stack bench --lambda-cpu`): "at 1,769 MB, a function has the equivalent of one vCPU (one
//! vCPU-second of credits per second)", and less in proportion, so a 128 MB function has about a
//! fourteenth of a core. Enforced by a Linux cgroup's CPU quota, one cgroup per process slot (v1's
//! `cpu` controller or v2's `cpu.max`), which needs root. Lambda does not say over what period it
//! counts the credits; the quota here is the kernel's smallest (1 ms) and the period the one that
//! gives the share, so that a process runs at an even fraction of a core rather than in bursts.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Lambda's memory for one vCPU.
pub const MB_PER_VCPU: f64 = 1769.0;
/// The kernel's smallest CFS quota, in microseconds.
const MIN_QUOTA_US: u64 = 1000;
/// The period for a share of a core or more (the kernel's default).
const WHOLE_PERIOD_US: u64 = 100_000;

/// The cgroup this stack's processes' slots are made in, removed (with its slots) when dropped.
#[derive(Debug)]
pub struct CpuShares {
    root: PathBuf,
    v2: bool,
}

impl CpuShares {
    /// A cgroup of this process's own under the machine's CPU controller.
    pub fn create() -> Result<Self, String> {
        let name = format!("superpay-{}", std::process::id());
        let (v1, v2) = (Path::new("/sys/fs/cgroup/cpu"), Path::new("/sys/fs/cgroup"));
        let shares = if v1.join("cpu.cfs_quota_us").exists() {
            CpuShares { root: v1.join(name), v2: false }
        } else if fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"))
        {
            // v2 hands a controller down only to the children of a cgroup that enables it.
            write(&v2.join("cgroup.subtree_control"), "+cpu")?;
            CpuShares { root: v2.join(name), v2: true }
        } else {
            return Err("--lambda-cpu needs a cgroup CPU controller (/sys/fs/cgroup/cpu or cgroup v2's cpu)".into());
        };
        fs::create_dir_all(&shares.root).map_err(|e| cgroup_error(&shares.root, e))?;
        if shares.v2 {
            write(&shares.root.join("cgroup.subtree_control"), "+cpu")?;
        }
        Ok(shares)
    }

    /// A slot named `name` that lets its processes use `memory_mb / MB_PER_VCPU` of a core.
    pub fn slot(&self, name: &str, memory_mb: u64) -> Result<PathBuf, String> {
        let dir = self.root.join(name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"));
        fs::create_dir_all(&dir).map_err(|e| cgroup_error(&dir, e))?;
        let (quota, period) = quota_and_period(memory_mb);
        if self.v2 {
            write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
        } else {
            write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
            write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        Ok(dir)
    }
}

impl Drop for CpuShares {
    fn drop(&mut self) {
        // A cgroup goes only once its processes have; the stack has stopped them by now.
        if let Ok(slots) = fs::read_dir(&self.root) {
            for slot in slots.flatten().filter(|s| s.path().is_dir()) {
                let _ = fs::remove_dir(slot.path());
            }
        }
        let _ = fs::remove_dir(&self.root);
    }
}

/// Makes the process `command` starts join the slot `dir` before it runs anything of its own.
pub fn join_on_start(command: &mut tokio::process::Command, dir: &Path) -> Result<(), String> {
    let procs = dir.join("cgroup.procs");
    let file = fs::OpenOptions::new().write(true).open(&procs).map_err(|e| cgroup_error(&procs, e))?;
    // SAFETY: between fork and exec the child only writes to a file already open ("0" is the
    // writer itself); nothing is allocated or locked.
    unsafe {
        command.pre_exec(move || (&file).write_all(b"0"));
    }
    Ok(())
}

/// The smallest quota the kernel takes, over the period that makes it `memory_mb`'s share.
fn quota_and_period(memory_mb: u64) -> (u64, u64) {
    let share = memory_mb as f64 / MB_PER_VCPU;
    if share < 1.0 {
        (MIN_QUOTA_US, (MIN_QUOTA_US as f64 / share).round() as u64)
    } else {
        ((WHOLE_PERIOD_US as f64 * share).round() as u64, WHOLE_PERIOD_US)
    }
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    fs::write(path, value).map_err(|e| cgroup_error(path, e))
}

fn cgroup_error(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e} (--lambda-cpu sets CPU quotas, which needs root)", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_128_mb_function_gets_a_millisecond_in_every_13_8() {
        assert_eq!(quota_and_period(128), (1000, 13_820));
        assert_eq!(quota_and_period(1769), (100_000, 100_000));
        assert_eq!(quota_and_period(3538), (200_000, 100_000));
    }
}
