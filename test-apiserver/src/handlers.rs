//! HTTP routing: one fallback handler parses Kubernetes API paths and dispatches to the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch as watch_channel;

use super::auth::{Identity, Tokens, Verb, authorize};
use super::discovery;
use super::error::ApiServerError;
use super::patch::PatchKind;
use super::protobuf;
use super::resources::{self, ResourceDef, SELF_SUBJECT_ACCESS_REVIEWS};
use super::review;
use super::selectors::Selectors;
use super::store::{Store, WatchStart, WriteContext, parse_rv};
use super::table;
use super::traffic::TrafficLog;
use super::watch::{self, WatchRequest};

/// Everything a request handler needs.
pub struct AppState {
    /// The objects.
    pub store: Arc<Store>,
    /// Accepted bearer tokens.
    pub tokens: Tokens,
    /// Interval between watch bookmarks.
    pub bookmark_interval: Duration,
    /// Flips to true on shutdown so open watches end.
    pub shutdown: watch_channel::Receiver<bool>,
    /// Requests and bytes per client.
    pub traffic: TrafficLog,
}

/// A parsed resource request path.
#[derive(Debug, Clone)]
struct Target {
    res: ResourceDef,
    /// Namespace from the path (None: cluster-scoped or all namespaces).
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_target(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let target = |plural: &str, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| {
        let res = resources::lookup(group, version, plural)?;
        if ns.is_some() && !res.namespaced {
            return None;
        }
        Some(Target {
            res,
            namespace: ns.map(str::to_string),
            name: name.map(str::to_string),
            subresource: sub.map(str::to_string),
        })
    };
    match rest {
        ["namespaces", ns, plural, tail @ ..]
            if resources::lookup(group, version, plural).is_some_and(|r| r.namespaced) =>
        {
            match tail {
                [] => target(plural, Some(ns), None, None),
                [name] => target(plural, Some(ns), Some(name), None),
                [name, sub] => target(plural, Some(ns), Some(name), Some(sub)),
                _ => None,
            }
        }
        [plural] => target(plural, None, None, None),
        [plural, name] => target(plural, None, Some(name), None),
        [plural, name, sub] => target(plural, None, Some(name), Some(sub)),
        _ => None,
    }
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, axum::Json(v.clone())).into_response()
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("as=Table"))
}

fn manager_name(q: &HashMap<String, String>, headers: &HeaderMap) -> String {
    if let Some(m) = q.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

/// The fallback handler: every path goes through here.
pub async fn dispatch(State(app): State<Arc<AppState>>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let headers = req.headers().clone();
    let query: HashMap<String, String> = Query::try_from_uri(&uri).map(|Query(q)| q).unwrap_or_default();
    let body = match axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return ApiServerError::BadRequest(format!("cannot read body: {e}")).into_response(),
    };
    let path = uri.path().to_string();
    tracing::debug!(%method, %uri, "request");
    let identity = app.tokens.authenticate(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
    let client = TrafficLog::client(identity.ok().as_ref());
    app.traffic.request(&client);
    let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let response = match handle(&app, &method, &path, &query, &headers, &body).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(%method, %uri, error = %e, "request failed");
            e.into_response()
        }
    };
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, app.traffic.count_body(client, body, watching))
}

async fn handle(
    app: &Arc<AppState>,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiServerError> {
    if matches!(path, "/healthz" | "/livez" | "/readyz") {
        return Ok((StatusCode::OK, "ok").into_response());
    }
    if path == "/version" {
        return Ok(json_response(StatusCode::OK, &discovery::version()));
    }
    let identity =
        app.tokens.authenticate(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()))?;
    if let Some(doc) = discovery::document(path, headers) {
        if method != Method::GET {
            return Err(ApiServerError::MethodNotAllowed(format!("{method} is not allowed on {path}")));
        }
        return Ok(json_response(StatusCode::OK, &doc));
    }
    let reviews = SELF_SUBJECT_ACCESS_REVIEWS;
    if path.trim_end_matches('/') == format!("{}/{}", reviews.group_version_path(), reviews.plural) {
        if method != Method::POST {
            return Err(ApiServerError::MethodNotAllowed(format!("{method} is not allowed on {path}")));
        }
        let answered = review::answer(&identity, object_body(headers, body)?)?;
        return Ok(json_response(StatusCode::CREATED, &answered));
    }
    let target = parse_target(path).ok_or_else(|| {
        ApiServerError::NotFound(format!("the server could not find the requested resource ({path})"))
    })?;
    if let Some(sub) = &target.subresource
        && !(sub == "status" && target.res.has_status)
    {
        return Err(ApiServerError::NotFound(format!(
            "the server could not find the requested resource ({path})"
        )));
    }
    let dry_run = parse_dry_run(q.get("dryRun").map(String::as_str))?;
    let req = Req {
        app,
        identity,
        ns: target.namespace.clone().unwrap_or_default(),
        ctx: WriteContext {
            manager: manager_name(q, headers),
            subresource: target.subresource.clone(),
            dry_run,
        },
        target,
        q,
        headers,
        body,
    };
    match (method.clone(), req.target.name.clone()) {
        (Method::GET, None) => list_or_watch(&req),
        (Method::POST, None) => create(&req),
        (Method::DELETE, None) => delete_collection(&req),
        (Method::GET, Some(name)) => get(&req, &name),
        (Method::PUT, Some(name)) => replace(&req, &name),
        (Method::PATCH, Some(name)) => patch(&req, &name),
        (Method::DELETE, Some(name)) => delete(&req, &name),
        (m, _) => Err(ApiServerError::MethodNotAllowed(format!("{m} is not supported on {path}"))),
    }
}

