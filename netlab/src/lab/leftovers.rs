//! Checks that a lab left nothing behind: namespaces with its prefix, processes, root-namespace links.

use std::path::Path;

use super::netns;

/// Named namespaces whose name starts with `prefix` (empty once a lab with that prefix is gone).
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    netns::list().into_iter().filter(|n| n.starts_with(prefix)).collect()
}

pub use super::processes::pid_alive;

/// Interfaces in the root namespace whose names the lab uses inside its namespaces (`br0`,
/// `node<N>`, `pod<N>`): the lab never creates any, so this lists what something else left there.
pub fn root_links_with_lab_names() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(Path::new("/sys/class/net")) else {
        return Vec::new();
    };
    let lab_like = |n: &str| {
        n == super::addressing::BRIDGE
            || ["node", "pod"].iter().any(|p| {
                n.strip_prefix(p).is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            })
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| lab_like(n))
        .collect()
}
