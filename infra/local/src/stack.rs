//! The whole local stack, started and stopped as one: emulators, resources from template.yaml,
//! every function's real binary behind the Runtime API, the HTTP API, and the SQS pollers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use superpay::bank::BANK_KEY_OWNER;
use superpay::keys::KeyService;
use tokio::sync::watch;

use crate::aws_proxy::{AwsCalls, Faults};
use crate::conflicts::Conflicts;
use crate::cpu_share::CpuShares;
use crate::emulators::{self, EmulatorError};
use crate::faults::{FAULTS_LOG, FaultCounts, FaultPlan};
use crate::gateway::Gateway;
use crate::iam::Policy;
use crate::jwt::DevKeys;
use crate::runtime_api::{FunctionHost, Launch};
use crate::sqs_source::Poller;
use crate::template::{ACCOUNT, JwtAuthorizer, Naming, REGION, Template};
use crate::tls::LocalTls;

/// The AWS calls a function's IAM policy refused, one JSON line each, in the stack's log folder.
pub const ACCESS_DENIED_LOG: &str = "access-denied.log";

/// Processes per function unless told otherwise: two, so that concurrent invocations race.
pub const DEFAULT_INSTANCES: usize = 2;
/// `cargo stack up --instances` at most: every function gets that many processes (20 functions).
pub const MAX_INSTANCES: usize = 16;

/// The whole number given to option `name` in `args` (`--name N` or `--name=N`), refused outside
/// `bounds`; `None` when the option is absent.
pub fn number_option(
    args: &[String],
    name: &str,
    bounds: std::ops::RangeInclusive<usize>,
) -> Result<Option<usize>, String> {
    let mut value = None;
    for (i, arg) in args.iter().enumerate() {
        if arg == name {
            value = Some(args.get(i + 1).ok_or(format!("{name} needs a number"))?.as_str());
        } else if let Some(given) = arg.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')) {
            value = Some(given);
        }
    }
    let Some(value) = value else { return Ok(None) };
    match value.parse::<usize>() {
        Ok(n) if bounds.contains(&n) => Ok(Some(n)),
        _ => Err(format!("{name} takes a whole number from {} to {}, not {value:?}", bounds.start(), bounds.end())),
    }
}

/// The id of the key the stack shares with the simulated bank (a fresh key at each start).
const BANK_KEY_ID: &str = "bank.local.k1";

pub struct Options {
    pub template: PathBuf,
    /// The project's ignored state folder (`.superpay/`): virtualenvs, data, logs.
    pub state: PathBuf,
    /// Where the function binaries are (`target/debug`).
    pub binaries: PathBuf,
    /// Keep DynamoDB data in a file under `state` across runs; otherwise in memory.
    pub persist: bool,
    /// 0 picks a free port.
    pub gateway_port: u16,
    /// Lambda's Invoke API.
    pub lambda_port: u16,
    pub dynamodb_port: u16,
    pub moto_port: u16,
    pub merchant_sim_port: u16,
    pub miniapp_sim_port: u16,
    pub instances_per_function: usize,
    /// Functions run with another number of instances than `instances_per_function`, by logical id
    /// (the benchmark's contention scenario runs many of PurchasesFunction).
    pub instances_of: BTreeMap<String, usize>,
    /// Transactions on one item at once conflict, as on DynamoDB (`crate::conflicts`).
    pub conflicts: bool,
    /// Run the template's `Schedule` events (the benchmark turns them off to keep counts quiet).
    pub run_schedules: bool,
    /// Start each function's processes only when the previous function's are up, so that cold
    /// starts are measured without the other functions' starts competing for the cores.
    pub start_one_at_a_time: bool,
    pub parameters: HashMap<String, String>,
    pub stack_name: String,
    pub logs: PathBuf,
    /// Faults injected into the functions' AWS calls, their processes and DynamoDB
    /// (`crate::faults`); none if `None`.
    pub faults: Option<FaultPlan>,
    /// Every function's AWS endpoint behind TLS, as on AWS (the benchmark's cold starts).
    pub tls: Option<Arc<LocalTls>>,
    /// Every process on the CPU its `MemorySize` buys on Lambda (`crate::cpu_share`).
    pub cpu: Option<Arc<CpuShares>>,
}

