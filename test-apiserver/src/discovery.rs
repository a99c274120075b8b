//! Discovery (`/api`, `/apis`, resource lists), `/version`, and a minimal OpenAPI v3 document that
//! satisfies kubectl (it checks the PATCH operations for the `fieldValidation` parameter).

use axum::http::HeaderMap;
use serde_json::{Map, Value, json};

use super::resources::{self, ResourceDef};

/// The `/version` document.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-meshcrypt-test",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut out = Vec::new();
    for r in
        resources::ALL.iter().chain(resources::REVIEWS).filter(|r| r.group == group && r.version == version)
    {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": resources::verbs(r),
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        out.push(entry);
        if r.has_status {
            out.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out})
}

fn api_group(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv], "preferredVersion": gv})
}

/// The discovery or OpenAPI document at `path`, if `path` is one.
pub fn document(path: &str, _headers: &HeaderMap) -> Option<Value> {
    let path = path.trim_end_matches('/');
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api"] => Some(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}],
        })),
        ["api", "v1"] => Some(resource_list("", "v1")),
        ["apis"] => Some(json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": resources::api_groups().iter().map(|(g, v)| {
                let mut g = api_group(g, v);
                if let Some(m) = g.as_object_mut() {
                    m.remove("kind");
                    m.remove("apiVersion");
                }
                g
            }).collect::<Vec<_>>(),
        })),
        ["apis", group] => {
            resources::api_groups().into_iter().find(|(g, _)| g == group).map(|(g, v)| api_group(g, v))
        }
        ["apis", group, version] if resources::api_groups().contains(&(*group, *version)) => {
            Some(resource_list(group, version))
        }
        ["openapi", "v3"] => {
            let mut paths = Map::new();
            paths.insert("api/v1".into(), json!({"serverRelativeURL": "/openapi/v3/api/v1?hash=meshcrypt1"}));
            for (g, v) in resources::api_groups() {
                paths.insert(
                    format!("apis/{g}/{v}"),
                    json!({"serverRelativeURL": format!("/openapi/v3/apis/{g}/{v}?hash=meshcrypt1")}),
                );
            }
            Some(json!({"paths": paths}))
        }
        ["openapi", "v3", "api", "v1"] => Some(openapi_v3("", "v1")),
        ["openapi", "v3", "apis", group, version]
            if resources::api_groups().contains(&(*group, *version)) =>
        {
            Some(openapi_v3(group, version))
        }
        _ => None,
    }
}

fn schema_name(r: &ResourceDef) -> String {
    let pkg = match r.group {
        "" => "core",
        "coordination.k8s.io" => "coordination",
        "events.k8s.io" => "events",
        other => other,
    };
    format!("io.k8s.api.{pkg}.{}.{}", r.version, r.kind)
}

fn query_param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string"}, "uniqueItems": true})
}

fn openapi_v3(group: &str, version: &str) -> Value {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    schemas.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".into(),
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    );
    for r in resources::ALL.iter().filter(|r| r.group == group && r.version == version) {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let name = schema_name(r);
        schemas.insert(
            name.clone(),
            json!({
                "type": "object",
                "description": format!("{} (schema abridged by the meshcrypt test API server)", r.kind),
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}], "default": {}},
                },
                "x-kubernetes-preserve-unknown-fields": true,
                "x-kubernetes-group-version-kind": [gvk.clone()],
            }),
        );
        let obj_ref = json!({"$ref": format!("#/components/schemas/{name}")});
        let base = if r.namespaced {
            format!("{}/namespaces/{{namespace}}/{}", r.group_version_path(), r.plural)
        } else {
            format!("{}/{}", r.group_version_path(), r.plural)
        };
        let op = |action: &str, with_body: Option<Vec<&str>>| {
            let mut o = json!({
                "operationId": format!("{action}{}", r.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk.clone(),
                "parameters": [query_param("dryRun"), query_param("fieldManager"), query_param("fieldValidation")],
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": obj_ref.clone()}}}},
            });
            if let Some(types) = with_body {
                let content: Map<String, Value> = types
                    .into_iter()
                    .map(|t| (t.to_string(), json!({"schema": {"type": "object"}})))
                    .collect();
                o["requestBody"] = json!({"content": content, "required": true});
            }
            o
        };
        paths.insert(
            base.clone(),
            json!({"post": op("post", Some(vec!["application/json", "application/yaml"]))}),
        );
        // Strategic merge patch is left out on purpose: kubectl then computes client-side apply
        // patches from its built-in Go types instead of from this abridged schema.
        paths.insert(
            format!("{base}/{{name}}"),
            json!({
                "get": op("get", None),
                "put": op("put", Some(vec!["application/json", "application/yaml"])),
                "patch": op("patch", Some(vec![
                    "application/json-patch+json",
                    "application/merge-patch+json",
                    "application/apply-patch+yaml",
                ])),
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}
