//! A stateful test Kubernetes API server over real HTTP, faithful to what kube-rs and kubectl need.
