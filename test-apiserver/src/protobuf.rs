//! Request bodies in Kubernetes' protobuf encoding, which kubectl sends for the objects its
//! `create` commands make and for `auth can-i`: the `k8s\0` envelope around a `runtime.Unknown`,
//! and the kinds it decodes into the JSON objects the rest of the server works on (Namespace,
//! ConfigMap, Secret, ServiceAccount, SelfSubjectAccessReview). Any other kind is refused with
//! 415, as a server refuses a media type it cannot read for a resource.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_pb::api::authorization::v1 as authorization;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{Map, Value, json};

use super::error::ApiServerError;

/// The media type of Kubernetes' protobuf encoding.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// What every protobuf-encoded object starts with.
const MAGIC: &[u8] = b"k8s\0";

/// The kinds decoded, as (apiVersion, kind).
const DECODED: &[(&str, &str)] = &[
    ("v1", "Namespace"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "ServiceAccount"),
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
];

fn bad(what: &str, e: prost::DecodeError) -> ApiServerError {
    ApiServerError::BadRequest(format!("cannot decode the protobuf {what}: {e}"))
}

/// The object in a protobuf request body, as JSON.
pub fn decode(body: &[u8]) -> Result<Value, ApiServerError> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(|| {
        ApiServerError::BadRequest(format!(
            "provided data does not appear to be a protobuf message, expected prefix {MAGIC:?}"
        ))
    })?;
    let unknown = Unknown::decode(envelope).map_err(|e| bad("envelope", e))?;
    if unknown.content_encoding.as_deref().is_some_and(|e| !e.is_empty()) {
        return Err(ApiServerError::UnsupportedMediaType(format!(
            "protobuf bodies with content encoding {:?} are not supported",
            unknown.content_encoding.unwrap_or_default()
        )));
    }
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let raw = raw.as_slice();
    let fields = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => namespace(core::Namespace::decode(raw).map_err(|e| bad(&kind, e))?),
        ("v1", "ConfigMap") => config_map(core::ConfigMap::decode(raw).map_err(|e| bad(&kind, e))?),
        ("v1", "Secret") => secret(core::Secret::decode(raw).map_err(|e| bad(&kind, e))?),
        ("v1", "ServiceAccount") => {
            service_account(core::ServiceAccount::decode(raw).map_err(|e| bad(&kind, e))?)
        }
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            access_review(authorization::SelfSubjectAccessReview::decode(raw).map_err(|e| bad(&kind, e))?)
        }
        _ => {
            let decoded: Vec<String> = DECODED.iter().map(|(v, k)| format!("{v} {k}")).collect();
            return Err(ApiServerError::UnsupportedMediaType(format!(
                "the test API server decodes {MEDIA_TYPE} bodies only for {}; send {api_version} {kind} as application/json",
                decoded.join(", ")
            )));
        }
    };
    let mut object = Map::new();
    object.insert("apiVersion".into(), json!(api_version));
    object.insert("kind".into(), json!(kind));
    object.extend(fields);
    Ok(Value::Object(object))
}

/// Adds `key` when the value is there and not empty (as JSON's `omitempty` leaves it out).
fn put(out: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    if !empty {
        out.insert(key.to_string(), value);
    }
}

fn base64_map(data: BTreeMap<String, Vec<u8>>) -> Value {
    let engine = base64::engine::general_purpose::STANDARD;
    data.into_iter().map(|(k, v)| (k, json!(engine.encode(v)))).collect::<Map<_, _>>().into()
}

/// The metadata a client sets when it creates an object.
fn metadata(meta: Option<ObjectMeta>) -> Map<String, Value> {
    let meta = meta.unwrap_or_default();
    let mut out = Map::new();
    put(&mut out, "name", json!(meta.name));
    put(&mut out, "generateName", json!(meta.generate_name));
    put(&mut out, "namespace", json!(meta.namespace));
    put(&mut out, "resourceVersion", json!(meta.resource_version));
    put(&mut out, "labels", json!(meta.labels));
    put(&mut out, "annotations", json!(meta.annotations));
    put(&mut out, "finalizers", json!(meta.finalizers));
    let owners: Vec<Value> = meta
        .owner_references
        .into_iter()
        .map(|o| {
            let mut r = Map::new();
            put(&mut r, "apiVersion", json!(o.api_version));
            put(&mut r, "kind", json!(o.kind));
            put(&mut r, "name", json!(o.name));
            put(&mut r, "uid", json!(o.uid));
            put(&mut r, "controller", json!(o.controller));
            put(&mut r, "blockOwnerDeletion", json!(o.block_owner_deletion));
            Value::Object(r)
        })
        .collect();
    put(&mut out, "ownerReferences", json!(owners));
    out
}

fn with_metadata(meta: Option<ObjectMeta>) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("metadata".into(), Value::Object(metadata(meta)));
    out
}

