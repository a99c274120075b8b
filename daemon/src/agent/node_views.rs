//! The Node store as the peer set reads it: each Node's view ([`SlimNode::view`]: its key
//! parsed and checked) is made once per change of the Node, keyed by
//! its resourceVersion, not once per pass: at 5,000 nodes that is the difference between
//! microseconds and tens of milliseconds for a pass caused by one Node's change. A pass shares
//! the views (`Arc`): neither a copy per pass nor freeing one.

use std::sync::Arc;

use foldhash::HashMap;
use meshcrypt_keyexchange::mesh::NodeView;

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
                _ => {
                    let made = Seen {
                        version: version.map(str::to_owned),
                        view: Arc::new(node.view()),
                        listed: refresh,
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
        views.refresh(&[node("b", None, "x")]);
        assert_eq!(views.views.len(), 1);
        let back = views.refresh(&[node("a", Some("2"), "x")]);
        let made_afresh = back[0].key.as_ref().is_err_and(|e| !e.contains("low-order"));
        assert!(made_afresh, "a Node that left and came back is made afresh: {back:?}");
    }
}
