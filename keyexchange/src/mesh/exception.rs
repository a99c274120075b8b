//! Nodes expected to run no meshcrypt agent: EKS Fargate, hybrid and Auto Mode nodes, and Windows
//! nodes. Their pods' traffic is not encrypted by meshcrypt; that is an exception the status and
//! audit views list, not a problem to warn about on every pass.

use std::collections::BTreeMap;
use std::fmt;

/// The label EKS sets on nodes that are not EC2 instances of a node group: `fargate` (each Fargate
/// pod is its own node, and Fargate runs no DaemonSets), `hybrid` (EKS Hybrid Nodes, on premises)
/// and `auto` (EKS Auto Mode). EKS's own add-on DaemonSets (VPC CNI, kube-proxy) are kept off
/// these nodes by node affinity on this label, and so is meshcrypt's (`deploy/base/daemonset.yaml`).
pub const COMPUTE_TYPE_LABEL: &str = "eks.amazonaws.com/compute-type";

/// The well-known label of a node's operating system (`linux`, `windows`), set by the kubelet.
/// meshcrypt's DaemonSet runs on `linux` nodes only.
pub const OS_LABEL: &str = "kubernetes.io/os";

/// Why a node is expected to have no agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NoAgentExpected {
    /// An EKS Fargate node (`eks.amazonaws.com/compute-type: fargate`).
    Fargate,
    /// An EKS Hybrid Node (`eks.amazonaws.com/compute-type: hybrid`).
    Hybrid,
    /// An EKS Auto Mode node (`eks.amazonaws.com/compute-type: auto`).
    AutoMode,
    /// A Windows node (`kubernetes.io/os: windows`): the agent runs on Linux only.
    Windows,
}

impl NoAgentExpected {
    /// The exception a Node's labels declare, if any.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<Self> {
        match labels.get(COMPUTE_TYPE_LABEL).map(String::as_str) {
            Some("fargate") => Some(Self::Fargate),
            Some("hybrid") => Some(Self::Hybrid),
            Some("auto") => Some(Self::AutoMode),
            _ if labels.get(OS_LABEL).is_some_and(|os| os == "windows") => Some(Self::Windows),
            _ => None,
        }
    }

    /// A stable, machine-readable name (status and audit output).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Fargate => "Fargate",
            Self::Hybrid => "HybridNode",
            Self::AutoMode => "AutoModeNode",
            Self::Windows => "WindowsNode",
        }
    }
}

impl fmt::Display for NoAgentExpected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fargate => "an EKS Fargate node: Fargate runs no DaemonSets; its pods' traffic is not encrypted by meshcrypt",
            Self::Hybrid => "an EKS Hybrid Node: meshcrypt's DaemonSet excludes hybrid nodes; their pods' traffic is not encrypted by meshcrypt",
            Self::AutoMode => "an EKS Auto Mode node: meshcrypt's DaemonSet excludes Auto Mode nodes; their pods' traffic is not encrypted by meshcrypt",
            Self::Windows => "a Windows node: meshcrypt's agent runs on Linux only; its pods' traffic is not encrypted by meshcrypt",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_labels_table() {
        for (value, want) in [
            (Some("fargate"), Some(NoAgentExpected::Fargate)),
            (Some("hybrid"), Some(NoAgentExpected::Hybrid)),
            (Some("auto"), Some(NoAgentExpected::AutoMode)),
            (Some("ec2"), None),
            (Some("Fargate"), None),
            (None, None),
        ] {
            let labels: BTreeMap<String, String> =
                value.map(|v| (COMPUTE_TYPE_LABEL.to_owned(), v.to_owned())).into_iter().collect();
            assert_eq!(NoAgentExpected::from_labels(&labels), want, "{value:?}");
        }
        let os = |os: &str| BTreeMap::from([(OS_LABEL.to_owned(), os.to_owned())]);
        assert_eq!(NoAgentExpected::from_labels(&os("windows")), Some(NoAgentExpected::Windows));
        assert_eq!(NoAgentExpected::from_labels(&os("linux")), None);
    }
}
