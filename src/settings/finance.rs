//! `[month_end]` (the month-end snapshots finance reports from) and `[retention]` (how long
//! history nobody returns any more is kept), and their validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validation::validate_cron;
use super::{SettingsError, optional_duration, zone_name};

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MonthEndSettings {
    /// Run the job `month_end_snapshot` (it also applies `[retention]`).
    pub enabled: bool,
    /// When it runs; read in `daemon.timezone`, like every schedule.
    pub schedule: String,
    /// The zone whose calendar months are frozen: a month ends at midnight at the start of the
    /// next month there.
    #[serde(with = "zone_name")]
    pub timezone: chrono_tz::Tz,
}

impl MonthEndSettings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        validate_cron("month_end.schedule", &self.schedule)
    }
}

/// How long history of rows a partner no longer returns is kept; `None` = for ever. Applied by
/// each run of `month_end_snapshot`, after it has frozen the closed months.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RetentionSettings {
    /// Versions (`mirror.*_versions`) of rows tombstoned longer ago than this are deleted; the
    /// tombstoned row itself stays. Live rows keep their whole history.
    #[serde(with = "optional_duration")]
    pub tombstoned_versions: Option<Duration>,
    /// Raw consumption rows recorded longer ago than this are deleted.
    #[serde(with = "optional_duration")]
    pub raw_consumption: Option<Duration>,
}

impl RetentionSettings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        for (key, value) in [
            ("retention.tombstoned_versions", self.tombstoned_versions),
            ("retention.raw_consumption", self.raw_consumption),
        ] {
            if value.is_some_and(|keep| keep.is_zero()) {
                return Err(SettingsError::invalid(
                    key,
                    "must be longer than 0s, or empty to keep for ever",
                ));
            }
        }
        Ok(())
    }
}
