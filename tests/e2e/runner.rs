//! The local runner's SQS event source against moto: batches, partial batch failures, the
//! visibility timeout and redrive to the dead-letter queue, read from a template as the stack does;
//! and its Runtime API killing processes mid-invocation as a fault plan says.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use superpay_e2e::{Env, unique};
use superpay_local::faults::{FaultCounts, FaultPlan, KILLED};
use superpay_local::runtime_api::{FunctionHost, Launch, Outcome};
use superpay_local::sqs_source::Poller;
use superpay_local::template::{Naming, Template};

struct MotoNaming(String);

impl Naming for MotoNaming {
    fn queue_url(&self, name: &str) -> String {
        format!("{}/123456789012/{name}", self.0)
    }

    fn key_id(&self, _: &str) -> Option<String> {
        None
    }
}

const TEMPLATE: &str = r#"
Transform: AWS::Serverless-2016-10-31
Parameters:
  QueueVisibilityTimeout:
    Type: Number
    Default: 60
Resources:
  ProbeFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: sqs-probe
    Properties:
      CodeUri: .
      Timeout: 5
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt WorkQueue.Arn
            BatchSize: 10
            FunctionResponseTypes: [ReportBatchItemFailures]
  WorkQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: !Ref QueueVisibilityTimeout
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt WorkDeadLetterQueue.Arn
        maxReceiveCount: 2
  WorkDeadLetterQueue:
    Type: AWS::SQS::Queue
"#;

async fn bodies(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<String> {
    let received =
        sqs.receive_message().queue_url(url).max_number_of_messages(10).visibility_timeout(0).send().await.unwrap();
    received.messages().iter().filter_map(|m| m.body().map(str::to_owned)).collect()
}

fn probe_template() -> Template {
    let env = Env::get();
    let parameters = HashMap::from([("QueueVisibilityTimeout".to_owned(), "1".to_owned())]);
    Template::parse(TEMPLATE, &unique("probe"), &parameters, &MotoNaming(env.stack.moto_endpoint.clone())).unwrap()
}

fn binaries() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("debug")
}

