//! Bearer-token authentication and the small authorization policy the tests need: an admin may
//! do anything; a reader (an auditor) may only read; a node may read anything, create (and patch,
//! as kube-runtime's event Recorder does) Events, and otherwise modify only its own Node and its
//! own MeshNode and MeshPeer.

use std::collections::HashMap;
use std::sync::RwLock;

use super::error::ApiServerError;
use super::resources::ResourceDef;

/// The extra attribute naming the node a node token belongs to.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// The user name every node token authenticates as (the agent's ServiceAccount).
pub const NODE_USER: &str = "system:serviceaccount:meshcrypt:meshcrypt";

/// The user name every reader token authenticates as.
pub const READER_USER: &str = "auditor";

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// May do anything.
    Admin,
    /// May get, list and watch anything, and change nothing (user `READER_USER`).
    Reader,
    /// The agent on this node (user `NODE_USER`, extra `NODE_NAME_EXTRA: node`).
    Node(String),
}

impl Identity {
    /// The authenticated user name.
    pub fn user(&self) -> &str {
        match self {
            Self::Admin => "admin",
            Self::Reader => READER_USER,
            Self::Node(_) => NODE_USER,
        }
    }
}

/// Token → identity, changeable while serving.
#[derive(Debug, Default, Clone)]
pub struct Tokens(std::sync::Arc<RwLock<HashMap<String, Identity>>>);

impl Tokens {
    /// Adds (or replaces) a token.
    pub fn insert(&self, token: String, identity: Identity) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).insert(token, identity);
    }

    /// The identity of an `Authorization` header value, or 401.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Identity, ApiServerError> {
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiServerError::Unauthorized)?;
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
            .ok_or(ApiServerError::Unauthorized)
    }
}

/// A request verb in Kubernetes' terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// get, list or watch.
    Read,
    /// create.
    Create,
    /// update (PUT).
    Update,
    /// patch.
    Patch,
    /// delete.
    Delete,
}

impl Verb {
    /// The verb a Kubernetes verb name stands for (`get`, `list`, `watch`, `create`, `update`,
    /// `patch`, `delete`, `deletecollection`); `None` for any other (`*`, `use`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "get" | "list" | "watch" => Self::Read,
            "create" => Self::Create,
            "update" => Self::Update,
            "patch" => Self::Patch,
            "delete" | "deletecollection" => Self::Delete,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Read => "get",
            Self::Create => "create",
            Self::Update => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
        }
    }
}

/// Whether `identity` may do `verb` on the named object (403 Forbidden if not).
pub fn authorize(
    identity: &Identity,
    verb: Verb,
    res: &ResourceDef,
    ns: &str,
    name: &str,
    subresource: Option<&str>,
) -> Result<(), ApiServerError> {
    let why = match identity {
        Identity::Admin => return Ok(()),
        Identity::Reader if verb == Verb::Read => return Ok(()),
        Identity::Reader => "a reader may only get, list and watch".to_owned(),
        Identity::Node(node) if node_may(node, verb, res.plural, name) => return Ok(()),
        Identity::Node(node) => {
            format!("node {node} may modify only its own Node (and MeshNode and MeshPeer)")
        }
    };
    let resource = match subresource {
        Some(s) => format!("{}/{s}", res.plural),
        None => res.plural.to_string(),
    };
    let scope = if res.namespaced {
        format!("in the namespace \"{ns}\"")
    } else {
        "at the cluster scope".to_string()
    };
    let what = if res.group.is_empty() {
        format!("{} \"{name}\"", res.plural)
    } else {
        format!("{}.{} \"{name}\"", res.plural, res.group)
    };
    Err(ApiServerError::Forbidden(format!(
        "{what} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}: {why}",
        identity.user(),
        verb.as_str(),
        res.group
    )))
}

/// Whether `identity` may do the Kubernetes verb `verb` (any verb name) on the object `name` of
/// the resource `plural` in any group, as a SelfSubjectAccessReview asks; a non-resource request
/// (a path such as `/healthz`) has an empty `plural`.
pub fn may(identity: &Identity, verb: &str, plural: &str, name: &str) -> bool {
    match identity {
        Identity::Admin => true,
        Identity::Reader => Verb::from_name(verb) == Some(Verb::Read),
        Identity::Node(node) => Verb::from_name(verb).is_some_and(|v| node_may(node, v, plural, name)),
    }
}

/// The policy for a node token: what the agent on `node` may do to the object `name` of `plural`.
fn node_may(node: &str, verb: Verb, plural: &str, name: &str) -> bool {
    match verb {
        Verb::Read => true,
        // kube-runtime's event Recorder creates Events and patches them when they repeat.
        Verb::Create | Verb::Patch | Verb::Update if plural == "events" => true,
        // Its own node's MeshNode and MeshPeer, as RBAC and meshcrypt's admission policy allow an
        // agent.
        Verb::Create | Verb::Patch | Verb::Update if plural == "meshnodes" || plural == "meshpeers" => {
            name == node
        }
        Verb::Create => false,
        Verb::Update | Verb::Patch | Verb::Delete => plural == "nodes" && name == node,
    }
}
