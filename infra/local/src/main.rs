//! `cargo stack up` runs the whole stack locally; `cargo stack test` runs every test against it;
//! `cargo stack bench` measures the performance targets (docs/performance.md); `cargo stack token`
//! prints a development token. See the README.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use superpay_local::faults::FaultPlan;
use superpay_local::seed;
use superpay_local::stack::{ColdStart, DEFAULT_INSTANCES, MAX_INSTANCES, Options, Stack, number_option};
use superpay_local::template::Template;
use superpay_local::{bench, chart, checkov, emulators};

const USAGE: &str = "usage:
  cargo stack up [--release] [--instances N] [--conflicts]
                                  run the whole stack locally (Ctrl-C stops it): N processes per
                                  function (1 to 16, default 2); --conflicts: transactions on one
                                  item at once conflict, as on DynamoDB
  cargo stack test [--conflicts] [-- ARGS]
                                  run every test (ARGS go to each test binary), then the fault run
                                  (seed 11; SUPERPAY_FAULT_SEED=N replays another seed)
  cargo stack test --faults-long  only the fault run, with a random seed it prints and more load
  cargo stack bench [--debug] [--cold-only | --contention-only] [--lambda-cpu] [--cold-starts K]
                    [--concurrency C] [--contention-instances N] [--contention-purchases P]
                    [--credit-shards S]
                                  cold starts, memory, sizes and AWS calls per operation (release
                                  build), then the contention scenario: P purchases (default 256)
                                  by C clients at once (default 32) from one merchant, the same
                                  merchant with S credit sub-accounts (default 32), then from C
                                  merchants, against N processes of PurchasesFunction (default C);
                                  --lambda-cpu: each process on the CPU its MemorySize buys on
                                  Lambda (a cgroup quota; needs root), not a core of its own;
                                  --cold-starts: medians of K cold starts each (default 7)
  cargo stack token [SUBJECT] [--scope SCOPE]...   print a development bearer token";

/// The workspace root: this crate is `infra/local`.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap_or_else(|_| PathBuf::from("."))
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"))
}

/// `infra/local/parameters.json`, plus placeholders for the parameters the running stack fills in
/// (its own URLs), for reading the template's shape before it runs.
fn local_parameters(root: &Path) -> Result<HashMap<String, String>, String> {
    let path = root.join("infra/local/parameters.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut parameters: HashMap<String, String> =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    for filled_by_the_stack in ["BankUrl", "PublicBaseUrl"] {
        parameters.entry(filled_by_the_stack.into()).or_insert_with(|| "http://127.0.0.1".into());
    }
    Ok(parameters)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SUPERPAY_LOG")
                .unwrap_or_else(|_| "info,aws_smithy_runtime=error,aws_config=warn,dynoxide=error".into()),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("up") => up(&args).await,
        Some("test") => {
            let ours: Vec<&String> = args.iter().take_while(|a| *a != "--").collect();
            let (long, conflicts) =
                (ours.iter().any(|a| *a == "--faults-long"), ours.iter().any(|a| *a == "--conflicts"));
            test(args.iter().skip_while(|a| *a != "--").skip(1).cloned().collect(), long, conflicts).await
        }
        Some("bench") => run_bench(&args).await,
        Some("token") => token(&args[1..]),
        _ => Err(USAGE.to_owned()),
    };
    match outcome {
        Ok(code) => code,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a cargo command in the workspace and fails with its name when it fails.
fn cargo(root: &Path, args: &[&str], env: &[(String, String)]) -> Result<bool, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(args)
        .current_dir(root)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    Ok(status.success())
}

fn build_functions(root: &Path, release: bool, extra_binaries: &[&str]) -> Result<(), String> {
    let template = Template::parse(
        &std::fs::read_to_string(root.join("template.yaml")).map_err(|e| e.to_string())?,
        "superpay",
        &local_parameters(root)?,
        &superpay_local::template::Unresolved,
    )
    .map_err(|e| e.to_string())?;
    // The functions of the template, and the simulated partners the stack runs beside them.
    let mut args = vec!["build", "--quiet", "--bin", "merchant-sim", "--bin", "miniapp-sim"];
    for binary in extra_binaries {
        args.extend(["--bin", binary]);
    }
    if release {
        args.push("--release");
    }
    for function in &template.functions {
        args.extend(["--bin", function.binary.as_str()]);
    }
    if cargo(root, &args, &[])? { Ok(()) } else { Err("building the functions failed".into()) }
}

