//! The Lambda Runtime API (2018-06-01) served to each function's real binary.
//!
//! Every function runs as several instances (processes), as Lambda's concurrency would run it, so
//! races between concurrent invocations happen locally too. Each instance gets its own port, which
//! tells the runner which instance asked for work: that is how init time (process start to first
//! `next`) is measured per instance, and which instance to kill when an invocation times out.
//! Given a fault plan (`crate::faults`), it also kills the process handling the plan's invocations
//! before it answers, as a Lambda sandbox dies: the invocation ends as the runtime exiting
//! (`Outcome::Crashed`) and a fresh process takes the instance's place (a cold start).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot, watch};

use crate::cpu_share::CpuShares;
use crate::faults::{FaultCounts, FaultPlan, KILLED};
use crate::template::{ACCOUNT, Function, REGION};

/// How an invocation ended.
#[derive(Debug)]
pub enum Outcome {
    Response(Bytes),
    /// The function reported an error (`/invocation/{id}/error`).
    Error(String),
    TimedOut,
    /// The process died while handling it.
    Crashed,
    /// No instance was free to take it in time (Lambda would scale out or throttle).
    Throttled,
}

/// Lambda's payload quota for a synchronous invocation, its event and its response alike: 6 MB,
/// which Lambda counts as 6 MiB ("Request must be smaller than 6291456 bytes for the
/// InvokeFunction operation").
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// How long an invocation may wait for a free instance before it is throttled.
const WAIT_FOR_INSTANCE: Duration = Duration::from_secs(30);

struct Invocation {
    id: String,
    event: Bytes,
    timeout: Duration,
    /// Told when an instance takes the invocation: its `Timeout` runs from then, as in Lambda.
    taken: oneshot::Sender<()>,
    reply: oneshot::Sender<Outcome>,
}

struct Shared {
    name: String,
    queue: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    init_times: Mutex<Vec<Duration>>,
    /// How long each process took over its first invocation.
    first_invocations: Mutex<Vec<Duration>>,
    /// Invocations taken so far, numbering them for the fault plan.
    taken: AtomicU64,
    faults: Option<(FaultPlan, FaultCounts)>,
}

/// The invocation an instance is working on.
struct InFlight {
    id: String,
    reply: oneshot::Sender<Outcome>,
    since: Instant,
    /// The fault plan kills its process before it answers; false once the kill is sent.
    doomed: bool,
}

struct Instance {
    shared: Arc<Shared>,
    index: usize,
    in_flight: Mutex<Option<InFlight>>,
    /// Whether this process has answered its first invocation (the second half of a cold start).
    served: AtomicBool,
    started: Mutex<Instant>,
    initialised: AtomicBool,
    /// Kills the running process (its supervisor does), ending its invocation so.
    kill: mpsc::UnboundedSender<Outcome>,
    /// The running process, for its peak memory.
    pid: Mutex<Option<u32>>,
}

/// One function: its invocation queue and its running instances.
pub struct FunctionHost {
    pub logical_id: String,
    timeout: Duration,
    sender: mpsc::Sender<Invocation>,
    shared: Arc<Shared>,
    instances: Vec<Arc<Instance>>,
}

pub struct Launch {
    pub binary: PathBuf,
    /// Arguments to the binary (e.g. an interpreter's module and handler).
    pub args: Vec<String>,
    pub instances: usize,
    pub environment: BTreeMap<String, String>,
    pub log_file: PathBuf,
    /// Kill processes mid-invocation as this plan says, counting the kills there.
    pub faults: Option<(FaultPlan, FaultCounts)>,
    /// Each instance's processes on the CPU the function's `MemorySize` buys on Lambda.
    pub cpu: Option<Arc<CpuShares>>,
}

