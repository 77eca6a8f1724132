//! YAML in, typed objects out, within fixed budgets.
//!
//! One parser for every input (serde-saphyr): it refuses duplicate keys and
//! stops deeply nested or alias-amplified documents early instead of spending
//! time and memory on them. Typed errors name the field by its path
//! (`spec.analysis.maxWeight`), say what was expected and what was found, and
//! for an unknown field suggest the closest known one.
use super::Issue;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;
use serde_saphyr::options::{DuplicateKeyPolicy, NonFiniteFloatPolicy};

/// Largest input file read by default (`fledge simulate --max-input-bytes`).
pub const DEFAULT_MAX_INPUT_BYTES: u64 = 4 * 1024 * 1024;
/// Deepest nesting accepted. A Deployment needs about a dozen levels; nothing
/// Fledge reads needs more than this.
pub const MAX_DEPTH: usize = 64;
/// Most aliases (`*name`) and anchors (`&name`) in one input, and the events
/// aliases may replay in total: enough for hand-written YAML, far too few for
/// an alias bomb.
pub const MAX_ALIASES: usize = 1_000;
pub const MAX_ALIAS_REPLAY_EVENTS: usize = 100_000;
/// Most nodes (scalars and collections) in one input.
pub const MAX_NODES: usize = 250_000;

/// The parser's settings for every input: YAML 1.2 booleans, duplicate keys
/// refused, and the budgets above. `keep_non_finite` passes `.nan`/`.inf` on as
/// numbers (scenario metric readings may be NaN); otherwise they arrive as the
/// strings `.nan`, `.inf`, `-.inf`, so a number field refuses them by name.
fn options(keep_non_finite: bool) -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_aliases: MAX_ALIASES,
            max_anchors: MAX_ALIASES,
            max_nodes: MAX_NODES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_ALIAS_REPLAY_EVENTS,
        },
        duplicate_keys: DuplicateKeyPolicy::Error,
        strict_booleans: true,
        with_snippet: false,
        non_finite_float_policy: if keep_non_finite {
            NonFiniteFloatPolicy::PassThrough
        } else {
            NonFiniteFloatPolicy::AsString
        },
    }
}

/// Every non-empty document of a (`---`-separated) YAML stream.
pub fn documents(text: &str) -> Result<Vec<Value>, Issue> {
    serde_saphyr::from_multiple_with_options::<Value>(text, options(false)).map_err(syntax)
}

/// One typed object from one document, with the field path in errors.
pub fn typed<T: DeserializeOwned>(doc: &Value) -> Result<T, Issue> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path: Vec<Segment> = e.path().iter().cloned().collect();
        describe(
            &path,
            Problem::from_message(&e.inner().to_string()),
            Some(doc),
        )
    })
}

/// One typed object from a single-document YAML text, read directly by the
/// parser (non-finite numbers kept as numbers).
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, Issue> {
    // The parser must see the error (it stops reading there); the path is kept aside.
    let mut path: Option<Vec<Segment>> = None;
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options(true), |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = Some(e.path().iter().cloned().collect());
            e.into_inner()
        })
    });
    let e = match result {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    match (path, Problem::from_parser(&e)) {
        (Some(path), Some(problem)) => {
            // Look the offending value up in the untyped document, to show it.
            let doc = serde_saphyr::from_str_with_options::<Value>(text, options(false)).ok();
            Err(describe(&path, problem, doc.as_ref()))
        }
        _ => Err(syntax(e)),
    }
}

/// What serde found wrong with a value, whichever deserializer reported it.
enum Problem {
    UnknownField {
        name: String,
        known: Vec<String>,
    },
    MissingField {
        name: String,
    },
    UnknownVariant {
        value: String,
        known: Vec<String>,
    },
    InvalidType {
        expected: String,
        found: String,
    },
    InvalidValue {
        expected: String,
        found: String,
    },
    /// A scalar the parser could not read as `ty` (`u32`, `f64`, `bool`, ...).
    InvalidScalar {
        ty: String,
    },
    NoVariantMatched,
    Other(String),
}

impl Problem {
    /// From the parser's structured error; `None` for YAML-level errors.
    fn from_parser(e: &serde_saphyr::Error) -> Option<Problem> {
        use serde_saphyr::Error as E;
        let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Some(match e.without_snippet() {
            E::SerdeUnknownField {
                field, expected, ..
            } => Problem::UnknownField {
                name: field.clone(),
                known: strs(expected),
            },
            E::SerdeMissingField { field, .. } => Problem::MissingField {
                name: field.to_string(),
            },
            E::SerdeUnknownVariant {
                variant, expected, ..
            } => Problem::UnknownVariant {
                value: variant.clone(),
                known: strs(expected),
            },
            E::SerdeInvalidType {
                unexpected,
                expected,
                ..
            } => Problem::InvalidType {
                expected: expected.clone(),
                found: unexpected.clone(),
            },
            E::SerdeInvalidValue {
                unexpected,
                expected,
                ..
            } => Problem::InvalidValue {
                expected: expected.clone(),
                found: unexpected.clone(),
            },
            E::InvalidScalar { ty, .. } => Problem::InvalidScalar { ty: ty.to_string() },
            E::Unexpected { expected, .. } => Problem::InvalidType {
                expected: if expected.contains("scalar") {
                    "a single value (a number or a string)".to_string()
                } else {
                    expected.to_string()
                },
                found: "another kind of value".to_string(),
            },
            E::Message { msg, .. } => Problem::from_message(msg),
            _ => return None,
        })
    }

