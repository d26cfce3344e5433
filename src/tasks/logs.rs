//! A task's log: what its handler printed, bounded by `task_log_bytes`.

use std::collections::VecDeque;

/// A task's log: the newest lines within `task_log_bytes`, and the offset
/// (in lines since the task began) of the first one kept.
#[derive(Clone, Debug, Default)]
pub struct Logs {
    pub lines: VecDeque<String>,
    pub bytes: usize,
    pub first: u64,
}

impl Logs {
    /// Append lines, dropping the oldest past `cap` bytes; returns how
    /// many were dropped.
    pub fn push(&mut self, lines: &[String], cap: usize) -> u64 {
        for l in lines {
            self.bytes += l.len() + 1;
            self.lines.push_back(l.clone());
        }
        let mut dropped = 0;
        while self.bytes > cap {
            let Some(old) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= old.len() + 1;
            self.first += 1;
            dropped += 1;
        }
        dropped
    }

    /// Lines from offset `since` on, and the offset after the last.
    pub fn since(&self, since: u64) -> (Vec<&str>, u64) {
        let skip = since.saturating_sub(self.first) as usize;
        let lines = self.lines.iter().skip(skip).map(String::as_str).collect();
        (lines, self.first + self.lines.len() as u64)
    }
}