/// One resource request, parsed and authenticated.
struct Req<'a> {
    app: &'a Arc<AppState>,
    identity: Identity,
    target: Target,
    /// Namespace from the path, empty when cluster-scoped or across namespaces.
    ns: String,
    ctx: WriteContext,
    q: &'a HashMap<String, String>,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

impl Req<'_> {
    fn store(&self) -> &Store {
        &self.app.store
    }

    fn res(&self) -> &ResourceDef {
        &self.target.res
    }

    fn selectors(&self) -> Result<Selectors, ApiServerError> {
        Selectors::parse(
            self.res(),
            self.q.get("labelSelector").map(String::as_str),
            self.q.get("fieldSelector").map(String::as_str),
        )
    }

    fn list_object(&self, items: Vec<Value>, metadata: Value) -> Value {
        json!({
            "kind": self.res().list_kind(),
            "apiVersion": self.res().api_version(),
            "metadata": metadata,
            "items": items,
        })
    }
}

fn list_or_watch(req: &Req<'_>) -> Result<Response, ApiServerError> {
    authorize(&req.identity, Verb::Read, req.res(), &req.ns, "", None)?;
    let selectors = req.selectors()?;
    if req.q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch_response(req.app, &req.target, req.q, req.headers, selectors);
    }
    let limit = req
        .q
        .get("limit")
        .map(|l| l.parse::<usize>())
        .transpose()
        .map_err(|_| ApiServerError::BadRequest("invalid limit".into()))?
        .unwrap_or(0);
    let page = req.store().list(
        req.res(),
        req.target.namespace.as_deref(),
        &selectors,
        limit,
        req.q.get("continue").map(String::as_str),
    )?;
    let mut meta = json!({"resourceVersion": page.rv.to_string()});
    if let Some(c) = &page.continue_token {
        meta["continue"] = json!(c);
        meta["remainingItemCount"] = json!(page.remaining);
    }
    if wants_table(req.headers) {
        return Ok(json_response(StatusCode::OK, &table::table(req.res(), &page.items, meta)));
    }
    Ok(json_response(StatusCode::OK, &req.list_object(page.items, meta)))
}

fn create(req: &Req<'_>) -> Result<Response, ApiServerError> {
    let res = req.res();
    if req.target.namespace.is_none() && res.namespaced {
        return Err(ApiServerError::MethodNotAllowed(format!(
            "create {} requires a namespace in the path",
            res.plural
        )));
    }
    let obj = object_body(req.headers, req.body)?;
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    authorize(&req.identity, Verb::Create, res, &req.ns, name, None)?;
    let created = req.store().create(res, &req.ns, obj, &req.ctx)?;
    Ok(json_response(StatusCode::CREATED, &created))
}

fn get(req: &Req<'_>, name: &str) -> Result<Response, ApiServerError> {
    authorize(&req.identity, Verb::Read, req.res(), &req.ns, name, None)?;
    let obj = req.store().get(req.res(), &req.ns, name)?;
    if wants_table(req.headers) {
        let meta = json!({"resourceVersion": req.store().current_rv().to_string()});
        return Ok(json_response(StatusCode::OK, &table::table(req.res(), std::slice::from_ref(&obj), meta)));
    }
    Ok(json_response(StatusCode::OK, &obj))
}

fn replace(req: &Req<'_>, name: &str) -> Result<Response, ApiServerError> {
    authorize(&req.identity, Verb::Update, req.res(), &req.ns, name, req.target.subresource.as_deref())?;
    let obj = object_body(req.headers, req.body)?;
    let updated = req.store().update(req.res(), &req.ns, name, obj, &req.ctx)?;
    Ok(json_response(StatusCode::OK, &updated))
}

fn patch(req: &Req<'_>, name: &str) -> Result<Response, ApiServerError> {
    authorize(&req.identity, Verb::Patch, req.res(), &req.ns, name, req.target.subresource.as_deref())?;
    let ct = req.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let kind = PatchKind::from_content_type(ct)?;
    if kind == PatchKind::Apply && req.q.get("fieldManager").is_none_or(|m| m.is_empty()) {
        return Err(ApiServerError::BadRequest(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
                .into(),
        ));
    }
    let force = req.q.get("force").is_some_and(|f| f == "true" || f == "1");
    if force && kind != PatchKind::Apply {
        return Err(ApiServerError::Invalid(
            "force: Forbidden: may not be specified for non-apply patch".into(),
        ));
    }
    let existed = req.store().get(req.res(), &req.ns, name).is_ok();
    let patched = req.store().patch(req.res(), &req.ns, name, kind, req.body, force, &req.ctx)?;
    let code = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok(json_response(code, &patched))
}

