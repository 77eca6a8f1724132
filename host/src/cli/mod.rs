pub mod crds;
pub mod operator;
pub mod policy;
pub mod simulate;
