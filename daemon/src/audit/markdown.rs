//! The audit report as Markdown, for people and for filing: the same content as the JSON, its
//! content hash included so the two can be matched.

use std::fmt::Write as _;

use super::policy::human;
use super::report::{AuditReport, Verdict};

/// `report` as a Markdown document.
pub fn render(report: &AuditReport) -> String {
    let mut out = String::new();
    let verdict = match report.verdict {
        Verdict::Compliant => "COMPLIANT",
        Verdict::NotCompliant => "NOT COMPLIANT",
    };
    let s = &report.summary;
    let p = &report.policy;
    let _ = writeln!(out, "# meshcrypt audit report\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| Verdict | **{verdict}** |");
    let _ = writeln!(out, "| Cluster | {} |", cell(&report.cluster));
    let _ = writeln!(out, "| Taken at | {} |", report.taken_at);
    let _ = writeln!(out, "| Schema | {} |", report.schema);
    let _ = writeln!(out, "| Content hash (of the JSON report) | `{}` |", report.content_hash);
    let _ = writeln!(
        out,
        "| Policy | key age at most {}; strict mode {}; handshakes {} |",
        human(p.max_key_age_seconds),
        if p.require_strict { "required" } else { "not required" },
        p.max_handshake_age_seconds
            .map_or("not checked".to_owned(), |m| format!("every peer within {}", human(m))),
    );
    let _ = writeln!(
        out,
        "| Summary | nodes: {}; compliant: {}; no agent expected: {}; violations: {}; warnings: {}; exceptions: {} |\n",
        s.nodes, s.compliant, s.no_agent_expected, s.violations, s.warnings, s.exceptions
    );

    let _ = writeln!(out, "## Findings\n");
    if report.findings.is_empty() {
        let _ = writeln!(out, "None.\n");
    } else {
        table(&mut out, &["Severity", "Subject", "Code", "Message"]);
        for f in &report.findings {
            let severity = serde_json::to_value(f.severity).ok().and_then(|v| v.as_str().map(str::to_owned));
            row(&mut out, &[&severity.unwrap_or_default(), &f.subject, &f.code, &f.message]);
        }
        out.push('\n');
    }

    let _ = writeln!(out, "## Coverage\n");
    table(
        &mut out,
        &[
            "Node",
            "Agent",
            "Key",
            "Strict",
            "Handshaked / peers",
            "Oldest handshake",
            "Reported",
            "Compliant",
        ],
    );
    for c in &report.coverage {
        let agent = serde_json::to_value(c.agent).ok().and_then(|v| v.as_str().map(str::to_owned));
        let agent = match &c.exception {
            Some(e) => format!("{} ({e})", agent.unwrap_or_default()),
            None => agent.unwrap_or_default(),
        };
        row(
            &mut out,
            &[
                &c.node,
                &agent,
                yes_no(c.key_published),
                &c.strict.map_or("-".into(), |v| yes_no(v).to_owned()),
                &match (c.peers_handshaked, c.peers) {
                    (Some(h), Some(p)) => format!("{h} / {p}"),
                    _ => "-".into(),
                },
                c.oldest_handshake.as_deref().unwrap_or("-"),
                c.reported_at.as_deref().unwrap_or("-"),
                yes_no(c.compliant),
            ],
        );
    }
    out.push('\n');

    let _ = writeln!(out, "## Key inventory\n");
    table(
        &mut out,
        &["Node", "Fingerprint", "Epoch", "Created", "Age (days)", "Within policy", "Written by"],
    );
    for k in &report.key_inventory {
        row(
            &mut out,
            &[
                &k.node,
                &format!("`{}`", k.fingerprint),
                &k.epoch.to_string(),
                &k.created,
                &(k.age_seconds / 86_400).to_string(),
                yes_no(k.within_policy),
                &k.written_by.join(", "),
            ],
        );
    }
    out.push('\n');

    let _ = writeln!(out, "## Exceptions: what is not encrypted\n");
    table(&mut out, &["Kind", "Subject", "Detail"]);
    for e in &report.exceptions {
        row(&mut out, &[&e.kind, &e.subject, &e.detail]);
    }
    out.push('\n');

    let c = &report.configuration;
    let _ = writeln!(out, "## Configuration\n");
    let _ = writeln!(
        out,
        "ConfigMap `{}`: {}.\n",
        c.config_map,
        if c.found {
            format!("resourceVersion {}", c.resource_version.as_deref().unwrap_or("-"))
        } else {
            "not found".into()
        }
    );
    table(&mut out, &["Setting", "Value", "Source"]);
    for s in &c.settings {
        row(&mut out, &[&s.key, &s.value, &s.source]);
    }
    out.push('\n');
    for r in &c.rejected {
        let _ = writeln!(out, "- Rejected: {}", cell(r));
    }
    if !c.managers.is_empty() {
        let _ =
            writeln!(out, "Field managers (from managedFields; the EKS audit log has the full history):\n");
        table(&mut out, &["Manager", "Operation", "Time"]);
        for m in &c.managers {
            row(&mut out, &[&m.manager, &m.operation, m.time.as_deref().unwrap_or("-")]);
        }
    }
    out
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

fn table(out: &mut String, headers: &[&str]) {
    let _ = writeln!(out, "| {} |", headers.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(headers.len()));
}

fn row(out: &mut String, cells: &[&str]) {
    let cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

/// Text safe inside a table cell: pipes escaped, line breaks as spaces.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}
