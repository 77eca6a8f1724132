//! The environment variables the cloud credential chains read, captured
//! once: the process's in the operator, an explicit map in tests (so tests
//! never race on process-global variables).
use std::collections::BTreeMap;

#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Env(BTreeMap<String, String>);

/// Names only: values hold secret keys.
impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Env {
    /// The process environment, as it is now.
    pub fn process() -> Env {
        Env(std::env::vars().collect())
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env(pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect())
    }

    /// A variable's value; an empty one counts as unset, as in the SDKs.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// A boolean variable (`true`, case-insensitive).
    pub fn is_true(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }
}
