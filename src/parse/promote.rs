//! Collects the promoted fields of one structured line while it is read, so that the json and
//! logfmt parsers never put a field into the attributes only to take it out again. When a line
//! carries two names for one field (`ts` and `time`), the better-ranked name wins and the other
//! stays in the attributes.

use jiff::Timestamp;

use super::fields::{FieldNames, Role};
use crate::record::{Attributes, Level, Record, SpanId, TraceId, Value};

/// The promoted fields found so far, each with the rank of the name it was found under.
#[derive(Debug, Default)]
pub(super) struct Promoted {
    time: Option<(u8, Timestamp)>,
    level: Option<(u8, Level)>,
    message: Option<(u8, String)>,
    trace_id: Option<(u8, TraceId)>,
    span_id: Option<(u8, SpanId)>,
    traceparent: Option<(u8, (TraceId, SpanId))>,
}

/// Keeps the better-ranked of the current and the offered value; returns the other one.
fn offer<T>(slot: &mut Option<(u8, T)>, rank: u8, value: T) -> Option<(u8, T)> {
    match slot {
        Some((current, _)) if *current <= rank => Some((rank, value)),
        _ => slot.replace((rank, value)),
    }
}

impl Promoted {
    pub fn time(&mut self, rank: u8, value: Timestamp, names: &FieldNames, attributes: &mut Attributes) {
        if let Some((rank, lost)) = offer(&mut self.time, rank, value) {
            let text = format!("{lost:.9}");
            attributes.insert(names.name(Role::Time, rank), Value::from(text));
        }
    }

    pub fn level(&mut self, rank: u8, value: Level, names: &FieldNames, attributes: &mut Attributes) {
        if let Some((rank, lost)) = offer(&mut self.level, rank, value) {
            attributes.insert(names.name(Role::Level, rank), Value::from(lost.as_str()));
        }
    }

    pub fn message(&mut self, rank: u8, value: String, names: &FieldNames, attributes: &mut Attributes) {
        if let Some((rank, lost)) = offer(&mut self.message, rank, value) {
            attributes.insert(names.name(Role::Message, rank), Value::from(lost));
        }
    }

    pub fn trace_id(&mut self, rank: u8, value: TraceId, names: &FieldNames, attributes: &mut Attributes) {
        if let Some((rank, lost)) = offer(&mut self.trace_id, rank, value) {
            attributes.insert(names.name(Role::TraceId, rank), Value::from(lost.to_string()));
        }
    }

    pub fn span_id(&mut self, rank: u8, value: SpanId, names: &FieldNames, attributes: &mut Attributes) {
        if let Some((rank, lost)) = offer(&mut self.span_id, rank, value) {
            attributes.insert(names.name(Role::SpanId, rank), Value::from(lost.to_string()));
        }
    }

    pub fn traceparent(&mut self, rank: u8, value: (TraceId, SpanId), names: &FieldNames, attributes: &mut Attributes) {
        if let Some((rank, (trace, span))) = offer(&mut self.traceparent, rank, value) {
            let text = format!("00-{trace}-{span}-01");
            attributes.insert(names.name(Role::TraceParent, rank), Value::from(text));
        }
    }

    pub fn has_level(&self) -> bool {
        self.level.is_some()
    }

    pub fn has_trace_id(&self) -> bool {
        self.trace_id.is_some() || self.traceparent.is_some()
    }

    pub fn has_span_id(&self) -> bool {
        self.span_id.is_some() || self.traceparent.is_some()
    }

    /// Moves what was found into the record; a `traceparent` fills in missing ids.
    pub fn apply(self, record: &mut Record) {
        if let Some((_, ts)) = self.time {
            record.timestamp = ts;
        }
        if let Some((_, level)) = self.level {
            record.level = Some(level);
        }
        if let Some((_, message)) = self.message {
            record.message = message;
        }
        let (parent_trace, parent_span) = self.traceparent.map(|(_, (t, s))| (t, s)).unzip();
        record.trace_id = self.trace_id.map(|(_, id)| id).or(parent_trace);
        record.span_id = self.span_id.map(|(_, id)| id).or(parent_span);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_better_name_wins_and_the_other_stays_an_attribute() {
        let names = FieldNames::default();
        let mut attributes = Attributes::new();
        let mut promoted = Promoted::default();
        promoted.message(1, "from msg".into(), &names, &mut attributes);
        promoted.message(0, "from message".into(), &names, &mut attributes);
        promoted.message(2, "from log".into(), &names, &mut attributes);
        assert_eq!(attributes.get("msg"), Some(&Value::from("from msg")));
        assert_eq!(attributes.get("log"), Some(&Value::from("from log")));
        let mut record = Record::new(String::new(), Timestamp::UNIX_EPOCH, std::sync::Arc::new(Vec::new()));
        promoted.apply(&mut record);
        assert_eq!(record.message, "from message");
    }
}