/// What a client of the stack (a person, the end-to-end tests) needs to reach it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackInfo {
    pub api_url: String,
    /// Lambda's Invoke API (`/2015-03-31/functions/<LogicalId>/invocations`).
    pub lambda_endpoint: String,
    pub dynamodb_endpoint: String,
    pub moto_endpoint: String,
    /// The simulated merchant product server (`infra/merchant-sim`).
    pub merchant_simulator_url: String,
    /// The simulated mini-app server (`infra/merchant-sim`, binary `miniapp-sim`).
    pub miniapp_simulator_url: String,
    pub tables: BTreeMap<String, String>,
    pub queues: BTreeMap<String, String>,
    pub keys: BTreeMap<String, String>,
    /// Each function's AWS endpoint: its proxy, which applies the function's IAM policy.
    pub aws_endpoints: BTreeMap<String, String>,
    pub authorizer_issuer: String,
    pub authorizer_audience: Vec<String>,
    pub logs: PathBuf,
    /// The faults the stack injects, if it does: the fault tests run only then.
    #[serde(default)]
    pub faults: Option<FaultPlan>,
}

impl StackInfo {
    /// The SDK settings that point a client at the emulators: the SDK's own endpoint variables.
    pub fn sdk_environment(&self) -> Vec<(String, String)> {
        [
            ("AWS_REGION", REGION),
            ("AWS_DEFAULT_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "local"),
            ("AWS_SECRET_ACCESS_KEY", "local"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_ENDPOINT_URL_DYNAMODB", &self.dynamodb_endpoint),
            ("AWS_ENDPOINT_URL_SQS", &self.moto_endpoint),
            ("AWS_ENDPOINT_URL_KMS", &self.moto_endpoint),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    pub fn authorizer(&self) -> JwtAuthorizer {
        JwtAuthorizer { issuer: self.authorizer_issuer.clone(), audience: self.authorizer_audience.clone() }
    }

    /// The running stack that `cargo stack test` describes in `SUPERPAY_STACK`.
    pub fn from_env() -> Result<Self, String> {
        let path = std::env::var("SUPERPAY_STACK")
            .map_err(|_| "SUPERPAY_STACK is not set: run the end-to-end tests with `cargo stack test`".to_owned())?;
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))
    }

    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        let credentials = aws_sdk_dynamodb::config::Credentials::new("local", "local", None, None, "superpay-local");
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .credentials_provider(credentials)
            .load()
            .await
    }

    pub async fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::config::Builder::from(&self.sdk_config().await)
            .endpoint_url(&self.dynamodb_endpoint)
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        let config =
            aws_sdk_sqs::config::Builder::from(&self.sdk_config().await).endpoint_url(&self.moto_endpoint).build();
        aws_sdk_sqs::Client::from_conf(config)
    }

