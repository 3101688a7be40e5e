//! Twilio's official OpenAPI document for Messages (an excerpt of twilio/twilio-oai
//! `spec/json/twilio_api_v2010.json`, MIT), bundled so tests check our wire format against
//! it rather than against our own assumptions.

pub fn spec() -> serde_json::Value {
    let raw = include_str!("../../spec/twilio/messages-openapi.json");
    serde_json::from_str(raw).expect("the bundled spec is valid JSON")
}

/// Resolves a local `$ref` such as `#/components/schemas/message_enum_status`.
pub fn resolve<'a>(
    spec: &'a serde_json::Value,
    schema: &'a serde_json::Value,
) -> &'a serde_json::Value {
    match schema.get("$ref").and_then(|r| r.as_str()) {
        Some(r) => {
            let pointer = r.trim_start_matches('#');
            spec.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {r}"))
        }
        None => schema,
    }
}