/// `instances` processes of the probe function, logging to `log_file`, killed as `faults` says.
fn probe_launch(instances: usize, log_file: std::path::PathBuf, faults: Option<(FaultPlan, FaultCounts)>) -> Launch {
    Launch {
        binary: binaries().join("sqs-probe"),
        args: vec![],
        instances,
        environment: BTreeMap::new(),
        log_file,
        faults,
        cpu: None,
    }
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn sqs_batches_partial_failures_and_redrive() {
    let env = Env::get();
    let template = probe_template();
    let sqs = env.stack.sqs().await;
    let urls = superpay_local::resources::create_queues(&sqs, &template.queues).await.unwrap();
    let function = &template.functions[0];
    assert_eq!(function.sqs_sources[0].queue, "WorkQueue");

    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let launch = probe_launch(2, env.stack.logs.join("sqs-probe.log"), None);
    let host = FunctionHost::start(function, launch, shutdown.clone()).await.unwrap();
    assert!(host.ready(Duration::from_secs(10)).await, "the probe function starts");
    Poller {
        client: sqs.clone(),
        host: host.clone(),
        source: function.sqs_sources[0].clone(),
        queue_url: urls["WorkQueue"].clone(),
        queue_name: template.queue("WorkQueue").unwrap().name.clone(),
    }
    .spawn(shutdown);

    for body in ["ok-1", "poison", "ok-2", "ok-3"] {
        sqs.send_message().queue_url(&urls["WorkQueue"]).message_body(body).send().await.unwrap();
    }
    // The poison message fails twice (maxReceiveCount 2, 1 s visibility) and moves to the DLQ;
    // the others succeed on their first delivery and are deleted.
    let mut dead = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        dead = bodies(&sqs, &urls["WorkDeadLetterQueue"]).await;
        if !dead.is_empty() {
            break;
        }
    }
    assert_eq!(dead, ["poison"]);
    let _ = stop.send(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(bodies(&sqs, &urls["WorkQueue"]).await.is_empty(), "every good message was deleted");
    let log = std::fs::read_to_string(env.stack.logs.join("sqs-probe.log")).unwrap();
    for good in ["ok-1", "ok-2", "ok-3"] {
        assert_eq!(log.matches(&format!("processed {good}")).count(), 1, "{good} was processed exactly once:\n{log}");
    }
    assert_eq!(log.matches("failed poison").count(), 2, "poison was received twice before redrive:\n{log}");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_process_killed_mid_invocation_ends_it_as_the_runtime_exiting_and_is_replaced() {
    let env = Env::get();
    let template = probe_template();
    let function = &template.functions[0];
    // At this rate about half the invocations are killed, which ones the seed says.
    let plan = FaultPlan { seed: 5, rate: 1.0 };
    let doomed: Vec<bool> = (0..8).map(|n| plan.kill(&function.logical_id, n).is_some()).collect();
    assert!(doomed.contains(&true) && doomed.contains(&false), "the seed kills some, not all: {doomed:?}");
    let counts = FaultCounts::default();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let launch = probe_launch(1, env.stack.logs.join("sqs-probe-kills.log"), Some((plan, counts.clone())));
    let host = FunctionHost::start(function, launch, shutdown).await.unwrap();
    assert!(host.ready(Duration::from_secs(10)).await, "the probe function starts");
    // One at a time, so that the n-th invocation is the plan's n-th.
    for (n, doomed) in doomed.iter().enumerate() {
        let event = serde_json::json!({"Records": [{"messageId": n.to_string(), "body": format!("kill-{n}")}]});
        let outcome = host.invoke(event.to_string().into()).await;
        match (doomed, &outcome) {
            (true, Outcome::Crashed) | (false, Outcome::Response(_)) => {}
            _ => panic!("invocation {n} (doomed: {doomed}) ended {outcome:?}"),
        }
    }
    let kills = doomed.iter().filter(|d| **d).count();
    assert_eq!(counts.by_function()[&function.logical_id][KILLED], kills as u64);
    // Each kill started a fresh process: a cold start of its own (the last one may still be starting).
    for _ in 0..100 {
        if host.init_times().len() > kills {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(host.init_times().len(), 1 + kills, "one process, then one per kill");
    let _ = stop.send(true);
}

/// A local database made before the template gave a table an index (the outbox's `ByDue`) gets
/// the index at the next start, with its data, as CloudFormation adds one to a deployed table.
#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_table_made_before_its_index_gets_it_at_the_next_start() {
    use superpay_local::template::{GlobalIndex, Table};
    let dynamodb = Env::get().dynamodb().await;
    let name = unique("older-outbox");
    let key = vec![("id".to_owned(), "HASH".to_owned())];
    let older = Table {
        logical_id: "OutboxTable".into(),
        name: name.clone(),
        attributes: vec![("id".into(), "S".into())],
        key_schema: key.clone(),
        global_indexes: vec![],
        ttl_attribute: None,
    };
    superpay_local::resources::create_table(&dynamodb, &older).await.unwrap();
    let item = |id: &str| {
        let n = |v: &str| aws_sdk_dynamodb::types::AttributeValue::N(v.into());
        HashMap::from([
            ("id".to_owned(), aws_sdk_dynamodb::types::AttributeValue::S(id.into())),
            ("due_shard".to_owned(), n("7")),
            ("due_at".to_owned(), n("100")),
        ])
    };
    dynamodb.put_item().table_name(&name).set_item(Some(item("kept"))).send().await.unwrap();

    let newer = Table {
        attributes: vec![("id".into(), "S".into()), ("due_shard".into(), "N".into()), ("due_at".into(), "N".into())],
        global_indexes: vec![GlobalIndex {
            name: "ByDue".into(),
            key_schema: vec![("due_shard".into(), "HASH".into()), ("due_at".into(), "RANGE".into())],
            projection: "KEYS_ONLY".into(),
            non_key_attributes: vec![],
        }],
        ..older
    };
    superpay_local::resources::create_table(&dynamodb, &newer).await.unwrap();
    let found = dynamodb
        .query()
        .table_name(&name)
        .index_name("ByDue")
        .key_condition_expression("due_shard = :s AND due_at < :t")
        .expression_attribute_values(":s", aws_sdk_dynamodb::types::AttributeValue::N("7".into()))
        .expression_attribute_values(":t", aws_sdk_dynamodb::types::AttributeValue::N("200".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(found.items().len(), 1, "the item written before the index is in it");
    dynamodb.delete_table().table_name(&name).send().await.unwrap();
}

/// A host dropped while the stack runs (as the benchmark drops its references once measured): its
/// process waits for an event that never comes, as on Lambda, until the stack stops it; it is not
/// answered without an event, which would make lambda_runtime panic (SIGABRT) and be restarted.
#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_process_whose_host_is_gone_waits_for_the_stop_rather_than_crash() {
    let env = Env::get();
    let template = probe_template();
    let log_file = env.stack.logs.join(format!("{}.log", unique("sqs-probe-orphan")));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let launch = probe_launch(1, log_file.clone(), None);
    let host = FunctionHost::start(&template.functions[0], launch, shutdown).await.unwrap();
    assert!(host.ready(Duration::from_secs(10)).await, "the probe function starts");
    drop(host);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    assert!(!log.contains("panicked"), "the process was answered without an event:\n{log}");
    let _ = stop.send(true);
}