    pub async fn kms(&self) -> aws_sdk_kms::Client {
        let config =
            aws_sdk_kms::config::Builder::from(&self.sdk_config().await).endpoint_url(&self.moto_endpoint).build();
        aws_sdk_kms::Client::from_conf(config)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(transparent)]
    Emulator(#[from] EmulatorError),
    #[error(transparent)]
    Template(#[from] crate::template::TemplateError),
    #[error(transparent)]
    Resource(#[from] crate::resources::ResourceError),
    #[error("{0}")]
    Other(String),
}

impl From<std::io::Error> for StackError {
    fn from(e: std::io::Error) -> Self {
        StackError::Emulator(e.into())
    }
}

pub struct ColdStart {
    pub function: String,
    pub init_ms: f64,
    pub first_invocation_ms: f64,
    /// Median peak resident memory of the running processes (Linux), in MB.
    pub peak_rss_mb: f64,
    /// How many processes the medians are over.
    pub samples: usize,
}

/// The SDK environment of a process whose AWS calls go through a proxy of its own, which enforces
/// `policy` and counts them as `name`'s (`crate::aws_proxy`), behind TLS when `tls` is given; and
/// that endpoint.
async fn proxied(
    name: &str,
    policy: Policy,
    shared: &crate::aws_proxy::Shared,
    info: &StackInfo,
    tls: Option<&LocalTls>,
    stop: watch::Receiver<bool>,
) -> Result<(BTreeMap<String, String>, String), StackError> {
    let mut environment: BTreeMap<String, String> = info.sdk_environment().into_iter().collect();
    let proxy = crate::aws_proxy::start(
        name,
        policy,
        shared.clone(),
        &info.dynamodb_endpoint,
        &info.moto_endpoint,
        stop.clone(),
    )
    .await?;
    let proxy = match tls {
        Some(tls) => {
            environment.extend(tls.environment());
            tls.front(&proxy, stop).await.map_err(StackError::Other)?
        }
        None => proxy,
    };
    for service in ["DYNAMODB", "SQS", "KMS"] {
        environment.insert(format!("AWS_ENDPOINT_URL_{service}"), proxy.clone());
    }
    Ok((environment, proxy))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

impl ColdStart {
    /// Medians over `host`'s processes: init (process start to first `next`), first invocation,
    /// in milliseconds, and peak RSS; NaN where nothing was measured yet.
    pub fn of(host: &FunctionHost) -> Self {
        let ms = |durations: Vec<Duration>| durations.iter().map(|d| d.as_secs_f64() * 1000.0).collect::<Vec<_>>();
        let first = ms(host.first_invocations());
        ColdStart {
            function: host.logical_id.clone(),
            init_ms: median(ms(host.init_times())),
            samples: first.len(),
            first_invocation_ms: median(first),
            peak_rss_mb: median(host.peak_rss_mb()),
        }
    }

    /// `init 3.1 ms, first invocation 12.0 ms`, saying so instead of a NaN where nothing was measured.
    pub fn describe(&self) -> String {
        let init =
            if self.init_ms.is_nan() { "not initialised yet".into() } else { format!("init {:.1} ms", self.init_ms) };
        let first = if self.samples == 0 {
            "not invoked yet".into()
        } else {
            format!("first invocation {:.1} ms", self.first_invocation_ms)
        };
        format!("{init}, {first}")
    }
}

pub struct Stack {
    pub info: StackInfo,
    /// Every function's AWS calls, counted by its proxy.
    pub aws_calls: AwsCalls,
    /// What every proxy shares (`proxied`).
    proxies: crate::aws_proxy::Shared,
    /// The faults injected (none without a plan).
    pub faults: FaultCounts,
    /// The transaction conflicts registry, when on (`Options::conflicts`), and what it answered.
    pub conflicts: Option<Conflicts>,
    pub template: Template,
    pub keys: Arc<DevKeys>,
    pub hosts: Vec<Arc<FunctionHost>>,
    /// The TLS fronts' CA, when the endpoints are behind TLS (`Options::tls`).
    pub tls: Option<Arc<LocalTls>>,
    /// The CPU shares, when on (`Options::cpu`).
    pub cpu: Option<Arc<CpuShares>>,
    shutdown: watch::Sender<bool>,
    moto: tokio::process::Child,
    simulators: Vec<tokio::process::Child>,
}

struct LocalNaming {
    moto_endpoint: String,
    key_ids: HashMap<String, String>,
}

impl Naming for LocalNaming {
    fn queue_url(&self, name: &str) -> String {
        format!("{}/{ACCOUNT}/{name}", self.moto_endpoint)
    }

    fn key_id(&self, logical_id: &str) -> Option<String> {
        self.key_ids.get(logical_id).cloned()
    }
}

async fn bind(port: u16) -> Result<tokio::net::TcpListener, StackError> {
    tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| StackError::Other(format!("cannot listen on 127.0.0.1:{port}: {e} (is another stack running?)")))
}

/// `listener`, its connections' writes sent at once: with Nagle on, a small write waits for the
/// peer's delayed ACK of the one before, 40 ms, which a first call's figure must not carry (as
/// the TLS fronts, `crate::tls`).
pub fn without_nagle(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    })
}

/// Invokes `host` every `seconds` with an EventBridge scheduled event, as a `Schedule` event would.
fn spawn_schedule(host: Arc<FunctionHost>, seconds: u64, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(seconds));
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticks.tick() => {
                    let event = serde_json::json!({
                        "version": "0",
                        "id": uuid::Uuid::new_v4().to_string(),
                        "detail-type": "Scheduled Event",
                        "source": "aws.events",
                        "account": ACCOUNT,
                        "time": "",
                        "region": REGION,
                        "resources": [],
                        "detail": {}
                    });
                    if let crate::runtime_api::Outcome::Error(e) = host.invoke(event.to_string().into()).await {
                        tracing::warn!(function = %host.logical_id, error = %e, "scheduled invocation failed");
                    }
                    // A whole period from the end of each invocation. EventBridge would invoke
                    // another process meanwhile; here one slower than its period, its missed ticks
                    // fired at once (tokio's default), kept one of a function's two local
                    // processes busy without pause, starving its queue's consumers until the
                    // outbox re-sent what they had not reached.
                    ticks.reset();
                }
            }
        }
    });
}

