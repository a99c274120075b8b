//! The Node store as the peer set reads it: each Node's view ([`SlimNode::view`]: its key
//! parsed and checked) is made once per change of the Node, keyed by
//! its resourceVersion, not once per pass: at 5,000 nodes that is the difference between
//! microseconds and tens of milliseconds for a pass caused by one Node's change. A pass shares
//! the views (`Arc`): neither a copy per pass nor freeing one. A Node written with nothing the view
//! reads changed (kubelet's status heartbeat) keeps the view it had.

use std::sync::Arc;

use foldhash::HashMap;
use meshcrypt_keyexchange::mesh::{NodeView, PodView};

use super::slim_node::SlimNode;

/// The views of the Nodes last seen, by name.
#[derive(Debug, Default)]
pub struct NodeViews {
    views: HashMap<String, Seen>,
    /// The number of the latest refresh.
    refresh: u64,
}

/// One Node's view, the resourceVersion it was made from, and the refresh that last listed it.
#[derive(Debug)]
struct Seen {
    version: Option<String>,
    view: Arc<NodeView>,
    listed: u64,
    /// The pod addresses it offers on its MeshPeer, as last made ([`NodeViews::offered_pods`]).
    offered: Option<Arc<PodView>>,
    /// Whether `offered` was made from this version of the Node.
    offered_current: bool,
}

impl NodeViews {
    /// The views of `nodes`, made afresh only for Nodes that changed since the last call (a
    /// Node without a resourceVersion always is); views of Nodes no longer listed are dropped.
    pub fn refresh(&mut self, nodes: &[Arc<SlimNode>]) -> Vec<Arc<NodeView>> {
        self.refresh += 1;
        let refresh = self.refresh;
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            let version = node.metadata.resource_version.as_deref();
            let seen = match self.views.get_mut(name) {
                Some(seen) if version.is_some() && seen.version.as_deref() == version => seen,
                kept => {
                    // A new version with the same view (a status heartbeat) keeps the view shared:
                    // the peer set sees the same `Arc` and judges nothing again.
                    let view = node.view();
                    let (view, offered) = match kept {
                        Some(seen) if *seen.view == view => (seen.view.clone(), seen.offered.take()),
                        Some(seen) => (Arc::new(view), seen.offered.take()),
                        None => (Arc::new(view), None),
                    };
                    let made = Seen {
                        version: version.map(str::to_owned),
                        view,
                        listed: refresh,
                        offered,
                        offered_current: false,
                    };
                    self.views.entry(name.to_owned()).insert_entry(made).into_mut()
                }
            };
            seen.listed = refresh;
            out.push(seen.view.clone());
        }
        self.views.retain(|_, seen| seen.listed == refresh);
        out
    }

    /// The pod addresses each of `nodes` offers on its MeshPeer (pod-IP mode with
    /// `--peer-source mesh-peers`), as one Pod of that node; made once per change of the Node,
    /// like its view, and kept when a new version of the Node offers the same, so a pass gets the
    /// same `Arc`s as the last unless a MeshPeer's addresses changed. Call after
    /// [`Self::refresh`] with the same list.
    pub fn offered_pods(&mut self, nodes: &[Arc<SlimNode>]) -> Vec<Arc<PodView>> {
        nodes
            .iter()
            .filter_map(|node| {
                let name = node.metadata.name.as_deref().unwrap_or_default();
                let Some(seen) = self.views.get_mut(name) else { return offered_pod(node).map(Arc::new) };
                if !seen.offered_current {
                    seen.offered = match (seen.offered.take(), offered_pod(node)) {
                        (Some(old), Some(made)) if *old == made => Some(old),
                        (_, made) => made.map(Arc::new),
                    };
                    seen.offered_current = true;
                }
                seen.offered.clone()
            })
            .collect()
    }
}

