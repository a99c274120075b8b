//! The simulated part of a scale run: Node and Pod objects of the cluster's other nodes, shaped
//! like EKS's (labels, conditions, an image list; a Deployment's Pod), with addresses inside the
//! lab's ranges that no packet is ever sent to.
//!
//! | what | where |
//! |---|---|
//! | simulated node *i*'s InternalIP | `198.19.0.0/16` (inside the underlay's `198.18.0.0/15`; every real node has `unreachable 198.19.0.0/16`, so a handshake to it fails at once, locally) |
//! | its `spec.podCIDR` | the `/30` at `10.244.128.0 + 4·i` (`10.244.128.0/17`, 8,192 of them) |
//! | its pods' addresses (pod-IP mode) | `fd00:10:244:ff::/64` + `i·2¹⁶ + 2·j + 1`: odd, so no two aggregate and each pod is one route |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use jiff::Timestamp;
use meshcrypt_keyexchange::{NodeKeyAnnotations, PrivateKey};
use serde_json::{Value, json};

/// The range simulated nodes' InternalIPs come from; real nodes route it to `unreachable`.
pub const SIM_UNDERLAY: &str = "198.19.0.0/16";
/// The IPv6 range simulated pods' addresses come from (inside the lab's `fd00:10:244::/56`).
pub const SIM_POD_RANGE6: &str = "fd00:10:244:ff::/64";
/// The most simulated nodes the address plan holds (the `/30`s of `10.244.128.0/17`).
pub const MAX_SIM_NODES: usize = 8_192;
/// The most pods per simulated node the address plan holds.
pub const MAX_PODS_PER_NODE: usize = 32_768;

/// Simulated node `i`'s name.
pub fn node_name(i: usize) -> String {
    format!("sim-{i:05}")
}

/// Simulated node `i`'s InternalIP (`198.19.0.0/16`, skipping `.0`).
pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 1)) + u32::try_from(i).expect("node index"))
}

/// Simulated node `i`'s pod CIDR: a `/30` of `10.244.128.0/17`.
pub fn pod_cidr(i: usize) -> IpNet {
    let base = u32::from(Ipv4Addr::new(10, 244, 128, 0)) + 4 * u32::try_from(i).expect("node index");
    IpNet::new(IpAddr::V4(Ipv4Addr::from(base)), 30).expect("prefix length")
}

/// Pod `j` of simulated node `i`: its address (odd offsets: never adjacent to another's).
pub fn pod_ip(i: usize, j: usize) -> Ipv6Addr {
    let base = u128::from("fd00:10:244:ff::".parse::<Ipv6Addr>().expect("address"));
    Ipv6Addr::from(base + ((i as u128) << 16) + 2 * j as u128 + 1)
}

/// Pod `j` of simulated node `i`: its name.
pub fn pod_name(i: usize, j: usize) -> String {
    format!("sim-{i:05}-{j:05}")
}

/// The key annotations of a fresh key (its private half is dropped: nobody answers for it).
pub fn key_annotations(epoch: u64, now: Timestamp) -> NodeKeyAnnotations {
    NodeKeyAnnotations { public_key: PrivateKey::generate().public_key(), epoch, created: now }
}

/// Simulated node `i` as an EKS managed node group's Node (about 8 KB of JSON, half of it the
/// image list kubelet reports), carrying `key`.
pub fn node_object(i: usize, key: &NodeKeyAnnotations, heartbeat: Timestamp) -> Value {
    let name = node_name(i);
    let images: Vec<Value> = (0..40)
        .map(|k| {
            json!({
                "names": [
                    format!("602401143452.dkr.ecr.us-east-1.amazonaws.com/team-{k}/service@sha256:{k:064x}"),
                    format!("602401143452.dkr.ecr.us-east-1.amazonaws.com/team-{k}/service:v1.{k}.0"),
                ],
                "sizeBytes": 50_000_000 + k * 1_000_000,
            })
        })
        .collect();
    let condition = |kind: &str, status: &str, reason: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": format!("kubelet reports {reason}"),
               "lastHeartbeatTime": heartbeat.to_string(), "lastTransitionTime": "2026-11-01T00:00:00Z"})
    };
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "m6i.2xlarge", "topology.kubernetes.io/region": "us-east-1",
                "topology.kubernetes.io/zone": format!("us-east-1{}", ["a", "b", "c"][i % 3]),
                "eks.amazonaws.com/nodegroup": format!("ng-{}", i % 20), "eks.amazonaws.com/capacityType": "ON_DEMAND",
                "eks.amazonaws.com/nodegroup-image": "ami-0123456789abcdef0",
            },
            "annotations": key.to_annotations(),
        },
        "spec": {"podCIDR": pod_cidr(i).to_string(), "podCIDRs": [pod_cidr(i).to_string()],
                 "providerID": format!("aws:///us-east-1a/i-{i:017x}")},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": node_ip(i).to_string()},
                {"type": "Hostname", "address": name},
                {"type": "InternalDNS", "address": format!("ip-{}.ec2.internal", node_ip(i).to_string().replace('.', "-"))},
            ],
            "capacity": {"cpu": "8", "memory": "32386756Ki", "pods": "58", "ephemeral-storage": "83873772Ki"},
            "allocatable": {"cpu": "7910m", "memory": "31369924Ki", "pods": "58", "ephemeral-storage": "76224326324"},
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
                condition("Ready", "True", "KubeletReady"),
            ],
            "nodeInfo": {"kubeletVersion": "v1.33.5-eks-113cf36", "containerRuntimeVersion": "containerd://1.7.27",
                         "kernelVersion": "6.1.141-155.222.amzn2023.x86_64", "osImage": "Amazon Linux 2023.8.20250715",
                         "operatingSystem": "linux", "architecture": "amd64", "machineID": format!("{i:032x}"),
                         "systemUUID": format!("ec2{i:029x}"), "bootID": format!("{i:032x}")},
            "images": images,
        },
    })
}