impl Stack {
    pub async fn start(options: Options) -> Result<Self, StackError> {
        std::fs::create_dir_all(&options.logs)?;
        let (shutdown, stop) = watch::channel(false);
        let keys = Arc::new(DevKeys::load().map_err(|e| StackError::Other(format!("development key: {e}")))?);
        let text = std::fs::read_to_string(&options.template)?;

        let dynamodb_listener = bind(options.dynamodb_port).await?;
        let dynamodb_endpoint = format!("http://{}", dynamodb_listener.local_addr()?);
        // The fault run keeps DynamoDB on a fresh file, to restart it from (`crate::faults`).
        let database = match (options.persist, options.faults) {
            (true, _) => Some(options.state.join("data").join("dynamodb.sqlite")),
            (false, Some(_)) => {
                let file = options.logs.join("dynamodb.sqlite");
                for stale in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{stale}", file.display()));
                }
                Some(file)
            }
            (false, None) => None,
        };
        let restart_dynamodb = emulators::start_dynoxide(dynamodb_listener, database.as_deref(), stop.clone())?;

        let moto_bin =
            emulators::virtualenv(&options.state.join("venv").join("moto"), &[emulators::MOTO_REQUIREMENT]).await?;
        let moto_port = if options.moto_port == 0 { emulators::free_port()? } else { options.moto_port };
        let moto = emulators::start_moto(&moto_bin, moto_port, &options.logs.join("moto.log")).await?;
        let moto_endpoint = format!("http://127.0.0.1:{moto_port}");

        let mut info = StackInfo {
            api_url: String::new(),
            lambda_endpoint: String::new(),
            dynamodb_endpoint,
            moto_endpoint: moto_endpoint.clone(),
            merchant_simulator_url: String::new(),
            miniapp_simulator_url: String::new(),
            tables: BTreeMap::new(),
            queues: BTreeMap::new(),
            keys: BTreeMap::new(),
            aws_endpoints: BTreeMap::new(),
            authorizer_issuer: String::new(),
            authorizer_audience: vec![],
            logs: options.logs.clone(),
            faults: options.faults,
        };
        let key_ids = crate::resources::create_keys(&info.kms().await, &Template::keys_to_create(&text)?).await?;
        // The bank is the merchant simulator's, with a fresh key made as a deployment keeps it: the
        // simulated bank gets it in clear, the functions as KMS ciphertext (template `BankKeyCiphertext`).
        let party_keys =
            key_ids.get("PartyKeysKey").ok_or_else(|| StackError::Other("no PartyKeysKey in template.yaml".into()))?;
        let bank_key = KeyService::new(info.kms().await, party_keys)
            .generate(BANK_KEY_OWNER)
            .await
            .map_err(|e| StackError::Other(format!("the bank's key: {e}")))?;
        // Bound first: the merchant simulator, playing a partner platform, calls the API.
        let gateway_listener = bind(options.gateway_port).await?;
        info.api_url = format!("http://{}", gateway_listener.local_addr()?);
        let bank_environment = [
            ("BANK_KEY_ID", BANK_KEY_ID.to_owned()),
            ("BANK_KEY", bank_key.key.to_base64().expose().clone()),
            ("SUPERPAY_API_URL", info.api_url.clone()),
        ];
        let mut simulators = vec![];
        for (binary, port, what, url, environment) in [
            (
                "merchant-sim",
                options.merchant_sim_port,
                "the merchant simulator",
                &mut info.merchant_simulator_url,
                &bank_environment[..],
            ),
            (
                "miniapp-sim",
                options.miniapp_sim_port,
                "the mini-app server simulator",
                &mut info.miniapp_simulator_url,
                &[],
            ),
        ] {
            let port = if port == 0 { emulators::free_port()? } else { port };
            let log = options.logs.join(format!("{binary}.log"));
            let binary = options.binaries.join(binary);
            simulators.push(emulators::start_simulator(&binary, port, &log, what, environment).await?);
            *url = format!("http://127.0.0.1:{port}");
        }