/// The pod addresses a node offers on its MeshPeer, as one Pod of that node (its name says where
/// it came from; an address claimed by two nodes stays with the older Node).
fn offered_pod(node: &SlimNode) -> Option<PodView> {
    let ips = super::mesh_peers::joined_pod_ips(node);
    let name = node.metadata.name.clone()?;
    (!ips.is_empty()).then(|| PodView {
        name: format!("MeshPeer {name}"),
        node: name,
        ips,
        created: node.metadata.creation_timestamp.as_ref().map(|t| t.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, version: Option<&str>, key: &str) -> Arc<SlimNode> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "resourceVersion": version,
                             "annotations": {"meshcrypt.dev/public-key": key}},
            }))
            .unwrap(),
        )
    }

    /// A view is made again exactly when the Node's resourceVersion moved (or it has none), and
    /// a Node that left takes its view with it. The key is the witness: a cached view keeps the
    /// parse of the annotation it was made from.
    #[test]
    fn views_are_made_again_only_for_nodes_that_changed() {
        let mut views = NodeViews::default();
        let first = views.refresh(&[node("a", Some("1"), "x"), node("b", None, "x")]);
        assert!(first.iter().all(|v| v.key.is_err()), "{first:?}");
        // Two annotations with different errors: which one a view holds tells where it came from.
        let low_order = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let cases = [
            ("same version: the cached view", Some("1"), false),
            ("a new version: made again", Some("2"), true),
        ];
        for (name, version, remade) in cases {
            let got = views.refresh(&[node("a", version, low_order), node("b", None, low_order)]);
            assert_eq!(
                got[0].key.as_ref().is_err_and(|e| !e.contains("low-order")),
                !remade,
                "{name}: {got:?}"
            );
            assert!(
                got[1].key.as_ref().is_err_and(|e| e.contains("low-order")),
                "{name}: no version, always made"
            );
        }
        // A new version that changes nothing the view reads keeps the very view.
        let before = views.refresh(&[node("a", Some("2"), low_order)]);
        let after = views.refresh(&[node("a", Some("3"), low_order)]);
        assert!(Arc::ptr_eq(&before[0], &after[0]), "a heartbeat's view is shared: {after:?}");
        let moved = views.refresh(&[node("a", Some("4"), "x")]);
        assert!(!Arc::ptr_eq(&after[0], &moved[0]), "a changed view is new: {moved:?}");
        views.refresh(&[node("b", None, "x")]);
        assert_eq!(views.views.len(), 1);
        let back = views.refresh(&[node("a", Some("2"), "x")]);
        let made_afresh = back[0].key.as_ref().is_err_and(|e| !e.contains("low-order"));
        assert!(made_afresh, "a Node that left and came back is made afresh: {back:?}");
    }

    fn offering(name: &str, version: &str, key: &str, ips: &str) -> Arc<SlimNode> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "resourceVersion": version,
                             "annotations": {"meshcrypt.dev/public-key": key,
                                             crate::agent::mesh_peers::JOINED_POD_IPS: ips}},
            }))
            .unwrap(),
        )
    }

    /// A MeshPeer's offered Pod is shared from pass to pass while its addresses stay the same,
    /// whatever else about the Node changed, and made again when they change: the peer set
    /// judges a node again only when a new `Arc` arrives.
    #[test]
    fn offered_pods_are_shared_until_their_addresses_change() {
        let mut views = NodeViews::default();
        let mut offered = |node: Arc<SlimNode>| {
            let listed = [node];
            views.refresh(&listed);
            views.offered_pods(&listed)
        };
        let first = offered(offering("a", "1", "x", "10.244.0.5,10.244.0.6"));
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(first[0].ips.len(), 2, "{first:?}");
        let cases = [
            ("the same version", offering("a", "1", "x", "10.244.0.5,10.244.0.6"), true),
            ("a heartbeat", offering("a", "2", "x", "10.244.0.5,10.244.0.6"), true),
            ("a new key, the same addresses", offering("a", "3", "y", "10.244.0.5,10.244.0.6"), true),
            ("an address gone", offering("a", "4", "y", "10.244.0.5"), false),
            ("the same again", offering("a", "5", "y", "10.244.0.5"), true),
        ];
        let mut last = first;
        for (name, node, shared) in cases {
            let got = offered(node);
            assert_eq!(Arc::ptr_eq(&last[0], &got[0]), shared, "{name}: {got:?}");
            last = got;
        }
        assert_eq!(last[0].ips, ["10.244.0.5".parse::<std::net::IpAddr>().unwrap()]);
        assert!(offered(offering("a", "6", "y", "")).is_empty(), "no address, no Pod");
    }
}
