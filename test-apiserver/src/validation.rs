//! What a real API server refuses on every write besides malformed names: `metadata.annotations`
//! over 256 KiB in total, keys and values counted together.

use serde_json::Value;

use super::error::ApiServerError;

/// The most bytes an object's annotations may take, keys and values together (Kubernetes'
/// `TotalAnnotationSizeLimitB`).
pub const ANNOTATIONS_SIZE_LIMIT: usize = 256 * 1024;

/// 422 Invalid, worded as a real API server words it, when the object about to be stored breaks
/// a limit.
pub fn validate(obj: &Value) -> Result<(), ApiServerError> {
    let size: usize = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|a| a.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum())
        .unwrap_or(0);
    if size <= ANNOTATIONS_SIZE_LIMIT {
        return Ok(());
    }
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    Err(ApiServerError::Invalid(format!(
        "{kind} {name:?} is invalid: metadata.annotations: Too long: must have at most {ANNOTATIONS_SIZE_LIMIT} bytes"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with_annotation(value_len: usize) -> Value {
        json!({"kind": "ConfigMap", "metadata": {"name": "c", "annotations": {"ab": "x".repeat(value_len)}}})
    }

    #[test]
    fn annotations_may_take_256_kib_keys_included() {
        assert!(validate(&with_annotation(ANNOTATIONS_SIZE_LIMIT - 2)).is_ok());
        let err = validate(&with_annotation(ANNOTATIONS_SIZE_LIMIT - 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ConfigMap \"c\" is invalid: metadata.annotations: Too long: must have at most 262144 bytes"
        );
        assert_eq!(err.status_code().as_u16(), 422);
        assert!(validate(&json!({"metadata": {"name": "c"}})).is_ok());
    }
}