        // Locally the bank is the simulator's and links point at this stack's HTTP API.
        let mut parameters = options.parameters.clone();
        parameters.insert("BankUrl".into(), format!("{}/bank", info.merchant_simulator_url));
        parameters.insert("BankKeyId".into(), BANK_KEY_ID.into());
        parameters.insert("BankKeyCiphertext".into(), BASE64.encode(&bank_key.ciphertext));
        parameters.insert("PublicBaseUrl".into(), info.api_url.clone());
        let naming = LocalNaming { moto_endpoint, key_ids: key_ids.clone() };
        let template = Template::parse(&text, &options.stack_name, &parameters, &naming)?;

        let dynamodb = info.dynamodb().await;
        for table in &template.tables {
            crate::resources::create_table(&dynamodb, table).await?;
            info.tables.insert(table.logical_id.clone(), table.name.clone());
        }
        let sqs = info.sqs().await;
        info.queues = crate::resources::create_queues(&sqs, &template.queues).await?.into_iter().collect();
        info.keys = key_ids.into_iter().collect();
        if let Some(authorizer) = template.default_authorizer.as_ref().and_then(|d| template.authorizers.get(d)) {
            info.authorizer_issuer = authorizer.issuer.clone();
            info.authorizer_audience = authorizer.audience.clone();
        }

        let aws_calls = AwsCalls::default();
        let faults = FaultCounts::logged(options.logs.join(FAULTS_LOG));
        let consumed_queues: HashSet<String> = template
            .functions
            .iter()
            .flat_map(|f| &f.sqs_sources)
            .filter_map(|source| Some(template.queue(&source.queue)?.name.clone()))
            .collect();
        let conflicts = options.conflicts.then(Conflicts::default);
        let shared = crate::aws_proxy::Shared {
            logs: options.logs.clone(),
            calls: aws_calls.clone(),
            faults: options
                .faults
                .zip(restart_dynamodb)
                .map(|(plan, restart)| Faults::new(plan, faults.clone(), restart, consumed_queues)),
            partition_keys: std::sync::Arc::new(
                template
                    .tables
                    .iter()
                    .filter_map(|table| {
                        let (key, _) = table.key_schema.iter().find(|(_, kind)| kind == "HASH")?;
                        Some((table.name.clone(), key.clone()))
                    })
                    .collect(),
            ),
            key_attributes: std::sync::Arc::new(
                template
                    .tables
                    .iter()
                    .map(|table| (table.name.clone(), table.key_schema.iter().map(|(key, _)| key.clone()).collect()))
                    .collect(),
            ),
            conflicts: conflicts.clone(),
        };
        let instances_of = |id: &str| options.instances_of.get(id).copied().unwrap_or(options.instances_per_function);
        let mut hosts = Vec::new();
        for function in &template.functions {
            // Every call goes through the function's own proxy, which enforces its IAM policy.
            let (mut environment, proxy) = proxied(
                &function.logical_id,
                function.policy.clone(),
                &shared,
                &info,
                options.tls.as_deref(),
                stop.clone(),
            )
            .await?;
            info.aws_endpoints.insert(function.logical_id.clone(), proxy);
            environment.extend(function.environment.clone());
            let launch = Launch {
                binary: options.binaries.join(&function.binary),
                args: vec![],
                instances: instances_of(&function.logical_id),
                environment,
                log_file: options.logs.join(format!("{}.log", function.logical_id)),
                faults: options.faults.map(|plan| (plan, faults.clone())),
                cpu: options.cpu.clone(),
            };
            let host = FunctionHost::start(function, launch, stop.clone()).await?;
            if options.start_one_at_a_time {
                host.ready(Duration::from_secs(30)).await;
            }
            hosts.push(host);
        }

        let gateway = Arc::new(Gateway::new(&template, &hosts, keys.clone()));
        let lambda_listener = bind(options.lambda_port).await?;
        info.lambda_endpoint = format!("http://{}", lambda_listener.local_addr()?);
        for (listener, app) in
            [(gateway_listener, gateway.clone().router()), (lambda_listener, gateway.lambda_router())]
        {
            let mut server_stop = stop.clone();
            tokio::spawn(async move {
                let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
                let _ = axum::serve(listener, service)
                    .with_graceful_shutdown(async move {
                        let _ = server_stop.changed().await;
                    })
                    .await;
            });
        }