fn delete(req: &Req<'_>, name: &str) -> Result<Response, ApiServerError> {
    authorize(&req.identity, Verb::Delete, req.res(), &req.ns, name, None)?;
    if req.target.subresource.is_some() {
        return Err(ApiServerError::MethodNotAllowed("cannot delete a subresource".into()));
    }
    let options = DeleteOptions::parse(req)?;
    let deleted =
        req.store().delete(req.res(), &req.ns, name, options.precondition_rv.as_deref(), options.dry_run)?;
    Ok(json_response(StatusCode::OK, &deleted))
}

/// Whether a `dryRun` value asks for a server-side dry run: only `All` is a valid one.
fn parse_dry_run(value: Option<&str>) -> Result<bool, ApiServerError> {
    match value {
        None => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiServerError::BadRequest(format!(
            "dryRun: Unsupported value: {other:?}: supported values: \"All\""
        ))),
    }
}

/// What a delete's optional `DeleteOptions` body asks for (kubectl sends its dry run there).
struct DeleteOptions {
    /// `preconditions.resourceVersion`.
    precondition_rv: Option<String>,
    /// `dryRun: [All]` in the body or `dryRun=All` in the query.
    dry_run: bool,
}

impl DeleteOptions {
    fn parse(req: &Req<'_>) -> Result<Self, ApiServerError> {
        let body = serde_json::from_slice::<Value>(req.body).unwrap_or(Value::Null);
        let mut dry = req.ctx.dry_run;
        for value in body.get("dryRun").and_then(Value::as_array).into_iter().flatten() {
            dry |= parse_dry_run(Some(value.as_str().unwrap_or_default()))?;
        }
        let precondition_rv =
            body.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(str::to_string);
        Ok(Self { precondition_rv, dry_run: dry })
    }
}

fn delete_collection(req: &Req<'_>) -> Result<Response, ApiServerError> {
    authorize(&req.identity, Verb::Delete, req.res(), &req.ns, "", None)?;
    let dry_run = DeleteOptions::parse(req)?.dry_run;
    let selectors = req.selectors()?;
    let page = req.store().list(req.res(), req.target.namespace.as_deref(), &selectors, 0, None)?;
    let mut deleted = Vec::new();
    for obj in page.items {
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        match req.store().delete(req.res(), ns, name, None, dry_run) {
            Ok(d) => deleted.push(d),
            Err(ApiServerError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let meta = json!({"resourceVersion": req.store().current_rv().to_string()});
    Ok(json_response(StatusCode::OK, &req.list_object(deleted, meta)))
}

/// The object of a create or update body: JSON, YAML, or protobuf (which kubectl's `create`
/// commands send); 415 for any other media type.
fn object_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiServerError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    match ct.split(';').next().unwrap_or("").trim() {
        "application/json" | "application/yaml" | "" => parse_body(body),
        protobuf::MEDIA_TYPE => protobuf::decode(body),
        other => Err(ApiServerError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, {} (got {other:?})",
            protobuf::MEDIA_TYPE
        ))),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiServerError> {
    if body.is_empty() {
        return Err(ApiServerError::BadRequest("the request body is empty".into()));
    }
    let v: Value = serde_json::from_slice(body)
        .or_else(|_| yaml_serde::from_slice(body))
        .map_err(|e| ApiServerError::BadRequest(format!("cannot decode the object: {e}")))?;
    if !v.is_object() {
        return Err(ApiServerError::BadRequest("the object must be a JSON object".into()));
    }
    Ok(v)
}

fn watch_response(
    app: &Arc<AppState>,
    target: &Target,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    selectors: Selectors,
) -> Result<Response, ApiServerError> {
    let rv = q.get("resourceVersion").map(String::as_str).filter(|r| !r.is_empty());
    let send_initial = q.get("sendInitialEvents").is_some_and(|s| s == "true");
    let start = match rv {
        None | Some("0") => WatchStart::Snapshot,
        Some(rv) if send_initial => {
            // NotOlderThan: our snapshot is always at least as new as any RV we handed out.
            parse_rv(rv)?;
            WatchStart::Snapshot
        }
        Some(rv) => WatchStart::After(parse_rv(rv)?),
    };
    let timeout = q
        .get("timeoutSeconds")
        .map(|t| t.parse::<u64>())
        .transpose()
        .map_err(|_| ApiServerError::BadRequest("invalid timeoutSeconds".into()))?
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let req = WatchRequest {
        resource: target.res,
        namespace: target.namespace.clone(),
        selectors,
        start,
        initial_events_end: send_initial,
        bookmarks: q.get("allowWatchBookmarks").is_some_and(|b| b == "true"),
        bookmark_interval: app.bookmark_interval,
        timeout,
        as_table: wants_table(headers),
    };
    let stream = watch::start(app.store.clone(), req, app.shutdown.clone());
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}
