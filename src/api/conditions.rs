//! metav1.Condition helpers shared by the three status types.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition status values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    Unknown,
}

impl ConditionStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            Self::True
        } else {
            Self::False
        }
    }
}

/// A new condition; `lastTransitionTime` is "now" until [`set_condition`] keeps an older one.
pub fn condition(
    type_: &str,
    status: impl Into<ConditionStatus>,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status.into().as_str().to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(jiff::Timestamp::now()),
    }
}

/// Puts `new` into `conditions`, keeping the previous `lastTransitionTime` when the status did
/// not change, so that a steady object never flaps its status.
pub fn set_condition(conditions: &mut Vec<Condition>, previous: &[Condition], mut new: Condition) {
    if let Some(old) = previous.iter().find(|c| c.type_ == new.type_) {
        if old.status == new.status {
            new.last_transition_time = old.last_transition_time.clone();
        }
    }
    conditions.retain(|c| c.type_ != new.type_);
    conditions.push(new);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_transition_time_when_status_is_unchanged() {
        let mut old = condition("Ready", true, "A", "a", Some(1));
        old.last_transition_time = Time("2024-01-01T00:00:00Z".parse().unwrap());
        let mut out = vec![];
        set_condition(&mut out, &[old.clone()], condition("Ready", true, "B", "b", Some(2)));
        assert_eq!(out[0].last_transition_time, old.last_transition_time);
        assert_eq!(out[0].reason, "B");
    }

    #[test]
    fn moves_transition_time_when_status_changes() {
        let mut old = condition("Ready", true, "A", "a", Some(1));
        old.last_transition_time = Time("2024-01-01T00:00:00Z".parse().unwrap());
        let mut out = vec![];
        set_condition(&mut out, &[old.clone()], condition("Ready", false, "B", "b", Some(2)));
        assert_ne!(out[0].last_transition_time, old.last_transition_time);
        assert_eq!(out[0].status, "False");
    }
}
