//! Accessors for the `-o json` output of workerctl that fail with the whole
//! document in the message.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// `v[key]` as a string (panics when missing or not a string).
pub fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("field {key:?} is not a string in {v:#}"))
}

/// `v[key]` as a string, `None` when null or missing.
pub fn opt_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    match v.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => panic!("field {key:?} is neither null nor a string: {other} in {v:#}"),
    }
}

/// `v[key]` as an RFC 3339 timestamp.
pub fn ts_field(v: &Value, key: &str) -> DateTime<Utc> {
    crate::parse_ts(key, str_field(v, key))
}

/// `v[key]` as an array.
pub fn arr<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v.get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("field {key:?} is not an array in {v:#}"))
}

/// `v[key]` as an integer, `None` when null or missing.
pub fn opt_i64(v: &Value, key: &str) -> Option<i64> {
    match v.get(key) {
        None | Some(Value::Null) => None,
        Some(x) => Some(
            x.as_i64()
                .unwrap_or_else(|| panic!("field {key:?} is not an integer in {v:#}")),
        ),
    }
}

/// The whole value as an array (list commands print arrays).
pub fn as_array(v: &Value) -> &Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a JSON array, got {v:#}"))
}

/// The attempts of a run.
pub fn attempts(run: &Value) -> &Vec<Value> {
    arr(run, "attempts")
}

/// Ids of the runs in a JSON array of runs.
pub fn ids(runs: &Value) -> Vec<String> {
    as_array(runs).iter().map(|r| str_field(r, "id").to_string()).collect()
}

/// The `name` of each object of a JSON array (rules, channels, jobs).
pub fn names(items: &Value) -> Vec<String> {
    as_array(items)
        .iter()
        .map(|r| str_field(r, "name").to_string())
        .collect()
}