fn options(root: &Path, persist: bool, release: bool) -> Result<Options, String> {
    let state = root.join(".superpay");
    let port = |name: &str, default: u16| -> Result<u16, String> {
        match std::env::var(name) {
            Ok(v) => v.parse().map_err(|_| format!("{name}={v} is not a port")),
            Err(_) => Ok(if persist { default } else { 0 }),
        }
    };
    Ok(Options {
        template: root.join("template.yaml"),
        binaries: target_dir(root).join(if release { "release" } else { "debug" }),
        persist,
        gateway_port: port("SUPERPAY_API_PORT", 3000)?,
        lambda_port: port("SUPERPAY_LAMBDA_PORT", 3001)?,
        dynamodb_port: port("SUPERPAY_DYNAMODB_PORT", 8000)?,
        moto_port: port("SUPERPAY_MOTO_PORT", 5000)?,
        merchant_sim_port: port("SUPERPAY_MERCHANT_SIM_PORT", 3002)?,
        miniapp_sim_port: port("SUPERPAY_MINIAPP_SIM_PORT", 3003)?,
        instances_per_function: DEFAULT_INSTANCES,
        instances_of: Default::default(),
        conflicts: false,
        run_schedules: true,
        start_one_at_a_time: false,
        parameters: {
            let mut parameters = local_parameters(root)?;
            // The tests let top-up links expire in 15 s to run the expiry paths; a person walking
            // the offline payments example (docs/api/offline.md) gets 5 minutes.
            // A locked payment PIN opens after 3 s in the tests, after 5 minutes for a person.
            if persist {
                parameters.insert("TopUpTtlSeconds".into(), "300".into());
                parameters.insert("PaymentPinLockoutSeconds".into(), "300".into());
            }
            parameters
        },
        stack_name: "superpay".into(),
        logs: state.join(if persist { "logs" } else { "test-logs" }),
        state,
        faults: None,
        tls: None,
        cpu: None,
    })
}

/// botocore's own trust bundle in the virtualenv `venv`, which boto3 loads unless told another.
fn botocore_bundle(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    let python = lib.filter_map(Result::ok).find(|e| e.file_name().to_string_lossy().starts_with("python"))?;
    Some(python.path().join("site-packages/botocore/cacert.pem")).filter(|p| p.exists())
}

