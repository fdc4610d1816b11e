//! `[lifecycle]`: a fixed relationship duration, its reminders, auto-extend.

use super::*;

/// `[lifecycle]`: an optional fixed duration for active relationships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// Days an accepted relationship lasts; `None` (the default) for ever.
    pub relationship_days: Option<u32>,
    /// Days before the end at which the partner is reminded.
    pub reminder_days: Vec<u32>,
    /// At the end, start a new period instead of ending the relationship.
    pub auto_extend: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLifecycle {
    relationship_days: Option<u32>,
    #[serde(default = "default_reminders")]
    reminder_days: Vec<u32>,
    #[serde(default)]
    auto_extend: bool,
}

impl Default for RawLifecycle {
    fn default() -> Self {
        RawLifecycle {
            relationship_days: None,
            reminder_days: default_reminders(),
            auto_extend: false,
        }
    }
}

fn default_reminders() -> Vec<u32> {
    vec![30, 7, 1]
}

impl RawLifecycle {
    /// Checks `[lifecycle]`; reminders come out latest-first, without repeats.
    pub(super) fn validate(self) -> Result<LifecycleConfig> {
        let l = self;
        if l.relationship_days == Some(0) {
            return Err(invalid(
                "lifecycle.relationship_days",
                "must be at least 1, or left out for relationships without an end",
            ));
        }
        if let (Some(days), Some(&r)) = (l.relationship_days, l.reminder_days.iter().max()) {
            if r >= days {
                return Err(invalid(
                    "lifecycle.reminder_days",
                    format!("a reminder {r} days before the end of a {days}-day relationship would come at its start"),
                ));
            }
        }
        if l.reminder_days.contains(&0) {
            return Err(invalid(
                "lifecycle.reminder_days",
                "days must be at least 1",
            ));
        }
        let mut reminder_days = l.reminder_days;
        reminder_days.sort_unstable_by(|a, b| b.cmp(a));
        reminder_days.dedup();
        Ok(LifecycleConfig {
            relationship_days: l.relationship_days,
            reminder_days,
            auto_extend: l.auto_extend,
        })
    }
}
