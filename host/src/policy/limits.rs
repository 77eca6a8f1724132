//! Per-decision store data: the memory cap and the policy's log lines. Lives in
//! a fresh `Store` for one decision and is dropped with it.
use super::bindings::LogLevel;
use crate::core::text::one_line_marked;

/// Bounds of what one decision may log through `fledge:policy/host.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Lines kept per decision; later lines are counted, not kept.
    pub max_lines: usize,
    /// Bytes kept per line (after control characters are escaped); longer
    /// lines are cut at a character boundary.
    pub max_line_bytes: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_lines: 32,
            max_line_bytes: 2048,
        }
    }
}

/// One line a policy logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

impl std::fmt::Display for LogLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.level {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        write!(f, "{level}: {}", self.message)
    }
}

/// The `Store` data of one decision.
pub struct PolicyState {
    pub memory: MemoryCap,
    limits: LogLimits,
    pub lines: Vec<LogLine>,
    /// Lines refused because `max_lines` was reached.
    pub dropped_lines: usize,
    /// What the `clock`, `config` and `metric-query` imports answer.
    pub step: StepData,
}

/// The facts of one step that a policy reads through host imports.
#[derive(Debug, Clone, Default)]
pub struct StepData {
    /// Unix seconds of the step.
    pub now: i64,
    /// The policy object's `spec.config`, shared by every decision.
    pub config: std::sync::Arc<std::collections::BTreeMap<String, String>>,
    /// Answers to the policy's range queries (empty before they ran).
    pub series: Vec<fledge_policy::Series>,
}

impl PolicyState {
    pub fn new(memory_limit: usize, limits: LogLimits) -> PolicyState {
        PolicyState {
            memory: MemoryCap {
                limit: memory_limit,
                exceeded: false,
            },
            limits,
            lines: Vec::new(),
            dropped_lines: 0,
            step: StepData::default(),
        }
    }

    /// Keeps one line the policy logged, as a single line free of control
    /// characters (it reaches the operator's log and the terminal), cut to
    /// `max_line_bytes`.
    pub fn record(&mut self, level: LogLevel, message: &str) {
        if self.lines.len() >= self.limits.max_lines {
            self.dropped_lines += 1;
            return;
        }
        let message = one_line_marked(message, self.limits.max_line_bytes, " [truncated]");
        self.lines.push(LogLine { level, message });
    }

    /// The log as text lines, with a note when lines were dropped.
    pub fn log_text(&self) -> Vec<String> {
        let mut text: Vec<String> = self.lines.iter().map(ToString::to_string).collect();
        if self.dropped_lines > 0 {
            text.push(format!(
                "({} more lines dropped: at most {} per decision)",
                self.dropped_lines, self.limits.max_lines
            ));
        }
        text
    }
}

/// Refuses linear-memory growth beyond the cap and remembers that it did, so
/// the resulting trap is reported as a memory limit, not a generic trap.
pub struct MemoryCap {
    limit: usize,
    pub exceeded: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = true;
            // Trap rather than fail the grow: a guest that handles the failure
            // would only retry or abort, and the trap says precisely why.
            wasmtime::bail!("memory cap of {} bytes exceeded", self.limit);
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // The pool's own maximum equals the cap; treat its refusal the same way.
        self.exceeded = true;
        Err(error)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|max| desired <= max))
    }
}

/// Counts decisions in flight so they never outnumber the instance pool's
/// slots: beyond it, a decision waits for a slot instead of failing (a
/// failed decision would count as a failed check). Every decision ends within
/// its deadline, so the wait is bounded.
pub struct Slots {
    state: std::sync::Mutex<SlotCount>,
    freed: std::sync::Condvar,
}

struct SlotCount {
    free: u32,
    /// Threads blocked in `acquire`; without any, a release skips the
    /// condvar (whose notify is a system call).
    waiting: u32,
}

impl Slots {
    pub fn new(count: u32) -> Slots {
        Slots {
            state: std::sync::Mutex::new(SlotCount {
                free: count,
                waiting: 0,
            }),
            freed: std::sync::Condvar::new(),
        }
    }

    pub fn acquire(&self) -> SlotGuard<'_> {
        // A poisoned lock only means a holder panicked; the count is still right.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.free == 0 {
            state.waiting += 1;
            while state.free == 0 {
                state = self.freed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            state.waiting -= 1;
        }
        state.free -= 1;
        SlotGuard { slots: self }
    }
}

/// Gives its slot back when dropped.
pub struct SlotGuard<'a> {
    slots: &'a Slots,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.slots.state.lock().unwrap_or_else(|p| p.into_inner());
        state.free += 1;
        if state.waiting > 0 {
            self.slots.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_is_bounded_in_lines_and_bytes() {
        let mut state = PolicyState::new(
            1 << 20,
            LogLimits {
                max_lines: 2,
                max_line_bytes: 5,
            },
        );
        state.record(LogLevel::Info, "héllo world");
        state.record(LogLevel::Error, "ok");
        state.record(LogLevel::Error, "dropped");
        assert_eq!(
            state.log_text(),
            vec![
                "info: héll [truncated]".to_string(),
                "error: ok".to_string(),
                "(1 more lines dropped: at most 2 per decision)".to_string(),
            ]
        );
    }

    #[test]
    fn logged_lines_are_single_lines_without_control_characters() {
        let mut state = PolicyState::new(1 << 20, LogLimits::default());
        state.record(
            LogLevel::Warn,
            "line one\nline two\u{1b}[2J\u{1b}]8;;https://x.example\u{7}link\u{202e}\0",
        );
        assert_eq!(
            state.lines[0].message,
            "line one line two\\u{1b}[2J\\u{1b}]8;;https://x.example\\u{7}link\\u{202e}\\u{0}"
        );
    }
}