/// `--release` runs the functions as built for Lambda (the release profile), to measure them;
/// `--instances N` runs N processes of every function; `--conflicts` makes transactions on one
/// item at once conflict (`superpay_local::conflicts`).
async fn up(args: &[String]) -> Result<ExitCode, String> {
    let release = args.iter().any(|a| a == "--release");
    let instances = number_option(args, "--instances", 1..=MAX_INSTANCES)?.unwrap_or(DEFAULT_INSTANCES);
    let root = root();
    build_functions(&root, release, &[])?;
    let mut options = options(&root, true, release)?;
    options.instances_per_function = instances;
    options.conflicts = args.iter().any(|a| a == "--conflicts");
    let conflicts = options.conflicts;
    let state = options.state.clone();
    let stack = Stack::start(options).await.map_err(|e| e.to_string())?;
    seed::apply(&stack, &root.join("infra/seed.json"), &state).await.map_err(|e| format!("seeding: {e}"))?;
    stack.write_info(&state.join("stack.json")).map_err(|e| e.to_string())?;
    let authorizer = stack.info.authorizer();
    let mint =
        |subject: &str, scopes: &[&str]| stack.keys.mint(&authorizer, subject, scopes, 12 * 3600).unwrap_or_default();
    let user_token = mint(seed::DEMO_USER, &[]);
    let admin_token = mint(seed::DEMO_ADMIN, &[superpay::auth::ADMIN_SCOPE]);
    std::fs::write(state.join("user.token"), &user_token).map_err(|e| e.to_string())?;
    std::fs::write(state.join("admin.token"), &admin_token).map_err(|e| e.to_string())?;
    let api = &stack.info.api_url;
    println!("superpay local stack is up\n");
    println!("  API           {api}");
    println!("  Lambda        {} (Invoke API: events/ run against the real binaries)", stack.info.lambda_endpoint);
    println!("  merchant      {} (simulated product server and bank)", stack.info.merchant_simulator_url);
    println!("  mini-app      {} (simulated third-party server of a_demo)", stack.info.miniapp_simulator_url);
    println!("  DynamoDB      {} (dynoxide; data kept in .superpay/data/)", stack.info.dynamodb_endpoint);
    println!("  SQS, KMS      {} (moto)", stack.info.moto_endpoint);
    println!("  logs          {}/ (one file per function)", stack.info.logs.display());
    println!(
        "  functions     {instances} processes each{}",
        if conflicts { "; transactions on one item at once conflict" } else { "" }
    );
    for cold in stack.cold_starts() {
        println!(
            "  init          {}: {:.1} ms (process start to first invocation request, median)",
            cold.function, cold.init_ms
        );
    }
    println!("\n  user token ({}, 12 h; also in .superpay/user.token):\n{user_token}", seed::DEMO_USER);
    println!(
        "\n  admin token ({}, scope {}; also in .superpay/admin.token):\n{admin_token}",
        seed::DEMO_ADMIN,
        superpay::auth::ADMIN_SCOPE
    );
    println!("\n  try:  curl -i -H \"Authorization: Bearer $(cat .superpay/user.token)\" {api}/config/payment-ui");
    println!("\nCtrl-C stops the stack.");
    let _ = tokio::signal::ctrl_c().await;
    for cold in stack.cold_starts() {
        eprintln!("cold start {}: {} (medians)", cold.function, cold.describe());
    }
    eprintln!("stopping");
    stack.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// `cargo stack bench`: see `superpay_local::bench`. Prints the report and keeps it in
/// `.superpay/bench.md`. `--debug` checks the benchmark itself quickly (its times mean nothing);
/// `--cold-only` measures the cold starts alone (a minute or two); `--contention-only` runs the
/// contention scenario alone, set by `--concurrency`,
/// `--contention-instances`, `--contention-purchases` and `--credit-shards`.
async fn run_bench(args: &[String]) -> Result<ExitCode, String> {
    let release = !args.iter().any(|a| a == "--debug");
    let contention_only = args.iter().any(|a| a == "--contention-only");
    let cold_only = args.iter().any(|a| a == "--cold-only");
    let lambda_cpu = args.iter().any(|a| a == "--lambda-cpu");
    if contention_only && cold_only {
        return Err("--contention-only and --cold-only leave nothing to run together".into());
    }
    if contention_only && lambda_cpu {
        return Err("--lambda-cpu shares out the CPU of the cold starts, which --contention-only does not run".into());
    }
    let settings = contention_settings(args)?;
    let starts = number_option(args, "--cold-starts", bench::COLD_STARTS_BOUNDS)?;
    if contention_only && starts.is_some() {
        return Err("--cold-starts sets the cold starts, which --contention-only does not run".into());
    }
    let root = root();
    build_functions(&root, release, &["bench-sdk-fn"])?;
    let mut report = String::new();
    if !contention_only {
        let starts = starts.unwrap_or(bench::COLD_STARTS);
        report = cold_starts_and_calls(&root, release, !cold_only, lambda_cpu, starts).await?;
        println!("{report}");
    }
    if cold_only {
        std::fs::write(root.join(".superpay/bench.md"), &report).map_err(|e| e.to_string())?;
        return Ok(ExitCode::SUCCESS);
    }
    let scenario = contention(&root, release, settings).await?;
    println!("{scenario}");
    report.push_str(&scenario);
    std::fs::write(root.join(".superpay/bench.md"), &report).map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// The contention scenario's options, each bounded; the processes default to the clients.
fn contention_settings(args: &[String]) -> Result<bench::Contention, String> {
    let defaults = bench::CONTENTION;
    let concurrency =
        number_option(args, "--concurrency", 1..=bench::MAX_CONTENTION_INSTANCES)?.unwrap_or(defaults.concurrency);
    Ok(bench::Contention {
        concurrency,
        instances: number_option(args, "--contention-instances", 1..=bench::MAX_CONTENTION_INSTANCES)?
            .unwrap_or(concurrency),
        purchases: number_option(args, "--contention-purchases", 1..=bench::MAX_CONTENTION_PURCHASES)?
            .unwrap_or(defaults.purchases),
        credit_shards: number_option(args, "--credit-shards", 1..=superpay::ledger::MAX_CREDIT_SHARDS as usize)?
            .map_or(defaults.credit_shards, |n| n as u32),
    })
}

/// The cold starts, memory, sizes and (`with_calls`) AWS calls per operation, as a report; a whole
/// release run also draws the chart. `lambda_cpu`: every process on its `MemorySize`'s share of a
/// core (`superpay_local::cpu_share`) instead of a core of its own. `starts`: cold starts per
/// function, of which the report gives medians.
async fn cold_starts_and_calls(
    root: &Path,
    release: bool,
    with_calls: bool,
    lambda_cpu: bool,
    starts: usize,
) -> Result<String, String> {
    let python = emulators::virtualenv(&root.join(".superpay/venv/bench"), emulators::BENCH_REQUIREMENTS)
        .await
        .map_err(|e| e.to_string())?;
    let mut options = options(root, false, release)?;
    // Every first call over TLS, as on AWS: the functions' and the references' alike.
    let venv = root.join(".superpay/venv/bench");
    let tls =
        superpay_local::tls::LocalTls::create(&options.state.join("bench-tls"), botocore_bundle(&venv).as_deref())?;
    options.tls = Some(std::sync::Arc::new(tls));
    options.instances_per_function = 1;
    options.run_schedules = false;
    options.start_one_at_a_time = true;
    if lambda_cpu {
        options.cpu = Some(std::sync::Arc::new(superpay_local::cpu_share::CpuShares::create()?));
    }
    options.logs = options.state.join("bench-logs");
    let binaries = options.binaries.clone();
    let _ = std::fs::remove_dir_all(&options.logs);
    let stack = Stack::start(options).await.map_err(|e| e.to_string())?;
    let measured = async {
        seed::apply(&stack, &root.join("infra/seed.json"), &stack.info.logs.clone()).await?;
        let rust =
            bench::start_reference(&stack, bench::RUST_REFERENCE, &binaries.join("bench-sdk-fn"), vec![], &[]).await?;
        let handler = ("PYTHONPATH", root.join("infra/bench/python").display().to_string());
        let args = ["-m", "awslambdaric", "handler.handler"].map(String::from).to_vec();
        let python =
            bench::start_reference(&stack, bench::PYTHON_REFERENCE, &python.join("python"), args, &[handler]).await?;
        let mut hosts = vec![rust, python];
        for (name, at_once) in [(bench::RUST_READS_IN_TURN, "0"), (bench::RUST_READS_AT_ONCE, "1")] {
            let reads = [("BENCH_READS", bench::REFERENCE_READS.to_string()), ("BENCH_AT_ONCE", at_once.into())];
            hosts.push(bench::start_reference(&stack, name, &binaries.join("bench-sdk-fn"), vec![], &reads).await?);
        }
        hosts.extend(stack.hosts.iter().cloned());
        stack.aws_calls.clear();
        let probes = bench::cold_starts(&hosts, &root.join("events"), starts).await?;
        // What each first event called, as the function's (or reference's) proxy counted it.
        let probes: Vec<String> = hosts
            .iter()
            .zip(probes)
            .map(|(host, probe)| bench::with_calls(probe, &stack.aws_calls.take(&host.logical_id), starts))
            .collect();
        let counted = if with_calls { bench::count_operations(&stack).await? } else { vec![] };
        // Read after the operations, so that peak memory covers their heavier paths too.
        let cold: Vec<_> = hosts.iter().map(|h| ColdStart::of(h)).zip(probes).collect();
        Ok::<_, String>((cold, counted))
    }
    .await;
    let mut sizes: std::collections::BTreeMap<String, u64> = stack
        .template
        .functions
        .iter()
        .filter_map(|f| Some((f.logical_id.clone(), std::fs::metadata(binaries.join(&f.binary)).ok()?.len())))
        .collect();
    if let Ok(metadata) = std::fs::metadata(binaries.join("bench-sdk-fn")) {
        for reference in [bench::RUST_REFERENCE, bench::RUST_READS_IN_TURN, bench::RUST_READS_AT_ONCE] {
            sizes.insert(reference.into(), metadata.len());
        }
    }
    let logs = stack.info.logs.clone();
    stack.stop().await;
    let (cold, counted) = measured.map_err(|e| format!("{e} (logs in {})", logs.display()))?;
    let report = bench::report(&cold, starts, &sizes, &counted);
    // The README shows it, committed with the run's numbers in docs/performance.md: only a run of
    // the functions as built for Lambda draws it.
    if release && with_calls && !lambda_cpu {
        let measured: Vec<ColdStart> = cold.into_iter().map(|(c, _)| c).collect();
        let title = format!("Cold starts, cargo stack bench (release build, medians of {starts} cold starts each)");
        let svg = chart::cold_starts_svg(&measured, &title);
        std::fs::write(root.join("docs/cold-starts.svg"), svg).map_err(|e| e.to_string())?;
        eprintln!("the chart: docs/cold-starts.svg");
    }
    Ok(report)
}

/// The contention scenario (`bench::contention`) on a stack of its own, started after the cold
/// starts' stack stopped: `settings.instances` processes of PurchasesFunction, conflicts on.
async fn contention(root: &Path, release: bool, settings: bench::Contention) -> Result<String, String> {
    let mut options = options(root, false, release)?;
    options.instances_of.insert("PurchasesFunction".into(), settings.instances);
    options.conflicts = true;
    options.run_schedules = false;
    options.logs = options.state.join("bench-contention-logs");
    let _ = std::fs::remove_dir_all(&options.logs);
    let stack = Stack::start(options).await.map_err(|e| e.to_string())?;
    let measured = async {
        seed::apply(&stack, &root.join("infra/seed.json"), &stack.info.logs.clone()).await?;
        bench::contention(&stack, settings).await
    }
    .await;
    let logs = stack.info.logs.clone();
    stack.stop().await;
    let scenarios = measured.map_err(|e| format!("{e} (logs in {})", logs.display()))?;
    Ok(bench::contention_report(settings, &scenarios))
}

/// The fault run's rate: one AWS call in twenty gets a fault.
const FAULT_RATE: f64 = 0.05;
/// The seed of the bounded fault run of every `cargo stack test`.
const FAULT_SEED: u64 = 11;
/// The fault run's `OutboxSweepGraceSeconds` (see `fault_run`).
const FAULT_OUTBOX_GRACE_SECONDS: &str = "10";
/// How many purchases the fault test makes (`SUPERPAY_FAULT_PURCHASES`): bounded, and long.
const FAULT_PURCHASES: (u32, u32) = (150, 1000);

/// `cargo stack test`: every check and test against a fresh stack, then the fault run (unless the
/// filters name no fault test). `--faults-long`: only the fault run, longer, with a random seed.
/// `--conflicts`: the first stack's transactions conflict as on DynamoDB (`superpay_local::conflicts`).
async fn test(test_args: Vec<String>, faults_long: bool, conflicts: bool) -> Result<ExitCode, String> {
    let root = root();
    let seed = match std::env::var("SUPERPAY_FAULT_SEED") {
        Ok(seed) => seed.parse().map_err(|_| format!("SUPERPAY_FAULT_SEED={seed} is not a number"))?,
        Err(_) if faults_long => {
            u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap_or_default())
        }
        Err(_) => FAULT_SEED,
    };
    let plan = FaultPlan { seed, rate: FAULT_RATE };
    if faults_long {
        eprintln!("\n==> cargo build --workspace --all-targets");
        if !cargo(&root, &["build", "--quiet", "--workspace", "--all-targets"], &[])? {
            return Err("the build failed".into());
        }
        return fault_run(&root, plan, FAULT_PURCHASES.1).await;
    }
    checks_and_tests(&root, &test_args, conflicts).await?;
    // Filters that name no fault test (`cargo stack test -- purchases`) skip the fault run.
    let filters: Vec<&String> =
        test_args.iter().filter(|a| !a.starts_with('-') && !a.chars().all(|c| c.is_ascii_digit())).collect();
    if filters.is_empty() || filters.iter().any(|f| f.contains("fault")) {
        return fault_run(&root, plan, FAULT_PURCHASES.0).await;
    }
    Ok(ExitCode::SUCCESS)
}

async fn checks_and_tests(root: &Path, test_args: &[String], conflicts: bool) -> Result<(), String> {
    let step = |name: &str| eprintln!("\n==> {name}");
    step("cargo fmt --check");
    if !cargo(root, &["fmt", "--all", "--check"], &[])? {
        return Err("formatting differs: run `cargo fmt`".into());
    }
    step("cargo clippy --workspace --all-targets -- -D warnings");
    if !cargo(root, &["clippy", "--quiet", "--workspace", "--all-targets", "--", "-D", "warnings"], &[])? {
        return Err("clippy found problems".into());
    }
    step("cargo build --workspace --all-targets");
    if !cargo(root, &["build", "--quiet", "--workspace", "--all-targets"], &[])? {
        return Err("the build failed".into());
    }
    step("lint template.yaml (cfn-lint, sam validate --lint, checkov)");
    lint_template(root).await?;
    step("Chromium and ChromeDriver for the browser test (Debian's packages)");
    ensure_chromium()?;
    step("start the local stack");
    let mut options = options(root, false, false)?;
    options.conflicts = conflicts;
    let info_path = options.state.join("test-stack.json");
    let _ = std::fs::remove_dir_all(&options.logs);
    let stack = Stack::start(options).await.map_err(|e| e.to_string())?;
    seed::apply(&stack, &root.join("infra/seed.json"), &stack.info.logs.clone())
        .await
        .map_err(|e| format!("seeding: {e}"))?;
    stack.write_info(&info_path).map_err(|e| e.to_string())?;

    step("cargo test --workspace (with the local stack)");
    let mut env = stack.info.sdk_environment();
    env.push(("SUPERPAY_STACK".into(), info_path.display().to_string()));
    let mut args = vec!["test", "--workspace", "--all-targets", "--", "--include-ignored"];
    args.extend(test_args.iter().map(String::as_str));
    let mut passed = cargo(root, &args, &env);
    let filters: Vec<&String> = test_args.iter().filter(|a| !a.starts_with('-')).collect();
    if matches!(passed, Ok(true)) && (filters.is_empty() || filters.iter().any(|f| f.contains("schemathesis"))) {
        step("schemathesis: every documented route against docs/openapi.json, as served by the stack");
        passed = schemathesis(root, &stack).await;
    }
    for cold in stack.cold_starts() {
        eprintln!("cold start {}: {} (medians, debug build)", cold.function, cold.describe());
    }
    if let Some(conflicts) = &stack.conflicts {
        let by_function: Vec<String> = conflicts.injected().iter().map(|(f, n)| format!("{f} {n}")).collect();
        eprintln!("transaction conflicts injected, by function: {}", by_function.join(", "));
    }
    let logs = stack.info.logs.clone();
    stack.stop().await;
    report_access_denied(&logs);
    match passed? {
        true => Ok(()),
        false => Err(format!("tests failed; the functions' logs are in {}", logs.display())),
    }
}

/// A second, fresh stack injecting `plan`'s faults (into the functions' AWS calls, their processes
/// and DynamoDB), and only the fault tests (`tests/e2e/faults/`) against it; then the faults
/// injected, by kind, and the kills by function.
async fn fault_run(root: &Path, plan: FaultPlan, purchases: u32) -> Result<ExitCode, String> {
    // Set by hand, it overrides the run's load.
    let purchases = std::env::var("SUPERPAY_FAULT_PURCHASES").unwrap_or_else(|_| purchases.to_string());
    let replay = format!(
        "SUPERPAY_FAULT_SEED={} SUPERPAY_FAULT_PURCHASES={purchases} cargo stack test --faults-long",
        plan.seed
    );
    eprintln!(
        "\n==> fault run: a stack injecting faults into {:.0}% of AWS calls, killing {:.1}% of invocations' processes, restarting DynamoDB; seed {}, {purchases} purchases (replay: {replay})",
        plan.rate * 100.0,
        plan.kill_rate() * 100.0,
        plan.seed,
    );
    let mut options = options(root, false, false)?;
    options.faults = Some(plan);
    // Injected throttling and SDK retries keep the notifier's queue a few seconds behind; a sweeper
    // re-sending whatever has waited out the test stack's 3 s then floods the queue with copies,
    // each slowing the queue further (120 s on AWS, where consumers scale out).
    options.parameters.insert("OutboxSweepGraceSeconds".into(), FAULT_OUTBOX_GRACE_SECONDS.into());
    options.logs = options.state.join("fault-logs");
    let info_path = options.state.join("fault-stack.json");
    let _ = std::fs::remove_dir_all(&options.logs);
    let started = std::time::Instant::now();
    let stack = Stack::start(options).await.map_err(|e| e.to_string())?;
    stack.write_info(&info_path).map_err(|e| e.to_string())?;
    let mut env = stack.info.sdk_environment();
    env.push(("SUPERPAY_STACK".into(), info_path.display().to_string()));
    env.push(("SUPERPAY_FAULT_PURCHASES".into(), purchases));
    let args = ["test", "--quiet", "-p", "superpay-e2e", "--test", "e2e", "--", "--ignored", "--nocapture", "faults::"];
    let passed = cargo(root, &args, &env);
    let logs = stack.info.logs.clone();
    let (counts, by_function) = (stack.faults.by_kind(), stack.faults.by_function());
    stack.stop().await;
    eprintln!("\nfaults injected by kind (seed {}, {:.0} s):", plan.seed, started.elapsed().as_secs_f64());
    for (kind, count) in &counts {
        eprintln!("  {count:>5} x {kind}");
    }
    let kills: Vec<String> = by_function
        .iter()
        .filter_map(|(function, kinds)| Some(format!("{function} {}", kinds.get(superpay_local::faults::KILLED)?)))
        .collect();
    if !kills.is_empty() {
        eprintln!("  processes killed, by function: {}", kills.join(", "));
    }
    match passed? {
        true => Ok(ExitCode::SUCCESS),
        false => Err(format!("the fault run failed (replay it: {replay}); logs in {}", logs.display())),
    }
}

/// Lists the AWS calls the functions' IAM policies refused during the run (the IAM test makes
/// five on purpose): a permission missing from template.yaml shows here even when no test noticed.
fn report_access_denied(logs: &Path) {
    let Ok(log) = std::fs::read_to_string(logs.join(superpay_local::stack::ACCESS_DENIED_LOG)) else { return };
    let refused: std::collections::BTreeMap<&str, usize> = log.lines().fold(Default::default(), |mut counts, line| {
        *counts.entry(line).or_default() += 1;
        counts
    });
    eprintln!("\nAWS calls refused by the functions' IAM policies (template.yaml):");
    for (call, times) in refused {
        eprintln!("  {times:>4} x {call}");
    }
}

/// The browser test drives Debian's Chromium through ChromeDriver; install both when missing.
fn ensure_chromium() -> Result<(), String> {
    if Path::new("/usr/bin/chromedriver").exists() && Path::new("/usr/bin/chromium").exists() {
        return Ok(());
    }
    eprintln!("installing chromium and chromium-driver with apt-get (once)");
    let apt = |args: &[&str]| {
        std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("apt-get: {e}"))
            .and_then(|s| if s.success() { Ok(()) } else { Err(format!("apt-get {} failed", args.join(" "))) })
    };
    apt(&["update", "-qq"])?;
    apt(&["install", "-y", "-qq", "--no-install-recommends", "chromium", "chromium-driver"]).map_err(|e| {
        format!("{e}: the browser test needs Debian's chromium and chromium-driver (run as root, or install them)")
    })
}

