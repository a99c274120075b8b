//! The process's exit status as scripts read it: 0 for success, help and version; 1 for any
//! failure to run, a usage error included; 2 only for `meshcrypt audit`'s "not compliant" (the
//! lab test shows that one), so a scheduled audit never files a mistyped flag as a finding.

use std::process::Command;

/// (exit code, stdout, stderr) of `meshcrypt ARGS`.
fn meshcrypt(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshcrypt"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("MESHCRYPT_KUBECONFIG")
        .output()
        .expect("run meshcrypt");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn exit_status_table() {
    // (case, arguments, exit code, where the message goes and what it says)
    let cases: [(&str, &[&str], i32, &str); 8] = [
        ("help", &["audit", "--help"], 0, "stdout: Usage"),
        ("version", &["--version"], 0, "stdout: meshcrypt"),
        ("a value clap refuses", &["audit", "--require-strict", "yes"], 1, "stderr: invalid value 'yes'"),
        ("an unknown format", &["audit", "-o", "yaml"], 1, "stderr: invalid value 'yaml'"),
        (
            "a flag given twice",
            &["audit", "--max-key-age", "1d", "--max-key-age", "2d"],
            1,
            "stderr: cannot be used multiple times",
        ),
        (
            "a duration the policy refuses",
            &["audit", "--max-key-age", "soon"],
            1,
            "stderr: --max-key-age \"soon\"",
        ),
        ("no subcommand", &[], 1, "stderr: Usage"),
        (
            "check aws: a peer range that is no CIDR",
            &["check", "aws", "--peer-cidr", "10.0.0.1"],
            1,
            "stderr: invalid value '10.0.0.1'",
        ),
    ];
    for (case, args, code, want) in cases {
        let (got, stdout, stderr) = meshcrypt(args);
        assert_eq!(got, code, "{case}: {stdout}{stderr}");
        let (stream, text) = want.split_once(": ").unwrap();
        let seen = if stream == "stdout" { &stdout } else { &stderr };
        assert!(seen.contains(text), "{case}: {text:?} not in {stream}: {seen}");
    }
}