/// Simulated node `i`'s MeshPeer, as its agent would write it: `key`, its address and pod CIDR
/// and (pod-IP mode) the addresses of its pods `pods`, owned by its Node (`owner_uid`), so it goes
/// with the Node.
pub fn mesh_peer_object(i: usize, key: &NodeKeyAnnotations, owner_uid: &str, pods: &[usize]) -> Value {
    let name = node_name(i);
    json!({
        "apiVersion": "meshcrypt.dev/v1alpha1",
        "kind": "MeshPeer",
        "metadata": {
            "name": name,
            "annotations": key.to_annotations(),
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": owner_uid}],
        },
        "spec": {"internalIPs": [node_ip(i).to_string()], "podCIDRs": [pod_cidr(i).to_string()],
                 "podIPs": offered_pod_ips(i, pods)},
    })
}

/// The addresses of node `i`'s pods `pods` as its agent offers them: sorted, as text.
pub fn offered_pod_ips(i: usize, pods: &[usize]) -> Vec<String> {
    let ips: std::collections::BTreeSet<Ipv6Addr> = pods.iter().map(|j| pod_ip(i, *j)).collect();
    ips.iter().map(ToString::to_string).collect()
}

/// The status patch kubelet sends every `nodeStatusReportFrequency` (5 min) with nothing else
/// changed: every condition's heartbeat moves.
pub fn heartbeat_patch(heartbeat: Timestamp) -> Value {
    let condition = |kind: &str, status: &str, reason: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": format!("kubelet reports {reason}"),
               "lastHeartbeatTime": heartbeat.to_string(), "lastTransitionTime": "2026-11-01T00:00:00Z"})
    };
    json!({"status": {"conditions": [
        condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
        condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
        condition("PIDPressure", "False", "KubeletHasSufficientPID"),
        condition("Ready", "True", "KubeletReady"),
    ]}})
}

/// Pod `j` of simulated node `i` as a Deployment's running Pod on EKS (about 3 KB of JSON).
pub fn pod_object(i: usize, j: usize) -> Value {
    let name = pod_name(i, j);
    let ip = pod_ip(i, j).to_string();
    let app = format!("svc-{}", j % 50);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "default",
            "labels": {"app": app, "pod-template-hash": "5d8f9c7b6d", "team": format!("team-{}", j % 7)},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-5d8f9c7b6d"),
                                 "uid": "0b7e1c6a-3f3c-4d8e-9a3c-1b2c3d4e5f60", "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": {
            "nodeName": node_name(i),
            "serviceAccountName": app,
            "containers": [{
                "name": "app", "image": format!("602401143452.dkr.ecr.us-east-1.amazonaws.com/{app}:v1.2.3"),
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "REGION", "value": "us-east-1"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 10},
                "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
            }],
            "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ],
        },
        "status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": node_ip(i).to_string(),
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-11-30T10:00:00Z"},
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-30T10:00:05Z"},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-11-30T10:00:05Z"},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-30T10:00:00Z"},
            ],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "started": true,
                                   "image": format!("602401143452.dkr.ecr.us-east-1.amazonaws.com/{app}:v1.2.3"),
                                   "imageID": format!("602401143452.dkr.ecr.us-east-1.amazonaws.com/{app}@sha256:{j:064x}"),
                                   "containerID": format!("containerd://{i:032x}{j:032x}"),
                                   "state": {"running": {"startedAt": "2026-11-30T10:00:03Z"}}}],
            "qosClass": "Burstable", "startTime": "2026-11-30T10:00:00Z",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_plan_stays_inside_the_lab_ranges_and_never_collides() {
        let underlay: IpNet = SIM_UNDERLAY.parse().unwrap();
        let pods: IpNet = "10.244.128.0/17".parse().unwrap();
        let pods6: IpNet = SIM_POD_RANGE6.parse().unwrap();
        let last = MAX_SIM_NODES - 1;
        for i in [0, 1, 4_999, last] {
            assert!(underlay.contains(&IpAddr::V4(node_ip(i))), "{i}");
            assert!(pods.contains(&pod_cidr(i)), "{i}");
            assert!(pods6.contains(&IpAddr::V6(pod_ip(i, MAX_PODS_PER_NODE - 1))), "{i}");
        }
        assert_ne!(pod_cidr(0), pod_cidr(1));
        assert!(!pod_cidr(0).contains(&pod_cidr(1)));
        assert_ne!(pod_ip(0, MAX_PODS_PER_NODE - 1), pod_ip(1, 0));
        // Odd offsets: two pods never make one aggregate prefix.
        assert_eq!(u128::from(pod_ip(3, 1)) - u128::from(pod_ip(3, 0)), 2);
        assert_eq!(u128::from(pod_ip(3, 0)) % 2, 1);
    }

    #[test]
    fn objects_are_the_size_of_eks_ones() {
        let key = key_annotations(1, Timestamp::UNIX_EPOCH);
        let node = serde_json::to_vec(&node_object(7, &key, Timestamp::UNIX_EPOCH)).unwrap().len();
        let pod = serde_json::to_vec(&pod_object(7, 3)).unwrap().len();
        assert!((6_000..16_000).contains(&node), "{node} bytes");
        assert!((2_000..6_000).contains(&pod), "{pod} bytes");
    }
}