/// What schemathesis generates per route and phase: enough to find a schema the code does not
/// keep, bounded so the run takes seconds per route. A fixed seed: a failure replays.
const SCHEMATHESIS_EXAMPLES: &str = "30";
const SCHEMATHESIS_SEED: &str = "11";

/// schemathesis (pinned, in its own virtualenv) against `stack`'s documented routes, as a signed-in
/// user: no 5xx, every answer's status, content type, headers and body as the document says,
/// invalid requests refused, and a valid one never refused as malformed (our own check,
/// `infra/schemathesis/hooks.py`, in place of `positive_data_acceptance`: a payments API refuses
/// valid-looking requests on purpose, each with its own code). The check of undeclared methods is
/// left out: API Gateway itself answers them 404, not 405. The hooks call admin routes with an
/// admin token and sign the signed ones as the parties registered here for the run.
async fn schemathesis(root: &Path, stack: &Stack) -> Result<bool, String> {
    let bin = emulators::virtualenv(&root.join(".superpay/venv/schemathesis"), emulators::SCHEMATHESIS_REQUIREMENTS)
        .await
        .map_err(|e| e.to_string())?;
    let authorizer = stack.info.authorizer();
    let token = stack.keys.mint(&authorizer, "schemathesis-user", &[], 3600).map_err(|e| e.to_string())?;
    let admin = stack
        .keys
        .mint(&authorizer, "schemathesis-admin", &[superpay::auth::ADMIN_SCOPE], 3600)
        .map_err(|e| e.to_string())?;
    let signers = signers(stack, &admin).await?;
    let api = &stack.info.api_url;
    let status = std::process::Command::new(bin.join("st"))
        .args(["run", &format!("{api}/openapi.json"), "--url", api])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all", "--exclude-checks", "unsupported_method,positive_data_acceptance"])
        .env("SCHEMATHESIS_HOOKS", root.join("infra/schemathesis/hooks.py"))
        .env("SUPERPAY_ADMIN_TOKEN", &admin)
        .env("SUPERPAY_SIGNERS", signers.to_string())
        // One worker: CPython 3.11's parser is not safe to run from two threads at once
        // ("AST constructor recursion depth mismatch" in hypothesis's lambda descriptions).
        .args(["--max-examples", SCHEMATHESIS_EXAMPLES, "--seed", SCHEMATHESIS_SEED, "--workers", "1"])
        .current_dir(root.join(".superpay"))
        .status()
        .map_err(|e| format!("schemathesis: {e}"))?;
    Ok(status.success())
}

