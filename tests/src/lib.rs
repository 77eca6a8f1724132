//! Local end-to-end test world for Fledge.