    /// From serde's standard message text (as `serde_json` words it).
    fn from_message(msg: &str) -> Problem {
        let known_after = |rest: &str| {
            rest.split_once(", expected")
                .map(|(_, k)| backticked(k))
                .unwrap_or_default()
        };
        let first = |rest: &str| backticked(rest).into_iter().next().unwrap_or_default();
        let split = |rest: &str| match rest.rsplit_once(", expected ") {
            Some((found, expected)) => (expected.to_string(), found.to_string()),
            None => (String::new(), rest.to_string()),
        };
        if let Some(rest) = msg.strip_prefix("unknown field ") {
            Problem::UnknownField {
                name: first(rest),
                known: known_after(rest),
            }
        } else if let Some(rest) = msg.strip_prefix("missing field ") {
            Problem::MissingField { name: first(rest) }
        } else if let Some(rest) = msg.strip_prefix("unknown variant ") {
            Problem::UnknownVariant {
                value: first(rest),
                known: known_after(rest),
            }
        } else if let Some(rest) = msg.strip_prefix("invalid type: ") {
            let (expected, found) = split(rest);
            Problem::InvalidType { expected, found }
        } else if let Some(rest) = msg.strip_prefix("invalid value: ") {
            let (expected, found) = split(rest);
            Problem::InvalidValue { expected, found }
        } else if msg.starts_with("data did not match any variant") {
            Problem::NoVariantMatched
        } else {
            Problem::Other(msg.to_string())
        }
    }
}

/// A YAML-level error (syntax, duplicate key, budget): placed by line and column.
fn syntax(e: serde_saphyr::Error) -> Issue {
    let field = match e.location() {
        Some(l) if l.line() > 0 => format!("line {} column {}", l.line(), l.column()),
        _ => "YAML".to_string(),
    };
    if let serde_saphyr::Error::DuplicateMappingKey { key, .. } = e.without_snippet() {
        return Issue {
            field,
            problem: match key {
                Some(k) => format!("duplicate key `{k}`"),
                None => "duplicate key".to_string(),
            },
            fix: "each key may appear once in a mapping; remove or merge the repeated one"
                .to_string(),
        };
    }
    let msg = e.without_snippet().to_string();
    let msg = match msg.split_once(" at line ") {
        Some((m, _)) => m.to_string(),
        None => msg,
    };
    let too_deep = msg.contains("Depth {") || msg.contains("recursion limit");
    let fix_budget = too_deep
        || matches!(e.without_snippet(), serde_saphyr::Error::Budget { .. })
        || msg.contains("limit")
        || msg.contains("depth");
    let msg = if too_deep {
        format!("nested deeper than {MAX_DEPTH} levels")
    } else {
        msg
    };
    let fix = if fix_budget {
        format!(
            "Fledge reads YAML nested at most {MAX_DEPTH} levels deep, with at most {MAX_ALIASES} aliases and {MAX_NODES} nodes; simplify the input"
        )
    } else {
        "fix the YAML syntax".to_string()
    };
    Issue {
        field,
        problem: msg,
        fix,
    }
}

/// `spec.analysis.metrics[0].interval`.
pub fn path_string(path: &[Segment]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => out.push_str(".?"),
        }
    }
    if out.is_empty() {
        out.push_str("(top level)");
    }
    out
}

fn lookup<'a>(doc: &'a Value, path: &[Segment]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, s| match s {
        Segment::Seq { index } => v.get(*index),
        Segment::Map { key } | Segment::Enum { variant: key } => v.get(key.as_str()),
        Segment::Unknown => None,
    })
}

/// A value as a message shows it: scalars as written, collections by kind.
pub fn show(v: &Value) -> String {
    match v {
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a mapping".to_string(),
        Value::Null => "null".to_string(),
        Value::String(s) if s.chars().count() > 60 => {
            let head: String = s.chars().take(57).collect();
            format!("{:?}", format!("{head}..."))
        }
        other => other.to_string(),
    }
}