/// The parties that sign calls, registered through the admin routes for schemathesis's run: a
/// merchant, its till and transfer terminals, a partner of it; each one's key id and secret, by the
/// name the hooks give its routes.
async fn signers(stack: &Stack, admin: &str) -> Result<serde_json::Value, String> {
    let http = reqwest::Client::new();
    let register = |path: String, body: serde_json::Value| {
        let request = http
            .post(format!("{}{path}", stack.info.api_url))
            .bearer_auth(admin)
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .json(&body);
        async move {
            let answer: serde_json::Value = request
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| format!("registering schemathesis's signer at {path}: {e}"))?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(answer)
        }
    };
    let simulator = &stack.info.merchant_simulator_url;
    let merchant = register(
        "/merchants".into(),
        serde_json::json!({"name": "Schemathesis Shop", "product_server_url": format!("{simulator}/m/schemathesis"), "currency": "USD"}),
    )
    .await?;
    let id = merchant["id"].as_str().ok_or("the merchant's registration has no id")?;
    let till = register(format!("/merchants/{id}/terminals"), serde_json::json!({"kind": "till"})).await?;
    let transfer = register(format!("/merchants/{id}/terminals"), serde_json::json!({"kind": "transfer"})).await?;
    let partner = register(
        "/partners".into(),
        serde_json::json!({"name": "Schemathesis Platform", "callback_url": format!("{simulator}/partner/schemathesis"), "merchant_id": id}),
    )
    .await?;
    let signer =
        |answer: &serde_json::Value| serde_json::json!({"key_id": answer["key_id"], "secret": answer["secret"]});
    Ok(serde_json::json!({
        "merchant": signer(&merchant),
        "till": signer(&till),
        "transfer": signer(&transfer),
        "partner": signer(&partner),
    }))
}

