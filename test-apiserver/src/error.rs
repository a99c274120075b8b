//! The module's one error type, which also knows how to render itself as a Kubernetes `Status`.

use axum::http::StatusCode;
use serde_json::{Value, json};

/// Everything that can go wrong in the test API server, both when starting it and when serving a
/// request (each request error maps to the HTTP code and `Status` reason a real server would use).
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    /// Binding, configuring or reading a socket or file failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A seed file or object could not be parsed.
    #[error("cannot parse: {0}")]
    Parse(String),
    /// The requested object or resource does not exist (404 NotFound).
    #[error("{0}")]
    NotFound(String),
    /// An object with that name already exists (409 AlreadyExists).
    #[error("{0}")]
    AlreadyExists(String),
    /// A stale resourceVersion or a server-side apply field conflict (409 Conflict).
    #[error("{message}")]
    Conflict {
        /// Human-readable message.
        message: String,
        /// `details.causes` entries (for apply conflicts), possibly empty.
        causes: Vec<Value>,
    },
    /// The caller may not do this (403 Forbidden).
    #[error("{0}")]
    Forbidden(String),
    /// No or an unknown bearer token (401 Unauthorized).
    #[error("Unauthorized")]
    Unauthorized,
    /// The object is not valid (422 Invalid).
    #[error("{0}")]
    Invalid(String),
    /// The request is malformed (400 BadRequest).
    #[error("{0}")]
    BadRequest(String),
    /// The request body's content type is not supported (415 UnsupportedMediaType).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A resourceVersion or continue token older than the retained history (410 Expired).
    #[error("{0}")]
    Expired(String),
    /// The HTTP method is not supported on this path (405 MethodNotAllowed).
    #[error("{0}")]
    MethodNotAllowed(String),
}

impl ApiServerError {
    /// The HTTP status code a real API server would answer with.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::Io(_) | Self::Parse(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::AlreadyExists(_) | Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Expired(_) => StatusCode::GONE,
        }
    }

    /// The `Status.reason` a real API server would use.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Io(_) | Self::Parse(_) => "InternalError",
            Self::NotFound(_) => "NotFound",
            Self::AlreadyExists(_) => "AlreadyExists",
            Self::Conflict { .. } => "Conflict",
            Self::Forbidden(_) => "Forbidden",
            Self::Unauthorized => "Unauthorized",
            Self::Invalid(_) => "Invalid",
            Self::BadRequest(_) => "BadRequest",
            Self::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Self::MethodNotAllowed(_) => "MethodNotAllowed",
            Self::Expired(_) => "Expired",
        }
    }

    /// This error as a `Status` object (kind Status, apiVersion v1, status Failure).
    pub fn to_status(&self) -> Value {
        let mut status = failure_status(self.status_code().as_u16(), self.reason(), &self.to_string());
        if let Self::Conflict { causes, .. } = self
            && !causes.is_empty()
        {
            status["details"] = json!({ "causes": causes });
        }
        status
    }
}

/// A `Status` object with `status: Failure`.
pub fn failure_status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// The 410 `Status` sent inside a watch stream when the requested resourceVersion is too old.
pub fn expired_status(message: &str) -> Value {
    failure_status(410, "Expired", message)
}

impl axum::response::IntoResponse for ApiServerError {
    fn into_response(self) -> axum::response::Response {
        let code = self.status_code();
        let body = self.to_status();
        (code, axum::Json(body)).into_response()
    }
}
