//! Child processes (function instances, moto) that cannot outlive the runner.

use std::path::Path;

pub fn command(program: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command.kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent. It makes the kernel
    // kill the child when the runner dies, even by SIGKILL, so no emulator or function is orphaned.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command
}
