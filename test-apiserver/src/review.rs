//! SelfSubjectAccessReviews (`kubectl auth can-i`): the server's own authorizer answers whether
//! the caller may do what a review describes; reviews are answered at once and never stored.

use serde_json::{Value, json};

use super::auth::{Identity, may};
use super::error::ApiServerError;
use super::resources::SELF_SUBJECT_ACCESS_REVIEWS;

/// The review with its `status.allowed` filled in for the caller.
pub fn answer(identity: &Identity, mut review: Value) -> Result<Value, ApiServerError> {
    let res = SELF_SUBJECT_ACCESS_REVIEWS;
    if review.get("kind").and_then(Value::as_str).is_some_and(|k| k != res.kind)
        || review.get("apiVersion").and_then(Value::as_str).is_some_and(|v| v != res.api_version())
    {
        return Err(ApiServerError::BadRequest(format!(
            "a {} needs apiVersion {:?} and kind {:?}",
            res.kind,
            res.api_version(),
            res.kind
        )));
    }
    let text = |v: &Value, field: &str| v.get(field).and_then(Value::as_str).unwrap_or("").to_string();
    let spec = review.get("spec").cloned().unwrap_or(Value::Null);
    let allowed = match (spec.get("resourceAttributes"), spec.get("nonResourceAttributes")) {
        (Some(r), None) => may(identity, &text(r, "verb"), &text(r, "resource"), &text(r, "name")),
        (None, Some(n)) => may(identity, &text(n, "verb"), "", &text(n, "path")),
        _ => {
            return Err(ApiServerError::Invalid(format!(
                "{} \"\" is invalid: spec: Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
                res.kind
            )));
        }
    };
    review["apiVersion"] = json!(res.api_version());
    review["kind"] = json!(res.kind);
    review["status"] = json!({"allowed": allowed});
    Ok(review)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn can(identity: &Identity, verb: &str, resource: &str, name: &str) -> bool {
        let review =
            json!({"spec": {"resourceAttributes": {"verb": verb, "resource": resource, "name": name}}});
        answer(identity, review).unwrap()["status"]["allowed"].as_bool().unwrap()
    }

    #[test]
    fn the_authorizer_answers() {
        let node = Identity::Node("node-a".into());
        assert!(can(&node, "patch", "nodes", "node-a"));
        assert!(!can(&node, "patch", "nodes", "node-b"));
        assert!(can(&node, "watch", "pods", ""));
        assert!(can(&node, "create", "events", ""));
        assert!(!can(&node, "create", "configmaps", ""));
        assert!(!can(&node, "*", "*", ""));
        assert!(can(&Identity::Admin, "*", "*", ""));
        assert!(can(&Identity::Reader, "list", "pods", ""));
        assert!(can(&Identity::Reader, "get", "configmaps", "meshcrypt"));
        assert!(!can(&Identity::Reader, "patch", "nodes", "node-a"));
        assert!(!can(&Identity::Reader, "create", "events", ""));
        let healthz = json!({"spec": {"nonResourceAttributes": {"verb": "get", "path": "/healthz"}}});
        assert_eq!(answer(&node, healthz).unwrap()["status"]["allowed"], true);
        let err = answer(&node, json!({"spec": {}})).unwrap_err();
        assert_eq!(err.status_code().as_u16(), 422);
    }
}
