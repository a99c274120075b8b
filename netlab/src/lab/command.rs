//! Running host programs (mostly iproute2's `ip`) and keeping their stderr when they fail.

use std::process::{Command, Output, Stdio};

use super::error::LabError;

/// Renders a command line for error messages.
pub(crate) fn render(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Runs a program to completion and returns its raw output, whatever the exit status.
pub(crate) fn output(program: &str, args: &[&str]) -> Result<Output, LabError> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn { command: render(program, args), source })
}

/// Runs a program and fails with its stderr unless it exits successfully; returns stdout.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, LabError> {
    let out = output(program, args)?;
    check(render(program, args), out)
}

/// Turns an [`Output`] into stdout, or into [`LabError::CommandFailed`] with its stderr.
pub(crate) fn check(command: String, out: Output) -> Result<String, LabError> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::CommandFailed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Runs `ip <args>` in the root namespace (only ever used for commands that name a netns).
pub(crate) fn ip(args: &[&str]) -> Result<String, LabError> {
    run("ip", args)
}

/// Runs `ip -n <ns> <args>`: the command acts inside namespace `ns`.
pub(crate) fn ip_in(ns: &str, args: &[&str]) -> Result<String, LabError> {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    run("ip", &full)
}
