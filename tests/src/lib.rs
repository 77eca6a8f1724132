//! Local end-to-end test world for Fledge: a real Kubernetes control plane with kwok nodes
//! ([`cluster`]), App Mesh CRD fixtures, Prometheus, and a mesh traffic simulator ([`mesh`]) that
//! exports Envoy-style metrics for the pods behind App Mesh virtual nodes.

pub mod cluster;
pub mod http;
pub mod mesh;
pub mod pki;
pub mod prometheus;

pub use cluster::{Cluster, ClusterOptions};