async fn lint_template(root: &Path) -> Result<(), String> {
    let bin = emulators::virtualenv(&root.join(".superpay/venv/lint"), emulators::LINT_REQUIREMENTS)
        .await
        .map_err(|e| e.to_string())?;
    let run = |program: &str, args: &[&str]| -> Result<(), String> {
        let status = std::process::Command::new(bin.join(program))
            .args(args)
            .current_dir(root)
            .env("SAM_CLI_TELEMETRY", "0")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .status()
            .map_err(|e| format!("{program}: {e}"))?;
        if status.success() { Ok(()) } else { Err(format!("{program} found problems in template.yaml")) }
    };
    run("cfn-lint", &["template.yaml"])?;
    run("sam", &["validate", "--lint", "--region", "us-east-1", "--template-file", "template.yaml"])?;
    let bin = emulators::virtualenv(&root.join(".superpay/venv/checkov"), emulators::CHECKOV_REQUIREMENTS)
        .await
        .map_err(|e| e.to_string())?;
    let output = std::process::Command::new(bin.join("checkov"))
        .args(checkov::ARGS)
        .current_dir(root)
        // Offline, and quiet: no look for a newer version.
        .env("CKV_SKIP_PACKAGE_UPDATE_CHECK", "true")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("checkov: {e}"))?;
    // Its log (stderr) only helps when it did not report.
    let summary = checkov::verdict(&String::from_utf8_lossy(&output.stdout)).map_err(|problems| {
        let log = String::from_utf8_lossy(&output.stderr);
        if log.trim().is_empty() { problems } else { format!("{problems}\n{}", log.trim_end()) }
    })?;
    eprintln!("{summary}");
    Ok(())
}

fn token(args: &[String]) -> Result<ExitCode, String> {
    let root = root();
    let mut subject = seed::DEMO_USER.to_owned();
    let mut scopes = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--scope" => scopes.push(rest.next().ok_or("--scope needs a value")?.clone()),
            other if !other.starts_with('-') => subject = other.to_owned(),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    let template = Template::parse(
        &std::fs::read_to_string(root.join("template.yaml")).map_err(|e| e.to_string())?,
        "superpay",
        &local_parameters(&root)?,
        &superpay_local::template::Unresolved,
    )
    .map_err(|e| e.to_string())?;
    let authorizer = template
        .default_authorizer
        .as_ref()
        .and_then(|d| template.authorizers.get(d))
        .ok_or("template.yaml has no default JWT authorizer")?;
    let keys = superpay_local::jwt::DevKeys::load().map_err(|e| e.to_string())?;
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    println!("{}", keys.mint(authorizer, &subject, &scopes, 12 * 3600).map_err(|e| e.to_string())?);
    Ok(ExitCode::SUCCESS)
}