        for function in &template.functions {
            let host = hosts.iter().find(|h| h.logical_id == function.logical_id).cloned();
            for source in &function.sqs_sources {
                let (Some(host), Some(queue)) = (host.clone(), template.queue(&source.queue)) else { continue };
                // Lambda polls with several concurrent batches; one poller per instance keeps every
                // instance busy, so consumers race as they would in AWS.
                for _ in 0..instances_of(&function.logical_id) {
                    Poller {
                        client: sqs.clone(),
                        host: host.clone(),
                        source: source.clone(),
                        queue_url: info.queues.get(&source.queue).cloned().unwrap_or_default(),
                        queue_name: queue.name.clone(),
                    }
                    .spawn(stop.clone());
                }
            }
        }

        for function in template.functions.iter().filter(|_| options.run_schedules) {
            let Some(host) = hosts.iter().find(|h| h.logical_id == function.logical_id) else { continue };
            for seconds in &function.schedules {
                spawn_schedule(host.clone(), *seconds, stop.clone());
            }
        }

        for host in &hosts {
            if !host.ready(Duration::from_secs(30)).await {
                return Err(StackError::Other(format!(
                    "{} did not ask for its first invocation within 30 s; see {}",
                    host.logical_id,
                    options.logs.join(format!("{}.log", host.logical_id)).display()
                )));
            }
        }
        let (tls, cpu) = (options.tls.clone(), options.cpu.clone());
        Ok(Stack {
            info,
            aws_calls,
            proxies: shared,
            faults,
            conflicts,
            template,
            keys,
            hosts,
            tls,
            cpu,
            shutdown,
            moto,
            simulators,
        })
    }

    /// Told when the stack stops, for processes started beside it (the benchmark's references).
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The SDK environment of a process outside the template (the benchmark's references), its
    /// calls through a proxy of its own allowed `policy`, as every function's are through theirs.
    pub async fn proxied_environment(
        &self,
        name: &str,
        policy: Policy,
    ) -> Result<BTreeMap<String, String>, StackError> {
        let stop = self.shutdown_signal();
        Ok(proxied(name, policy, &self.proxies, &self.info, self.tls.as_deref(), stop).await?.0)
    }

    pub fn write_info(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, serde_json::to_string_pretty(&self.info)?)
    }

    /// Each function's cold start so far (see `ColdStart::of`).
    pub fn cold_starts(&self) -> Vec<ColdStart> {
        self.hosts.iter().map(|h| ColdStart::of(h)).collect()
    }

    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        let _ = self.moto.kill().await;
        for simulator in &mut self.simulators {
            let _ = simulator.kill().await;
        }
        // Let the function supervisors kill their processes.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_option_is_read_in_both_spellings_and_bounded() {
        let args = |text: &str| text.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(number_option(&args("up --instances 4"), "--instances", 1..=16), Ok(Some(4)));
        assert_eq!(number_option(&args("up --instances=16 --release"), "--instances", 1..=16), Ok(Some(16)));
        assert_eq!(number_option(&args("up --release"), "--instances", 1..=16), Ok(None));
        assert_eq!(number_option(&args("bench --concurrency 8"), "--instances", 1..=16), Ok(None));
        for wrong in ["up --instances 0", "up --instances 17", "up --instances two", "up --instances=-1"] {
            let refused = number_option(&args(wrong), "--instances", 1..=16);
            assert!(refused.as_ref().is_err_and(|e| e.contains("from 1 to 16")), "{wrong}: {refused:?}");
        }
        assert_eq!(
            number_option(&args("up --instances"), "--instances", 1..=16),
            Err("--instances needs a number".into())
        );
    }

    #[test]
    fn a_function_not_invoked_yet_is_described_without_a_nan() {
        let cold = |init_ms: f64, first: &[f64]| ColdStart {
            function: "F".into(),
            init_ms,
            first_invocation_ms: median(first.to_vec()),
            peak_rss_mb: f64::NAN,
            samples: first.len(),
        };
        assert_eq!(cold(3.06, &[12.0, 11.0]).describe(), "init 3.1 ms, first invocation 12.0 ms");
        assert_eq!(cold(3.06, &[]).describe(), "init 3.1 ms, not invoked yet");
        assert_eq!(cold(f64::NAN, &[]).describe(), "not initialised yet, not invoked yet");
    }
}
