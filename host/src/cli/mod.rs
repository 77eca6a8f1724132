pub mod crds;
pub mod loadtester;
pub mod operator;
pub mod policy;
pub mod simulate;
pub mod version;
