//! The emulators: dynoxide (DynamoDB, embedded in this process, on SQLite, in memory or on a file
//! it can be restarted from) and moto (SQS and KMS, its server mode, from a pinned version in a
//! project-local virtualenv).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

/// moto is only the SQS/KMS emulator: its DynamoDB is unsafe under concurrent transactions
/// (docs/decisions.md, "dynoxide for DynamoDB, not moto"), which is why DynamoDB is dynoxide.
pub const MOTO_REQUIREMENT: &str = "moto[server]==5.2.5";
/// The benchmark's Python reference: boto3 and AWS's Lambda runtime interface client.
pub const BENCH_REQUIREMENTS: &[&str] = &["boto3==1.44.8", "awslambdaric==4.2.2"];
/// Template linters, in their own virtualenv: sam-cli pins an older boto3 than moto wants.
pub const LINT_REQUIREMENTS: &[&str] = &["cfn-lint==1.58.0", "aws-sam-cli==1.170.0"];
/// The template's security checks, in a virtualenv of their own: checkov's dependencies clash with sam-cli's.
pub const CHECKOV_REQUIREMENTS: &[&str] = &["checkov==3.3.30"];
/// The API against its OpenAPI document (`cargo stack test`).
pub const SCHEMATHESIS_REQUIREMENTS: &[&str] = &["schemathesis==4.32.5"];

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

/// Restarts the embedded dynoxide on its file (`start_dynoxide`): it stops taking connections,
/// lets the requests already running finish, closes the database, stays down for the given time
/// (calls then fail to connect), reopens the file and listens again on the same address.
#[derive(Clone)]
pub struct DynamoDbRestart(mpsc::UnboundedSender<Duration>);

impl DynamoDbRestart {
    pub fn restart(&self, down: Duration) {
        let _ = self.0.send(down);
    }
}

/// Serves dynoxide on `listener`: on the SQLite file `path` (data survives restarts, and it can be
/// restarted: the handle returned), or in memory.
pub fn start_dynoxide(
    listener: TcpListener,
    path: Option<&Path>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Option<DynamoDbRestart>, EmulatorError> {
    let open = |path: Option<&Path>| {
        match path {
            Some(path) => dynoxide::Database::new(&path.to_string_lossy()),
            None => dynoxide::Database::memory(),
        }
        .map_err(|e| EmulatorError::Setup(format!("dynoxide: {e}")))
    };
    if let Some(parent) = path.and_then(Path::parent) {
        std::fs::create_dir_all(parent)?;
    }
    let mut database = open(path)?;
    let address = listener.local_addr()?;
    let restartable = path.is_some();
    let path = path.map(Path::to_path_buf);
    let (restarts, mut requests) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut listener = listener;
        loop {
            let (stop, stopped) = oneshot::channel::<()>();
            let server = dynoxide::server::serve_with_shutdown(listener, database, async move {
                let _ = stopped.await;
            });
            tokio::pin!(server);
            let down = tokio::select! {
                served = &mut server => {
                    if let Err(e) = served {
                        tracing::error!(error = %e, "dynoxide stopped");
                    }
                    return;
                }
                _ = shutdown.changed() => None,
                Some(down) = requests.recv() => Some(down),
            };
            let _ = stop.send(());
            let _ = server.await;
            let Some(down) = down else { return };
            tokio::time::sleep(down).await;
            let reopened = async {
                let database = open(path.as_deref())?;
                Ok::<_, EmulatorError>((TcpListener::bind(address).await?, database))
            };
            (listener, database) = match reopened.await {
                Ok(reopened) => reopened,
                Err(e) => {
                    tracing::error!(error = %e, "dynoxide could not restart");
                    return;
                }
            };
            tracing::info!(down_ms = down.as_millis() as u64, "dynoxide restarted from its file");
        }
    });
    Ok(restartable.then_some(DynamoDbRestart(restarts)))
}

/// A free port on the loopback interface, for a child process that binds it itself.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
