//! The network lab: an underlay bridge, node namespaces and pod namespaces, removed on drop.
