pub mod crds;
pub mod loadtester;
pub mod operator;
pub mod policy;
pub mod policy_file;
pub mod replay;
pub mod simulate;
pub mod version;