fn namespace(ns: core::Namespace) -> Map<String, Value> {
    let mut out = with_metadata(ns.metadata);
    let finalizers = ns.spec.map(|s| s.finalizers).unwrap_or_default();
    if !finalizers.is_empty() {
        out.insert("spec".into(), json!({"finalizers": finalizers}));
    }
    out
}

fn config_map(cm: core::ConfigMap) -> Map<String, Value> {
    let mut out = with_metadata(cm.metadata);
    put(&mut out, "data", json!(cm.data));
    put(&mut out, "binaryData", base64_map(cm.binary_data));
    put(&mut out, "immutable", json!(cm.immutable));
    out
}

fn secret(secret: core::Secret) -> Map<String, Value> {
    let mut out = with_metadata(secret.metadata);
    put(&mut out, "type", json!(secret.r#type));
    put(&mut out, "data", base64_map(secret.data));
    put(&mut out, "stringData", json!(secret.string_data));
    put(&mut out, "immutable", json!(secret.immutable));
    out
}

fn service_account(sa: core::ServiceAccount) -> Map<String, Value> {
    let mut out = with_metadata(sa.metadata);
    let secrets: Vec<Value> = sa
        .secrets
        .into_iter()
        .map(|r| {
            let mut m = Map::new();
            put(&mut m, "apiVersion", json!(r.api_version));
            put(&mut m, "kind", json!(r.kind));
            put(&mut m, "namespace", json!(r.namespace));
            put(&mut m, "name", json!(r.name));
            put(&mut m, "uid", json!(r.uid));
            Value::Object(m)
        })
        .collect();
    put(&mut out, "secrets", json!(secrets));
    let pull: Vec<Value> = sa.image_pull_secrets.into_iter().map(|r| json!({"name": r.name})).collect();
    put(&mut out, "imagePullSecrets", json!(pull));
    put(&mut out, "automountServiceAccountToken", json!(sa.automount_service_account_token));
    out
}

fn access_review(review: authorization::SelfSubjectAccessReview) -> Map<String, Value> {
    let mut out = with_metadata(review.metadata);
    let spec = review.spec.unwrap_or_default();
    let mut s = Map::new();
    if let Some(r) = spec.resource_attributes {
        let mut m = Map::new();
        put(&mut m, "namespace", json!(r.namespace));
        put(&mut m, "verb", json!(r.verb));
        put(&mut m, "group", json!(r.group));
        put(&mut m, "version", json!(r.version));
        put(&mut m, "resource", json!(r.resource));
        put(&mut m, "subresource", json!(r.subresource));
        put(&mut m, "name", json!(r.name));
        s.insert("resourceAttributes".into(), Value::Object(m));
    }
    if let Some(n) = spec.non_resource_attributes {
        let mut m = Map::new();
        put(&mut m, "path", json!(n.path));
        put(&mut m, "verb", json!(n.verb));
        s.insert("nonResourceAttributes".into(), Value::Object(m));
    }
    out.insert("spec".into(), Value::Object(s));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        [MAGIC, &unknown.encode_to_vec()].concat()
    }

    #[test]
    fn decodes_a_config_map_as_kubectl_sends_it() {
        let cm = core::ConfigMap {
            metadata: Some(ObjectMeta {
                name: Some("y".into()),
                namespace: Some("x".into()),
                labels: [("app".to_string(), "web".to_string())].into(),
                ..ObjectMeta::default()
            }),
            data: [("a".to_string(), "b".to_string())].into(),
            binary_data: [("bin".to_string(), vec![0, 1, 2])].into(),
            immutable: None,
        };
        let v = decode(&envelope("v1", "ConfigMap", cm.encode_to_vec())).unwrap();
        assert_eq!(
            v,
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "y", "namespace": "x", "labels": {"app": "web"}},
                "data": {"a": "b"}, "binaryData": {"bin": "AAEC"},
            })
        );
    }

    #[test]
    fn secret_data_is_base64_as_in_json() {
        let secret = core::Secret {
            metadata: Some(ObjectMeta { name: Some("s".into()), ..ObjectMeta::default() }),
            data: [("k".to_string(), b"v".to_vec())].into(),
            r#type: Some("Opaque".into()),
            ..core::Secret::default()
        };
        let v = decode(&envelope("v1", "Secret", secret.encode_to_vec())).unwrap();
        assert_eq!(v["data"], json!({"k": "dg=="}));
        assert_eq!(v["type"], "Opaque");
    }

    #[test]
    fn other_kinds_and_other_bytes_are_refused() {
        let err = decode(&envelope("v1", "Pod", Vec::new())).unwrap_err();
        assert_eq!(err.status_code().as_u16(), 415);
        assert!(err.to_string().contains("send v1 Pod as application/json"), "{err}");
        let err = decode(b"{\"kind\":\"ConfigMap\"}").unwrap_err();
        assert_eq!(err.status_code().as_u16(), 400);
    }
}