impl FunctionHost {
    pub async fn start(
        function: &Function,
        launch: Launch,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<Arc<Self>> {
        let (sender, receiver) = mpsc::channel(1024);
        let shared = Arc::new(Shared {
            name: function.logical_id.clone(),
            queue: tokio::sync::Mutex::new(receiver),
            init_times: Mutex::new(Vec::new()),
            first_invocations: Mutex::new(Vec::new()),
            taken: AtomicU64::new(0),
            faults: launch.faults.clone(),
        });
        let mut instances = Vec::new();
        for index in 0..launch.instances.max(1) {
            let (kill, kills) = mpsc::unbounded_channel();
            let instance = Arc::new(Instance {
                shared: shared.clone(),
                index,
                in_flight: Mutex::new(None),
                served: AtomicBool::new(false),
                started: Mutex::new(Instant::now()),
                initialised: AtomicBool::new(false),
                kill,
                pid: Mutex::new(None),
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let port = listener.local_addr()?.port();
            let mut stop = shutdown.clone();
            let app = router(instance.clone());
            tokio::spawn(async move {
                let _ = axum::serve(crate::stack::without_nagle(listener), app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.changed().await;
                    })
                    .await;
            });
            let cpu_slot = match &launch.cpu {
                Some(shares) => Some(
                    shares
                        .slot(&format!("{}-{index}", function.logical_id), function.memory_mb)
                        .map_err(std::io::Error::other)?,
                ),
                None => None,
            };
            let mut environment = launch.environment.clone();
            environment.insert("AWS_LAMBDA_RUNTIME_API".into(), format!("127.0.0.1:{port}"));
            environment.insert("AWS_LAMBDA_FUNCTION_NAME".into(), function.logical_id.clone());
            environment.insert("AWS_LAMBDA_FUNCTION_VERSION".into(), "$LATEST".into());
            environment.insert("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), function.memory_mb.to_string());
            let process = Process {
                binary: launch.binary.clone(),
                args: launch.args.clone(),
                environment,
                log_file: launch.log_file.clone(),
                cpu_slot,
            };
            tokio::spawn(supervise(instance.clone(), kills, process, shutdown.clone()));
            instances.push(instance);
        }
        Ok(Arc::new(FunctionHost {
            logical_id: function.logical_id.clone(),
            timeout: Duration::from_secs(function.timeout_seconds),
            sender,
            shared,
            instances,
        }))
    }

    /// Invokes the function with `event` and waits for its answer, at most its `Timeout`.
    pub async fn invoke(&self, event: Bytes) -> Outcome {
        let id = uuid::Uuid::new_v4().to_string();
        let (reply, answer) = oneshot::channel();
        let (taken, was_taken) = oneshot::channel();
        let invocation = Invocation { id: id.clone(), event, timeout: self.timeout, taken, reply };
        if self.sender.send(invocation).await.is_err() {
            return Outcome::Crashed;
        }
        if !matches!(tokio::time::timeout(WAIT_FOR_INSTANCE, was_taken).await, Ok(Ok(()))) {
            // Dropping `answer` marks the queued invocation abandoned: no instance will run it.
            tracing::warn!(function = %self.logical_id, "no free instance within {WAIT_FOR_INSTANCE:?}; throttled");
            return Outcome::Throttled;
        }
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Outcome::Crashed,
            Err(_) => {
                // Lambda ends a sandbox whose invocation times out; so do we.
                for instance in &self.instances {
                    if instance.in_flight.lock().map(|f| f.as_ref().is_some_and(|f| f.id == id)).unwrap_or(false) {
                        let _ = instance.kill.send(Outcome::TimedOut);
                    }
                }
                tracing::warn!(function = %self.logical_id, request_id = %id, "invocation timed out");
                Outcome::TimedOut
            }
        }
    }

    /// Init times (process start to first `next`) measured so far, one per instance start.
    pub fn init_times(&self) -> Vec<Duration> {
        self.shared.init_times.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// First-invocation durations measured so far, one per process that has served one.
    pub fn first_invocations(&self) -> Vec<Duration> {
        self.shared.first_invocations.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Each running process's peak resident memory (`VmHWM`, Linux's /proc), in MB.
    pub fn peak_rss_mb(&self) -> Vec<f64> {
        self.instances
            .iter()
            .filter_map(|i| *i.pid.lock().ok()?)
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .filter_map(|status| {
                let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
                let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib / 1024.0)
            })
            .collect()
    }

    /// Kills every process and waits, at most `within`, until each one's successor has started and
    /// asked for work: a cold start again (the benchmark's). Says whether they all did.
    pub async fn restart(&self, within: Duration) -> bool {
        let started = self.init_times().len();
        for instance in &self.instances {
            let _ = instance.kill.send(Outcome::Crashed);
        }
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.init_times().len() >= started + self.instances.len() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    /// Waits until every instance has asked for its first invocation.
    pub async fn ready(&self, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.instances.iter().all(|i| i.initialised.load(Ordering::SeqCst)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

fn router(instance: Arc<Instance>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        // A response may be as large as Lambda takes, not axum's default 2 MB.
        .layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES))
        .with_state(instance)
}

async fn next(State(instance): State<Arc<Instance>>) -> impl IntoResponse {
    if !instance.initialised.swap(true, Ordering::SeqCst) {
        let init = instance.started.lock().map(|s| s.elapsed()).unwrap_or_default();
        if let Ok(mut times) = instance.shared.init_times.lock() {
            times.push(init);
        }
        tracing::info!(function = %instance.shared.name, instance = instance.index, init_ms = init.as_secs_f64() * 1000.0, "function initialised");
    }
    loop {
        let invocation = { instance.shared.queue.lock().await.recv().await };
        let Some(invocation) = invocation else {
            // No event will come (the host is gone, as the bench's references are once measured):
            // wait, as Lambda's `next` does, until the stack stops and kills the process. Any
            // answer without an event's headers makes lambda_runtime panic (SIGABRT, with
            // `panic = "abort"`), and its supervisor restart it, over and over.
            return std::future::pending().await;
        };
        // Its caller gave up (timed out) while it waited in the queue.
        if invocation.reply.is_closed() {
            continue;
        }
        let _ = invocation.taken.send(());
        let mut headers = HeaderMap::new();
        let deadline = SystemTime::now() + invocation.timeout;
        let deadline_ms = deadline.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
        let arn = format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{}", instance.shared.name);
        for (name, value) in [
            ("lambda-runtime-aws-request-id", invocation.id.clone()),
            ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
            ("lambda-runtime-invoked-function-arn", arn),
            ("lambda-runtime-trace-id", format!("Root=1-{}", invocation.id.replace('-', ""))),
        ] {
            if let Ok(value) = value.parse() {
                headers.insert(name, value);
            }
        }
        let n = instance.shared.taken.fetch_add(1, Ordering::SeqCst);
        let kill = instance.shared.faults.as_ref().and_then(|(plan, _)| plan.kill(&instance.shared.name, n));
        if let Ok(mut in_flight) = instance.in_flight.lock() {
            *in_flight = Some(InFlight {
                id: invocation.id.clone(),
                reply: invocation.reply,
                since: Instant::now(),
                doomed: kill.is_some(),
            });
        }
        if let Some(after) = kill {
            let (instance, id) = (instance.clone(), invocation.id);
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                kill_doomed(&instance, &id);
            });
        }
        return (StatusCode::OK, headers, invocation.event);
    }
}

/// Kills the process handling `id` if the fault plan doomed it and it was not killed yet; says
/// whether it did.
fn kill_doomed(instance: &Instance, id: &str) -> bool {
    let Ok(mut in_flight) = instance.in_flight.lock() else { return false };
    let Some(doomed) = in_flight.as_mut().filter(|f| f.id == id && f.doomed) else { return false };
    doomed.doomed = false;
    let _ = instance.kill.send(Outcome::Crashed);
    tracing::warn!(function = %instance.shared.name, instance = instance.index, request_id = %id, "killing the function process mid-invocation (injected fault)");
    if let Some((_, counts)) = &instance.shared.faults {
        counts.count(&instance.shared.name, "Invoke", KILLED);
    }
    true
}

async fn finish(instance: &Instance, id: &str, outcome: Outcome) -> StatusCode {
    // A doomed process that answers first dies as it answers: its work is done, its answer lost.
    if kill_doomed(instance, id) {
        // Until its supervisor has ended the invocation, so that this process takes no other.
        for _ in 0..500 {
            if !instance.in_flight.lock().is_ok_and(|f| f.as_ref().is_some_and(|f| f.id == id)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let taken = instance
        .in_flight
        .lock()
        .ok()
        .and_then(|mut f| if f.as_ref().is_some_and(|f| f.id == id) { f.take() } else { None });
    let Some(in_flight) = taken else { return StatusCode::BAD_REQUEST };
    if !instance.served.swap(true, Ordering::SeqCst)
        && let Ok(mut times) = instance.shared.first_invocations.lock()
    {
        times.push(in_flight.since.elapsed());
    }
    let _ = in_flight.reply.send(outcome);
    StatusCode::ACCEPTED
}

async fn response(State(instance): State<Arc<Instance>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    finish(&instance, &id, Outcome::Response(body)).await
}

async fn error(State(instance): State<Arc<Instance>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    finish(&instance, &id, Outcome::Error(String::from_utf8_lossy(&body).into_owned())).await
}

async fn init_error(State(instance): State<Arc<Instance>>, body: Bytes) -> StatusCode {
    tracing::error!(function = %instance.shared.name, error = %String::from_utf8_lossy(&body), "function failed to initialise");
    StatusCode::ACCEPTED
}

/// What an instance's process is started from, again after each exit.
struct Process {
    binary: PathBuf,
    args: Vec<String>,
    environment: BTreeMap<String, String>,
    log_file: PathBuf,
    /// The cgroup it runs in, if any (`Launch::cpu`).
    cpu_slot: Option<PathBuf>,
}

/// Runs one instance's process, restarting it when it exits or is killed, until shutdown.
async fn supervise(
    instance: Arc<Instance>,
    mut kills: mpsc::UnboundedReceiver<Outcome>,
    process: Process,
    mut shutdown: watch::Receiver<bool>,
) {
    let Process { binary, args, environment, log_file, cpu_slot } = process;
    loop {
        if *shutdown.borrow() {
            return;
        }
        // A kill meant for the process that just ended is not for its successor.
        while kills.try_recv().is_ok() {}
        let child = (|| {
            let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_file)?;
            let mut command = crate::process::command(&binary);
            command.args(&args).env_clear().envs(&environment).stdout(log.try_clone()?).stderr(log);
            if let Ok(path) = std::env::var("PATH") {
                command.env("PATH", path);
            }
            if let Some(slot) = &cpu_slot {
                crate::cpu_share::join_on_start(&mut command, slot).map_err(std::io::Error::other)?;
            }
            if let Ok(mut started) = instance.started.lock() {
                *started = Instant::now();
            }
            instance.initialised.store(false, Ordering::SeqCst);
            instance.served.store(false, Ordering::SeqCst);
            command.spawn()
        })();
        let mut child = match child {
            Ok(child) => {
                if let Ok(mut pid) = instance.pid.lock() {
                    *pid = child.id();
                }
                child
            }
            Err(e) => {
                tracing::error!(function = %instance.shared.name, binary = %binary.display(), error = %e, "cannot start function");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        tokio::select! {
            status = child.wait() => {
                tracing::warn!(function = %instance.shared.name, instance = instance.index, status = ?status, "function process exited; restarting");
                fail_in_flight(&instance, Outcome::Crashed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some(outcome) = kills.recv() => {
                let _ = child.kill().await;
                fail_in_flight(&instance, outcome);
            }
            _ = shutdown.changed() => {
                let _ = child.kill().await;
                return;
            }
        }
    }
}

fn fail_in_flight(instance: &Instance, outcome: Outcome) {
    if let Some(in_flight) = instance.in_flight.lock().ok().and_then(|mut f| f.take()) {
        let _ = in_flight.reply.send(outcome);
    }
}
