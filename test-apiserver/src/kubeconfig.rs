//! Writing a kubeconfig a person (or kubectl in a test) can use against the test server.

use std::path::Path;

use super::error::ApiServerError;

/// A kubeconfig for `server_url` authenticating with a bearer `token`; for an `https` URL it
/// trusts the test CA ([`super::tls::TEST_CA_PEM`]).
pub fn kubeconfig_yaml(server_url: &str, token: &str) -> String {
    kubeconfig_yaml_via(server_url, token, None)
}

/// [`kubeconfig_yaml`] for an `https` URL whose host the test certificate does not name (an
/// address inside a lab's network namespace): the client checks the certificate against
/// `server_name` instead (`tls-server-name`, e.g. `localhost`).
pub fn kubeconfig_yaml_via(server_url: &str, token: &str, server_name: Option<&str>) -> String {
    use base64::Engine;
    let mut ca = if server_url.starts_with("https://") {
        format!(
            "\n    certificate-authority-data: {}",
            base64::engine::general_purpose::STANDARD.encode(super::tls::TEST_CA_PEM)
        )
    } else {
        String::new()
    };
    if let Some(name) = server_name {
        ca.push_str(&format!("\n    tls-server-name: {name}"));
    }
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: meshcrypt-test
  cluster:
    server: {server_url}{ca}
users:
- name: meshcrypt-test
  user:
    token: {token}
contexts:
- name: meshcrypt-test
  context:
    cluster: meshcrypt-test
    user: meshcrypt-test
    namespace: default
current-context: meshcrypt-test
preferences: {{}}
"
    )
}

/// Writes [`kubeconfig_yaml`] to `path` (mode 0600).
pub fn write(path: &Path, server_url: &str, token: &str) -> Result<(), ApiServerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(kubeconfig_yaml(server_url, token).as_bytes())?;
    Ok(())
}
