//! Manual gates, in memory, as flagger-loadtester keeps them: one per Canary
//! (`<name>.<namespace>`) for the confirm hooks, one for rollback
//! (`rollback.<name>.<namespace>`); every gate starts closed.
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct Gates {
    open: Mutex<HashMap<String, bool>>,
}

pub fn gate_key(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}")
}

pub fn rollback_key(name: &str, namespace: &str) -> String {
    format!("rollback.{name}.{namespace}")
}

impl Gates {
    pub fn open(&self, key: String) {
        self.set(key, true);
    }
    pub fn close(&self, key: String) {
        self.set(key, false);
    }
    /// A gate never opened or closed is closed.
    pub fn is_open(&self, key: &str) -> bool {
        self.open
            .lock()
            .map(|m| m.get(key).copied().unwrap_or(false))
            .unwrap_or(false)
    }
    fn set(&self, key: String, open: bool) {
        if let Ok(mut m) = self.open.lock() {
            m.insert(key, open);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_start_closed_and_keep_their_last_state() {
        let g = Gates::default();
        let k = gate_key("podinfo", "test");
        assert!(!g.is_open(&k));
        g.open(k.clone());
        assert!(g.is_open(&k));
        assert!(
            !g.is_open(&rollback_key("podinfo", "test")),
            "a separate gate"
        );
        assert!(!g.is_open(&gate_key("podinfo", "other")));
        g.close(k.clone());
        assert!(!g.is_open(&k));
    }
}
