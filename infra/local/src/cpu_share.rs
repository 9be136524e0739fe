//! Each function process on the CPU its `MemorySize` buys on Lambda, for the benchmark's cold starts
//! (`cargo stack bench --lambda-cpu`): "at 1,769 MB, a function has the equivalent of one vCPU (one
//! vCPU-second of credits per second)", and less in proportion, so a 128 MB function has about a
//! fourteenth of a core. Enforced by a Linux cgroup's CPU quota, one cgroup per process slot (v1's
//! `cpu` controller or v2's `cpu.max`), which needs root. Lambda does not say over what period it
//! counts the credits; the quota here is the kernel's smallest (1 ms) and the period the one that
//! gives the share, so that a process runs at an even fraction of a core rather than in bursts.
//! Unlike Lambda's, this quota is visible to the process: Rust's `available_parallelism` reads it,
//! so tokio runs one worker thread where on Lambda it would see two vCPUs and run two. A process
//! joins its slot between fork and exec, inside the init the benchmark times, as every process
//! does. On cgroup v2, `+cpu` stays enabled in the root's `cgroup.subtree_control` afterwards.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Lambda's memory for one vCPU.
const MB_PER_VCPU: f64 = 1769.0;
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
        remove_abandoned(shares.root.parent().unwrap_or(v2));
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
        // A cgroup goes only once its processes have, and the stack's kills may still be landing.
        for _ in 0..50 {
            if remove(&self.root) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!("{} still holds processes; it goes with the next --lambda-cpu run", self.root.display());
    }
}

/// Removes a stack's cgroup and its slots; says whether it is gone.
fn remove(root: &Path) -> bool {
    if let Ok(slots) = fs::read_dir(root) {
        for slot in slots.flatten().filter(|s| s.path().is_dir()) {
            let _ = fs::remove_dir(slot.path());
        }
    }
    let _ = fs::remove_dir(root);
    !root.exists()
}

/// The cgroups of runs that ended without removing theirs (killed), once their processes are gone.
fn remove_abandoned(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix("superpay-"));
        if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
            remove(&entry.path());
        }
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
    format!(
        "{}: {e} (--lambda-cpu sets CPU quotas in a cgroup, which needs root and a cgroup it may write)",
        path.display()
    )
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

    #[test]
    fn a_run_killed_before_removing_its_cgroup_has_it_removed_by_the_next() {
        let base = std::env::temp_dir().join(format!("cpu-share-{}", uuid::Uuid::new_v4()));
        let (dead, alive) = (base.join("superpay-4294967295"), base.join(format!("superpay-{}", std::process::id())));
        for slot in [dead.join("HomeFunction-0"), alive.join("HomeFunction-0"), base.join("other")] {
            fs::create_dir_all(slot).unwrap();
        }
        remove_abandoned(&base);
        assert!(!dead.exists(), "a dead run's cgroup goes, with its slots");
        assert!(alive.join("HomeFunction-0").exists(), "a running one's stays");
        assert!(base.join("other").exists(), "and what is not ours");
        assert!(remove(&alive));
        fs::remove_dir_all(base).unwrap();
    }
}