/// The names between backticks in `text`, in order.
pub fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Serde's name for an expected type, in words.
fn expected_words(what: &str) -> String {
    let what = what.trim();
    match what {
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" | "usize"
        | "isize" => "an integer".to_string(),
        "f32" | "f64" | "a JSON number" => "a number".to_string(),
        "a boolean" | "bool" => "true or false".to_string(),
        "a string" | "string" | "a borrowed string" => "a string".to_string(),
        "a sequence" => "a list".to_string(),
        "a map" => "a mapping".to_string(),
        _ if what.starts_with("struct ") || what.starts_with("a map") => "a mapping".to_string(),
        _ => what.to_string(),
    }
}

/// The range of an integer type, as a message states it.
fn integer_range(ty: &str) -> Option<String> {
    let (lo, hi): (i128, i128) = match ty.trim() {
        "u8" => (0, u8::MAX.into()),
        "u16" => (0, u16::MAX.into()),
        "u32" => (0, u32::MAX.into()),
        "u64" | "usize" => (0, u64::MAX.into()),
        "i32" => (i32::MIN.into(), i32::MAX.into()),
        "i64" | "isize" => (i64::MIN.into(), i64::MAX.into()),
        _ => return None,
    };
    Some(format!("{lo} to {hi}"))
}

const NON_FINITE: &[&str] = &[".nan", ".inf", "-.inf", "+.inf"];

/// Names the field at `path` and says what is wrong with it and the fix.
fn describe(path: &[Segment], problem: Problem, doc: Option<&Value>) -> Issue {
    let field = path_string(path);
    let shown = doc.and_then(|d| lookup(d, path)).map(show);
    let issue = |problem: String, fix: String| Issue {
        field: field.clone(),
        problem,
        fix,
    };
    match problem {
        Problem::UnknownField { name, known } => {
            let parent = path_string(&path[..path.len().saturating_sub(1)]);
            let at = |k: &str| {
                if path.len() > 1 {
                    format!("{parent}.{k}")
                } else {
                    k.to_string()
                }
            };
            let fix = match closest(&name, &known) {
                Some(k) => format!("did you mean {}?", at(k)),
                None if known.is_empty() => "this mapping has no fields; remove it".to_string(),
                None => format!("the fields here are {}", known.join(", ")),
            };
            issue("unknown field".to_string(), fix)
        }
        Problem::MissingField { name } => Issue {
            field: if path.is_empty() {
                name.clone()
            } else {
                format!("{field}.{name}")
            },
            problem: "missing".to_string(),
            fix: format!("set {name}"),
        },
        Problem::UnknownVariant { value, known } => {
            let known: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
            issue(
                format!("`{value}` is not accepted"),
                format!("use {}", or_list(&known)),
            )
        }
        Problem::InvalidType { expected, found } => {
            let words = expected_words(&expected);
            let got = shown.unwrap_or(found);
            if words == "a number" && NON_FINITE.contains(&got.trim_matches('"')) {
                return issue(
                    format!("{got} is not a finite number"),
                    "use a finite number; NaN and infinities are not accepted".to_string(),
                );
            }
            issue(
                format!("expected {words}, got {got}"),
                format!("write {words} here"),
            )
        }
        Problem::InvalidValue { expected, found } => {
            let got = shown.unwrap_or(found);
            match integer_range(&expected) {
                Some(range) => issue(
                    format!("{got} is out of range"),
                    format!("use an integer from {range}"),
                ),
                None => issue(format!("{got} is not valid"), format!("use {expected}")),
            }
        }
        Problem::InvalidScalar { ty } => {
            let got = shown.unwrap_or_else(|| "this value".to_string());
            let words = expected_words(&ty);
            match integer_range(&ty) {
                Some(range) if got.parse::<f64>().is_ok() => issue(
                    format!("{got} is out of range"),
                    format!("use an integer from {range}"),
                ),
                _ => issue(
                    format!("expected {words}, got {got}"),
                    format!("write {words} here"),
                ),
            }
        }
        Problem::NoVariantMatched => issue(
            format!(
                "{} is not one of the accepted forms",
                shown.unwrap_or_else(|| "this value".to_string())
            ),
            "see the documented forms of this field".to_string(),
        ),
        Problem::Other(msg) => issue(msg, "fix this field".to_string()),
    }
}

/// `a`, `a or b`, `a, b or c`.
pub fn or_list(items: &[String]) -> String {
    match items {
        [] => "an accepted value".to_string(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The known name closest to `name`, if it is close enough to be a likely
/// misspelling (or contains it, as `canaryAnalysis` contains `analysis`).
pub fn closest<'a>(name: &str, known: &'a [String]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    let best = known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), k))
        .min_by_key(|(d, _)| *d)?;
    let bound = (name.chars().count() / 3).max(2);
    if best.0 <= bound {
        return Some(best.1);
    }
    known
        .iter()
        .filter(|k| k.len() >= 4 && lower.contains(&k.to_ascii_lowercase()))
        .max_by_key(|k| k.len())
        .map(String::as_str)
}

/// Levenshtein distance (insertions, deletions, substitutions).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests;
