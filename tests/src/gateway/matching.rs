//! Which rule of which route a request goes to: matches and Gateway API precedence.

use super::{HttpRoute, PathMatch, RouteMatch, ValueMatch};
use crate::mesh::RequestClass;

impl ValueMatch {
    fn matches(&self, v: &str) -> bool {
        match self {
            ValueMatch::Exact(e) => v == e,
            ValueMatch::Regex(r) => r.is_match(v),
        }
    }
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(e) => path == e,
            // Element-wise: `/foo` matches `/foo`, `/foo/` and `/foo/bar`, not `/foobar`.
            PathMatch::Prefix(p) => {
                let p = p.trim_end_matches('/');
                p.is_empty()
                    || path == p
                    || (path.starts_with(p) && path[p.len()..].starts_with('/'))
            }
            PathMatch::Regex(r) => r.is_match(path),
        }
    }
}

impl RouteMatch {
    fn matches(&self, req: &RequestClass) -> bool {
        self.path.matches(&req.path)
            && self.method.as_deref().is_none_or(|m| m == req.method)
            && self.headers.iter().all(|(name, vm)| {
                req.headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .is_some_and(|(_, v)| vm.matches(v))
            })
            && self
                .query
                .iter()
                .all(|(name, vm)| req.query.get(name).is_some_and(|v| vm.matches(v)))
    }

    /// The spec's match precedence, largest first: Exact path, then (Envoy Gateway's choice for
    /// what the spec leaves to implementations) RegularExpression, then the longest prefix;
    /// then a method match, the number of header matches, the number of query matches.
    fn rank(&self) -> (u8, usize, bool, usize, usize) {
        let (kind, len) = match &self.path {
            PathMatch::Exact(p) => (2, p.len()),
            PathMatch::Regex(_) => (1, 0),
            PathMatch::Prefix(p) => (0, p.len()),
        };
        (
            kind,
            len,
            self.method.is_some(),
            self.headers.len(),
            self.query.len(),
        )
    }
}

impl HttpRoute {
    /// How well the request's host matches the route's hostnames: (characters of the matching
    /// non-wildcard hostname, characters of the matching hostname); `None` when none matches.
    /// A route without hostnames matches every host, least specifically.
    fn host_rank(&self, host: &str) -> Option<(usize, usize)> {
        if self.hostnames.is_empty() {
            return Some((0, 0));
        }
        let host = host.to_ascii_lowercase();
        self.hostnames
            .iter()
            .filter_map(|h| match h.strip_prefix('*') {
                // `*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com`.
                Some(suffix) => {
                    (host.ends_with(suffix) && host.len() > suffix.len()).then_some((0, h.len()))
                }
                None => (*h == host).then_some((h.len(), h.len())),
            })
            .max()
    }
}

/// The rule of `routes` a request goes to, by Gateway API precedence: hostname, then the
/// match's rank, then the oldest route, then `namespace/name`, then the first rule and match.
/// `None` is Envoy's 404.
pub fn select<'a>(routes: &[&'a HttpRoute], req: &RequestClass) -> Option<(&'a HttpRoute, usize)> {
    type Key = ((usize, usize), (u8, usize, bool, usize, usize));
    let mut best: Option<(Key, &HttpRoute, usize)> = None;
    for &route in routes {
        let Some(host) = route.host_rank(&req.host) else {
            continue;
        };
        for (ri, rule) in route.rules.iter().enumerate() {
            for m in rule.matches.iter().filter(|m| m.matches(req)) {
                let key = (host, m.rank());
                let better = match &best {
                    None => true,
                    Some((bk, br, _)) => {
                        key > *bk
                            || (key == *bk && (route.created, route.key()) < (br.created, br.key()))
                    }
                };
                if better {
                    best = Some((key, route, ri));
                }
            }
        }
    }
    best.map(|(_, r, i)| (r, i))
}
