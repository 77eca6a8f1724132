//! The simulator shell.
