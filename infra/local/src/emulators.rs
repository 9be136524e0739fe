//! The emulators: dynoxide (DynamoDB, embedded in this process, on SQLite) and moto (SQS and KMS,
//! its server mode, from a pinned version in a project-local virtualenv).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

/// moto is only the SQS/KMS emulator: its DynamoDB is unsafe under concurrent transactions
/// (docs/decisions.md, "dynoxide for DynamoDB, not moto"), which is why DynamoDB is dynoxide.
pub const MOTO_REQUIREMENT: &str = "moto[server]==5.2.5";
/// The benchmark's Python reference: boto3 and AWS's Lambda runtime interface client.
pub const BENCH_REQUIREMENTS: &[&str] = &["boto3==1.44.8", "awslambdaric==4.2.2"];
/// Template linters, in their own virtualenv: sam-cli pins an older boto3 than moto wants.
pub const LINT_REQUIREMENTS: &[&str] = &["cfn-lint==1.58.0", "aws-sam-cli==1.170.0"];
/// The template's security checks, in a virtualenv of their own: checkov's dependencies clash with sam-cli's.
pub const CHECKOV_REQUIREMENTS: &[&str] = &["checkov==3.3.30"];

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A virtualenv under `dir` holding exactly `requirements`, created or refreshed when they change.
/// Returns its `bin` folder.
pub async fn virtualenv(dir: &Path, requirements: &[&str]) -> Result<PathBuf, EmulatorError> {
    let bin = dir.join("bin");
    let marker = dir.join("superpay-requirements.txt");
    let wanted = requirements.join("\n");
    if std::fs::read_to_string(&marker).is_ok_and(|have| have == wanted) {
        return Ok(bin);
    }
    eprintln!("installing {} into {} (once)", requirements.join(" "), dir.display());
    let _ = std::fs::remove_dir_all(dir);
    run(Path::new("python3"), &["-m".as_ref(), "venv".as_ref(), dir.as_os_str()]).await?;
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "-m".as_ref(),
        "pip".as_ref(),
        "install".as_ref(),
        "--quiet".as_ref(),
        "--disable-pip-version-check".as_ref(),
    ];
    args.extend(requirements.iter().map(std::ffi::OsStr::new));
    run(&bin.join("python"), &args).await?;
    std::fs::write(&marker, wanted)?;
    Ok(bin)
}

async fn run(program: &Path, args: &[&std::ffi::OsStr]) -> Result<(), EmulatorError> {
    let output = tokio::process::Command::new(program).args(args).stdin(Stdio::null()).output().await?;
    if !output.status.success() {
        return Err(EmulatorError::Setup(format!(
            "{} {:?} failed: {}",
            program.display(),
            args,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(())
}

/// Starts moto's server on `port`, writing its log to `log`, and waits until it answers.
pub async fn start_moto(venv_bin: &Path, port: u16, log: &Path) -> Result<tokio::process::Child, EmulatorError> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut command = crate::process::command(&venv_bin.join("moto_server"));
    command
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null());
    let child = command.spawn()?;
    listening(port, "moto").await?;
    Ok(child)
}

async fn listening(port: u16, what: &str) -> Result<(), EmulatorError> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(EmulatorError::Setup(format!("{what} did not start listening on port {port} within 10 s")))
}

/// Starts a simulated partner (`infra/merchant-sim`: `merchant-sim`, `miniapp-sim`) on `port`, with
/// `environment` added to its own.
pub async fn start_simulator(
    binary: &Path,
    port: u16,
    log: &Path,
    what: &str,
    environment: &[(&str, String)],
) -> Result<tokio::process::Child, EmulatorError> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut command = crate::process::command(binary);
    command
        .args(["--port", &port.to_string()])
        .envs(environment.iter().map(|(name, value)| (name, value)))
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null());
    let child = command.spawn()?;
    listening(port, what).await?;
    Ok(child)
}

/// Serves dynoxide on `listener`: on the SQLite file `path` (data survives restarts), or in memory.
pub fn start_dynoxide(
    listener: TcpListener,
    path: Option<&Path>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), EmulatorError> {
    let database = match path {
        Some(path) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            dynoxide::Database::new(&path.to_string_lossy())
        }
        None => dynoxide::Database::memory(),
    }
    .map_err(|e| EmulatorError::Setup(format!("dynoxide: {e}")))?;
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        if let Err(e) = dynoxide::server::serve_with_shutdown(listener, database, stop).await {
            tracing::error!(error = %e, "dynoxide stopped");
        }
    });
    Ok(())
}

/// A free port on the loopback interface, for a child process that binds it itself.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
