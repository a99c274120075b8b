//! The `meshcrypt keys` subcommands as a user runs them: the key persists, is 0600, and the private
//! half never reaches stdout or the logs, even at trace level.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

fn meshcrypt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshcrypt"))
        .args(args)
        .env("MESHCRYPT_LOG", "trace")
        .output()
        .expect("run meshcrypt");
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn field<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {stdout}"))
}

#[test]
fn init_creates_a_private_0600_key_and_show_prints_the_same_public_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let dir = dir.to_str().unwrap();
    let (ok, first, first_log) = meshcrypt(&["keys", "init", "--state-dir", dir]);
    assert!(ok, "{first_log}");
    assert_eq!(field(&first, "created:"), "now");
    let (ok, again, _) = meshcrypt(&["keys", "init", "--state-dir", dir]);
    assert!(ok);
    assert_eq!(field(&again, "created:"), "earlier");
    let (ok, shown, show_log) = meshcrypt(&["keys", "show", "--state-dir", dir, "--log-format", "json"]);
    assert!(ok);
    assert_eq!(field(&first, "public-key:"), field(&shown, "public-key:"));

    let key_file = std::path::Path::new(dir).join("private.key");
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    let contents = std::fs::read_to_string(&key_file).unwrap();
    let private = contents.lines().next().unwrap();
    assert_eq!(private.len(), 44);
    assert_eq!(field(&shown, "epoch:"), "0");
    let (ok, rotated, rotate_log) = meshcrypt(&["keys", "rotate", "--state-dir", dir]);
    assert!(ok, "{rotate_log}");
    // Staged, not in use: the agent publishes the pending key before it uses it.
    assert_eq!(field(&rotated, "epoch:"), "0");
    assert_eq!(field(&rotated, "public-key:"), field(&shown, "public-key:"));
    let pending = field(&rotated, "pending:");
    assert!(pending.contains("(epoch 1,"), "{rotated}");
    assert!(!pending.starts_with(field(&shown, "public-key:")), "{rotated}");
    let pending_file = std::path::Path::new(dir).join("pending.key");
    assert_eq!(std::fs::metadata(&pending_file).unwrap().permissions().mode() & 0o777, 0o600);
    let new_private = std::fs::read_to_string(&pending_file).unwrap().lines().next().unwrap().to_owned();
    for text in [&first, &first_log, &again, &shown, &show_log, &rotated, &rotate_log] {
        assert!(!text.contains(private), "private key printed: {text}");
        assert!(!text.contains(&new_private), "private key printed: {text}");
    }
}

#[test]
fn show_without_a_key_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let (ok, _, err) = meshcrypt(&["keys", "show", "--state-dir", dir.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("meshcrypt keys init"), "{err}");
}

#[test]
fn a_group_readable_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let dir_s = dir.to_str().unwrap();
    assert!(meshcrypt(&["keys", "init", "--state-dir", dir_s]).0);
    std::fs::set_permissions(dir.join("private.key"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let (ok, _, err) = meshcrypt(&["keys", "show", "--state-dir", dir_s]);
    assert!(!ok);
    assert!(err.contains("must not be accessible to group or others"), "{err}");
}
