//! checkov's verdict on template.yaml for the test command: any finding fails it, unless its
//! resource suppresses the check in its `Metadata` with the reason (`checkov: skip: - id, comment`).

use serde::Deserialize;

/// Offline: no guidelines download (`--skip-download`); the JSON report is read by `verdict`.
pub const ARGS: &[&str] =
    &["--file", "template.yaml", "--framework", "cloudformation", "--skip-download", "--output", "json"];

/// What checkov says of a suppression without a `comment`.
const NO_REASON: &str = "No comment provided";

#[derive(Deserialize)]
struct Report {
    results: Results,
    summary: Summary,
}

#[derive(Deserialize)]
struct Results {
    failed_checks: Vec<Check>,
    skipped_checks: Vec<Check>,
    parsing_errors: Vec<String>,
}

#[derive(Deserialize)]
struct Check {
    check_id: String,
    check_name: String,
    resource: String,
    file_line_range: Vec<u64>,
    check_result: CheckResult,
}

#[derive(Deserialize)]
struct CheckResult {
    suppress_comment: Option<String>,
}

#[derive(Deserialize)]
struct Summary {
    passed: u64,
    skipped: u64,
}

/// From checkov's JSON report: a one-line summary when nothing is wrong, else what is, one per line.
pub fn verdict(report: &str) -> Result<String, String> {
    let report: Report =
        serde_json::from_str(report).map_err(|e| format!("checkov did not report on template.yaml ({e})"))?;
    let results = &report.results;
    if !results.parsing_errors.is_empty() {
        return Err(format!("checkov could not parse {}", results.parsing_errors.join(", ")));
    }
    if report.summary.passed == 0 && results.failed_checks.is_empty() {
        return Err("checkov found nothing to check in template.yaml".into());
    }
    let line = |c: &Check, what: &str| {
        let lines = c.file_line_range.iter().map(u64::to_string).collect::<Vec<_>>().join("-");
        format!("  {} {} (template.yaml:{lines}): {what}", c.check_id, c.resource)
    };
    let problems: Vec<String> = results
        .failed_checks
        .iter()
        .map(|c| line(c, &c.check_name))
        .chain(
            results
                .skipped_checks
                .iter()
                .filter(|c| {
                    c.check_result.suppress_comment.as_deref().is_none_or(|r| r.trim().is_empty() || r == NO_REASON)
                })
                .map(|c| line(c, "suppressed without a reason (its comment)")),
        )
        .collect();
    if !problems.is_empty() {
        return Err(format!(
            "checkov's findings in template.yaml: fix each, or suppress it in the resource's Metadata \
             (checkov: skip: - id, comment) with the reason it does not apply\n{}",
            problems.join("\n")
        ));
    }
    Ok(format!(
        "checkov: {} checks passed, {} suppressed in template.yaml with their reasons",
        report.summary.passed, report.summary.skipped
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(failed: &str, skipped: &str, parsing_errors: &str) -> String {
        format!(
            r#"{{"check_type": "cloudformation",
                "results": {{"passed_checks": [], "failed_checks": [{failed}], "skipped_checks": [{skipped}],
                             "parsing_errors": [{parsing_errors}]}},
                "summary": {{"passed": 52, "failed": 0, "skipped": 1, "parsing_errors": 0}}}}"#
        )
    }

    fn check(id: &str, comment: Option<&str>) -> String {
        let result = match comment {
            Some(c) => format!(r#"{{"result": "SKIPPED", "suppress_comment": "{c}"}}"#),
            None => r#"{"result": "FAILED"}"#.into(),
        };
        format!(
            r#"{{"check_id": "{id}", "check_name": "Ensure it", "resource": "AWS::SQS::Queue.Work",
                "file_line_range": [3, 9], "check_result": {result}}}"#
        )
    }

    #[test]
    fn passes_with_every_suppression_reasoned() {
        let summary = verdict(&report("", &check("CKV_AWS_27", Some("SQS-managed keys")), "")).unwrap();
        assert_eq!(summary, "checkov: 52 checks passed, 1 suppressed in template.yaml with their reasons");
    }

    #[test]
    fn fails_on_a_finding_a_suppression_without_reason_or_a_template_it_cannot_read() {
        let failed = verdict(&report(&check("CKV_AWS_28", None), "", "")).unwrap_err();
        assert!(failed.contains("CKV_AWS_28 AWS::SQS::Queue.Work (template.yaml:3-9): Ensure it"), "{failed}");
        let unreasoned = verdict(&report("", &check("CKV_AWS_27", Some(NO_REASON)), "")).unwrap_err();
        assert!(unreasoned.contains("CKV_AWS_27 AWS::SQS::Queue.Work (template.yaml:3-9): suppressed without"));
        assert!(verdict(&report("", "", r#""/template.yaml""#)).unwrap_err().contains("could not parse"));
        assert!(verdict("[]").is_err());
    }
}
