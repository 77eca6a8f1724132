//! The revision of a target: a hash of its pod template and of the data of
//! the ConfigMaps and Secrets it uses. A change of either starts an analysis.
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Kubernetes' safe alphabet for generated names (no vowels, no look-alikes).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A short, stable revision id of `template` plus `configs`
/// (`"configmap/<name>"` / `"secret/<name>"` → checksum of the data).
pub fn revision(template: &serde_json::Value, configs: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    // serde_json writes object keys in sorted order (BTreeMap), so equal
    // templates hash equally whatever the order in the YAML.
    h.update(serde_json::to_vec(template).unwrap_or_default());
    for (k, v) in configs {
        h.update([0]);
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
    }
    encode(&h.finalize()[..8])
}

/// Checksum of a ConfigMap's or Secret's `data`, as tracked in `status.trackedConfigs`.
pub fn config_checksum(data: &serde_json::Value) -> String {
    let digest = Sha256::digest(serde_json::to_vec(data).unwrap_or_default());
    hex::encode(&digest[..8])
}

fn encode(bytes: &[u8]) -> String {
    let mut n = u64::from_be_bytes(bytes.try_into().unwrap_or([0; 8]));
    let mut out = String::with_capacity(10);
    for _ in 0..10 {
        out.push(ALPHABET[(n % ALPHABET.len() as u64) as usize] as char);
        n /= ALPHABET.len() as u64;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn template_and_config_changes_change_the_revision() {
        let t1 = json!({"spec": {"containers": [{"name": "podinfod", "image": "podinfo:6.0.0"}]}});
        let t2 = json!({"spec": {"containers": [{"name": "podinfod", "image": "podinfo:6.0.1"}]}});
        let none = BTreeMap::new();
        let mut cfg = BTreeMap::new();
        cfg.insert("configmap/podinfo-config".to_string(), "abc".to_string());
        assert_eq!(revision(&t1, &none), revision(&t1.clone(), &none));
        assert_ne!(revision(&t1, &none), revision(&t2, &none));
        assert_ne!(revision(&t1, &none), revision(&t1, &cfg));
        assert_eq!(revision(&t1, &none).len(), 10);
    }
}
