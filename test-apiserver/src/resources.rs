//! The resource types this server knows: their group, version, kind, plural name and scope.

/// One served resource type (for example Nodes or Leases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResourceDef {
    /// API group, empty for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Kind of the objects, e.g. `Node`.
    pub kind: &'static str,
    /// Plural resource name used in paths, e.g. `nodes`.
    pub plural: &'static str,
    /// Singular resource name.
    pub singular: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Whether the resource has a `status` subresource.
    pub has_status: bool,
}

impl ResourceDef {
    /// `apiVersion` as written in objects (`v1` or `group/version`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The list kind, e.g. `NodeList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Path prefix of this group/version: `/api/v1` or `/apis/GROUP/VERSION`.
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }
}

const VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// Verbs advertised for a resource in discovery: every verb for stored resources, `create` for
/// reviews.
pub fn verbs(res: &ResourceDef) -> &'static [&'static str] {
    if REVIEWS.contains(res) { &["create"] } else { VERBS }
}

/// Core Nodes.
pub const NODES: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    kind: "Node",
    plural: "nodes",
    singular: "node",
    namespaced: false,
    short_names: &["no"],
    has_status: true,
};

/// Core Pods.
pub const PODS: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    kind: "Pod",
    plural: "pods",
    singular: "pod",
    namespaced: true,
    short_names: &["po"],
    has_status: true,
};

/// Core ConfigMaps.
pub const CONFIG_MAPS: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    kind: "ConfigMap",
    plural: "configmaps",
    singular: "configmap",
    namespaced: true,
    short_names: &["cm"],
    has_status: false,
};

/// Core Events.
pub const EVENTS: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    namespaced: true,
    short_names: &["ev"],
    has_status: false,
};

/// Core Secrets.
pub const SECRETS: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    kind: "Secret",
    plural: "secrets",
    singular: "secret",
    namespaced: true,
    short_names: &[],
    has_status: false,
};

/// Core ServiceAccounts.
pub const SERVICE_ACCOUNTS: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    kind: "ServiceAccount",
    plural: "serviceaccounts",
    singular: "serviceaccount",
    namespaced: true,
    short_names: &["sa"],
    has_status: false,
};

/// Core Namespaces.
pub const NAMESPACES: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    kind: "Namespace",
    plural: "namespaces",
    singular: "namespace",
    namespaced: false,
    short_names: &["ns"],
    has_status: true,
};

/// events.k8s.io/v1 Events (stored separately from core Events).
pub const EVENTS_V1: ResourceDef = ResourceDef {
    group: "events.k8s.io",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    namespaced: true,
    short_names: &["ev"],
    has_status: false,
};

/// coordination.k8s.io/v1 Leases.
pub const LEASES: ResourceDef = ResourceDef {
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    plural: "leases",
    singular: "lease",
    namespaced: true,
    short_names: &[],
    has_status: false,
};

/// meshcrypt.dev/v1alpha1 RemoteClusters (meshcrypt's own resource: a peer cluster's nodes).
pub const REMOTE_CLUSTERS: ResourceDef = ResourceDef {
    group: "meshcrypt.dev",
    version: "v1alpha1",
    kind: "RemoteCluster",
    plural: "remoteclusters",
    singular: "remotecluster",
    namespaced: false,
    short_names: &[],
    has_status: true,
};

/// meshcrypt.dev/v1alpha1 MeshNodes (meshcrypt's own resource: one per node, named after it, the
/// state its agent reports for `meshcrypt status --cluster`).
pub const MESH_NODES: ResourceDef = ResourceDef {
    group: "meshcrypt.dev",
    version: "v1alpha1",
    kind: "MeshNode",
    plural: "meshnodes",
    singular: "meshnode",
    namespaced: false,
    short_names: &[],
    has_status: true,
};

/// meshcrypt.dev/v1alpha1 MeshPeers (meshcrypt's own resource: one per node, named after it and
/// owned by it, what its agent offers the mesh; the agents watch them instead of the Nodes).
pub const MESH_PEERS: ResourceDef = ResourceDef {
    group: "meshcrypt.dev",
    version: "v1alpha1",
    kind: "MeshPeer",
    plural: "meshpeers",
    singular: "meshpeer",
    namespaced: false,
    short_names: &[],
    has_status: false,
};

/// Every served resource.
pub const ALL: &[ResourceDef] = &[
    NODES,
    PODS,
    CONFIG_MAPS,
    SECRETS,
    SERVICE_ACCOUNTS,
    EVENTS,
    NAMESPACES,
    EVENTS_V1,
    LEASES,
    REMOTE_CLUSTERS,
    MESH_NODES,
    MESH_PEERS,
];

/// authorization.k8s.io/v1 SelfSubjectAccessReviews (`kubectl auth can-i`).
pub const SELF_SUBJECT_ACCESS_REVIEWS: ResourceDef = ResourceDef {
    group: "authorization.k8s.io",
    version: "v1",
    kind: "SelfSubjectAccessReview",
    plural: "selfsubjectaccessreviews",
    singular: "selfsubjectaccessreview",
    namespaced: false,
    short_names: &[],
    has_status: false,
};

/// Resources that are only created: answered at once, never stored (not in [`ALL`]).
pub const REVIEWS: &[ResourceDef] = &[SELF_SUBJECT_ACCESS_REVIEWS];

/// The served resource for a group, version and plural name.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<ResourceDef> {
    ALL.iter().find(|r| r.group == group && r.version == version && r.plural == plural).copied()
}

/// The served resource for an `apiVersion` and kind as written in an object.
pub fn lookup_kind(api_version: &str, kind: &str) -> Option<ResourceDef> {
    ALL.iter().find(|r| r.api_version() == api_version && r.kind == kind).copied()
}

/// The group/versions served, in discovery order, excluding the core group.
pub fn api_groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in ALL.iter().chain(REVIEWS) {
        if !r.group.is_empty() && !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}
