//! Local end-to-end test world for Fledge: a real Kubernetes control plane with kwok nodes
//! ([`cluster`]), App Mesh CRD fixtures, Prometheus, and a mesh traffic simulator ([`mesh`]) that
//! exports Envoy-style metrics for the pods behind App Mesh virtual nodes, and a podinfo
//! stand-in ([`podinfo`]) for load tests. The same simulator plays a Gateway API controller
//! ([`gateway`]): HTTPRoute statuses, routing, and Envoy Gateway's and the backends' metrics.
//! Both write Prometheus' text format through [`exposition`].

pub mod cluster;
pub mod exposition;
pub mod gateway;
pub mod http;
pub mod mesh;
pub mod pki;
pub mod podinfo;
pub mod prometheus;

pub use cluster::{Cluster, ClusterOptions};
