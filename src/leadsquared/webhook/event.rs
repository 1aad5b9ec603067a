//! LeadSquared's webhook event codes, and which shape of `WebhookProperties` each takes.

use serde::{Serialize, Serializer};

/// What triggers a webhook: LeadSquared's 18 event codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WebhookEvent {
    /// 1: landing page submission (needs `LandingPageUrls`).
    LandingPageSubmission,
    /// 2: lead activity create.
    LeadActivityCreate,
    /// 3: lead create.
    LeadCreate,
    /// 4: lead owner change.
    LeadOwnerChange,
    /// 5: lead stage change.
    LeadStageChange,
    /// 6: lead update.
    LeadUpdate,
    /// 7: task create.
    TaskCreate,
    /// 8: task reminder.
    TaskReminder,
    /// 9: lead score change.
    LeadScoreChange,
    /// 15: lead activity update.
    LeadActivityUpdate,
    /// 16: tasks complete.
    TaskComplete,
    /// 17: task update.
    TaskUpdate,
    /// 26: lead field update.
    LeadFieldUpdate,
    /// 31: opportunity create.
    OpportunityCreate,
    /// 32: opportunity update.
    OpportunityUpdate,
    /// 33: opportunity field update.
    OpportunityFieldUpdate,
    /// 34: opportunity stage update.
    OpportunityStageUpdate,
    /// 35: opportunity delete.
    OpportunityDelete,
}

/// Which shape of `WebhookProperties` an event takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventFamily {
    /// Activity events (2, 15): `{"ActivityEvent":"247","ActivityData":"[]","WebPageNames":"[]"}`.
    Activity,
    /// Opportunity events (31-35): `{"OpportunityEvents":["12002"],"IsAsyncEnable":true,...}`.
    Opportunity,
    /// Every other event: no properties.
    Plain,
}

impl WebhookEvent {
    /// Every event, in code order.
    pub const ALL: [WebhookEvent; 18] = [
        WebhookEvent::LandingPageSubmission,
        WebhookEvent::LeadActivityCreate,
        WebhookEvent::LeadCreate,
        WebhookEvent::LeadOwnerChange,
        WebhookEvent::LeadStageChange,
        WebhookEvent::LeadUpdate,
        WebhookEvent::TaskCreate,
        WebhookEvent::TaskReminder,
        WebhookEvent::LeadScoreChange,
        WebhookEvent::LeadActivityUpdate,
        WebhookEvent::TaskComplete,
        WebhookEvent::TaskUpdate,
        WebhookEvent::LeadFieldUpdate,
        WebhookEvent::OpportunityCreate,
        WebhookEvent::OpportunityUpdate,
        WebhookEvent::OpportunityFieldUpdate,
        WebhookEvent::OpportunityStageUpdate,
        WebhookEvent::OpportunityDelete,
    ];

    /// LeadSquared's numeric code.
    pub fn code(self) -> u32 {
        match self {
            WebhookEvent::LandingPageSubmission => 1,
            WebhookEvent::LeadActivityCreate => 2,
            WebhookEvent::LeadCreate => 3,
            WebhookEvent::LeadOwnerChange => 4,
            WebhookEvent::LeadStageChange => 5,
            WebhookEvent::LeadUpdate => 6,
            WebhookEvent::TaskCreate => 7,
            WebhookEvent::TaskReminder => 8,
            WebhookEvent::LeadScoreChange => 9,
            WebhookEvent::LeadActivityUpdate => 15,
            WebhookEvent::TaskComplete => 16,
            WebhookEvent::TaskUpdate => 17,
            WebhookEvent::LeadFieldUpdate => 26,
            WebhookEvent::OpportunityCreate => 31,
            WebhookEvent::OpportunityUpdate => 32,
            WebhookEvent::OpportunityFieldUpdate => 33,
            WebhookEvent::OpportunityStageUpdate => 34,
            WebhookEvent::OpportunityDelete => 35,
        }
    }

    /// The event with this code.
    pub fn from_code(code: u32) -> Option<WebhookEvent> {
        Self::ALL.into_iter().find(|e| e.code() == code)
    }

    /// The documented name, e.g. "lead create".
    pub fn label(self) -> &'static str {
        match self {
            WebhookEvent::LandingPageSubmission => "landing page submission",
            WebhookEvent::LeadActivityCreate => "lead activity create",
            WebhookEvent::LeadCreate => "lead create",
            WebhookEvent::LeadOwnerChange => "lead owner change",
            WebhookEvent::LeadStageChange => "lead stage change",
            WebhookEvent::LeadUpdate => "lead update",
            WebhookEvent::TaskCreate => "task create",
            WebhookEvent::TaskReminder => "task reminder",
            WebhookEvent::LeadScoreChange => "lead score change",
            WebhookEvent::LeadActivityUpdate => "lead activity update",
            WebhookEvent::TaskComplete => "tasks complete",
            WebhookEvent::TaskUpdate => "task update",
            WebhookEvent::LeadFieldUpdate => "lead field update",
            WebhookEvent::OpportunityCreate => "opportunity create",
            WebhookEvent::OpportunityUpdate => "opportunity update",
            WebhookEvent::OpportunityFieldUpdate => "opportunity field update",
            WebhookEvent::OpportunityStageUpdate => "opportunity stage update",
            WebhookEvent::OpportunityDelete => "opportunity delete",
        }
    }

    /// Which `WebhookProperties` shape this event takes.
    pub fn family(self) -> EventFamily {
        match self.code() {
            2 | 15 => EventFamily::Activity,
            31..=35 => EventFamily::Opportunity,
            _ => EventFamily::Plain,
        }
    }
}

impl std::fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.code(), self.label())
    }
}

impl Serialize for WebhookEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.code().to_string())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::leadsquared::webhook::ContentType;
    use crate::leadsquared::webhook::fixtures::{errors, seed_body};

    #[test]
    fn all_event_codes_and_content_types_are_known() {
        let codes: Vec<u32> = WebhookEvent::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(
            codes,
            [
                1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 26, 31, 32, 33, 34, 35
            ]
        );
        for e in WebhookEvent::ALL {
            assert_eq!(WebhookEvent::from_code(e.code()), Some(e));
        }
        for c in ContentType::ALL {
            let mut body = seed_body();
            body["ContentType"] = json!(c.as_str());
            assert_eq!(errors(body), Vec::<String>::new());
        }
    }
}
