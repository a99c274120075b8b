//! `meshcrypt config check FILE`: finds the meshcrypt ConfigMap in a manifest (one YAML document
//! or many, as `kubectl kustomize` prints them) and validates it with the agent's own parser.

use std::io::Write as _;

use serde::Deserialize as _;

use super::settings::{KEYS, Settings};
use crate::cli::ConfigCheckArgs;
use crate::error::AgentError;

/// Validates the ConfigMap and prints the effective settings; fails naming every bad key.
pub fn run(args: &ConfigCheckArgs) -> Result<(), AgentError> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|source| AgentError::Io { what: format!("read {}", args.file.display()), source })?;
    let mut found = None;
    for document in yaml_serde::Deserializer::from_str(&text) {
        let value = yaml_serde::Value::deserialize(document)
            .map_err(|source| AgentError::Yaml { file: args.file.clone(), source })?;
        let is_ours = value["kind"].as_str() == Some("ConfigMap")
            && value["metadata"]["name"].as_str() == Some(args.name.as_str());
        if is_ours {
            found = Some(value);
        }
    }
    let configmap = found
        .ok_or_else(|| AgentError::ConfigMapNotFound { name: args.name.clone(), file: args.file.clone() })?;
    let data: std::collections::BTreeMap<String, String> = match &configmap["data"] {
        yaml_serde::Value::Null => Default::default(),
        other => yaml_serde::from_value(other.clone())
            .map_err(|source| AgentError::Yaml { file: args.file.clone(), source })?,
    };
    let settings = Settings::parse(&Settings::default(), &data)
        .map_err(|errors| AgentError::ConfigRejected { name: args.name.clone(), errors })?;
    let io = |source| AgentError::Io { what: "write to stdout".into(), source };
    let mut out = std::io::stdout().lock();
    writeln!(out, "ConfigMap {:?} is valid:", args.name).map_err(io)?;
    for (key, _, _) in KEYS {
        let origin = if data.contains_key(*key) { "set" } else { "default" };
        writeln!(out, "  {key:<22} {:<8} {}", origin, settings.describe(key)).map_err(io)?;
    }
    Ok(())
}
