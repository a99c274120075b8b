//! What the detector treats as a pod address, an underlay host, the mesh port and the API server.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::lab::Lab;

/// The detector's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeakConfig {
    /// Pod address ranges: any packet with a source or destination in them, at any layer the
    /// detector can read, is a plaintext pod packet.
    pub pod_cidrs: Vec<IpNet>,
    /// Underlay host ranges: a packet whose outer source and destination both lie in them is node
    /// traffic, and must be either mesh traffic or API-server traffic.
    pub underlay_cidrs: Vec<IpNet>,
    /// The mesh's UDP port (WireGuard), allowed between underlay hosts.
    pub mesh_port: u16,
    /// The API servers' endpoints (one per lab cluster): TCP to or from them is allowed between
    /// underlay hosts.
    pub api_endpoints: Vec<SocketAddr>,
    /// How many distinct sample packets a report keeps.
    pub max_samples: usize,
}

impl LeakConfig {
    /// WireGuard's default port.
    pub const DEFAULT_MESH_PORT: u16 = 51820;
    /// The default number of distinct samples kept.
    pub const DEFAULT_MAX_SAMPLES: usize = 32;

    /// A configuration with the default mesh port, no API endpoints and the default sample bound.
    pub fn new(pod_cidrs: Vec<IpNet>, underlay_cidrs: Vec<IpNet>) -> Self {
        LeakConfig {
            pod_cidrs,
            underlay_cidrs,
            mesh_port: Self::DEFAULT_MESH_PORT,
            api_endpoints: Vec::new(),
            max_samples: Self::DEFAULT_MAX_SAMPLES,
        }
    }

    /// The lab's ranges: pods `10.244.0.0/16` (and `fd00:10:244::/56`), underlay `198.18.0.0/15`
    /// (and `fd00:198:18::/64`). The services address is an underlay host too, so traffic to it
    /// is allowed only on the configured API endpoint.
    pub fn for_lab(lab: &Lab) -> Self {
        let v6 = |s: &str| s.parse::<IpNet>().expect("constant prefix");
        Self::new(
            vec![lab.cluster_pod_cidr(), v6("fd00:10:244::/56")],
            vec![lab.underlay_cidr(), v6("fd00:198:18::/64")],
        )
    }

    /// Sets the mesh UDP port.
    pub fn with_mesh_port(mut self, port: u16) -> Self {
        self.mesh_port = port;
        self
    }

    /// Adds an API server endpoint.
    pub fn with_api_endpoint(mut self, endpoint: SocketAddr) -> Self {
        self.api_endpoints.push(endpoint);
        self
    }

    /// Sets how many distinct samples a report keeps.
    pub fn with_max_samples(mut self, n: usize) -> Self {
        self.max_samples = n;
        self
    }

    /// True if `ip` is a pod address.
    pub fn is_pod(&self, ip: IpAddr) -> bool {
        self.pod_cidrs.iter().any(|c| c.contains(&ip))
    }

    /// True if `ip` is an underlay host address.
    pub fn is_underlay(&self, ip: IpAddr) -> bool {
        self.underlay_cidrs.iter().any(|c| c.contains(&ip))
    }
}
